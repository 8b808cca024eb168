"""ComfyUI API-format workflows: validation, model references, rewriting."""

from comfyfleet.workflow.errors import ErrorCode, WorkflowError
from comfyfleet.workflow.refs import LOADER_INPUTS, ModelRef, rewrite_workflow
from comfyfleet.workflow.urls import (
    UrlNotAllowed,
    UrlPolicy,
    model_key,
    normalise_url,
)
from comfyfleet.workflow.validate import ValidationResult, validate_workflow

__all__ = [
    "LOADER_INPUTS",
    "ErrorCode",
    "ModelRef",
    "UrlNotAllowed",
    "UrlPolicy",
    "ValidationResult",
    "WorkflowError",
    "model_key",
    "normalise_url",
    "rewrite_workflow",
    "validate_workflow",
]
