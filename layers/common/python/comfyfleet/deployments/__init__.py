"""Deployments: saved workflows with named, typed inputs (docs/deployments.md)."""

from comfyfleet.deployments.spec import (
    Deployment,
    DeploymentInput,
    DeploymentSummary,
    InputType,
    input_schema,
    is_deployment_name,
)
from comfyfleet.deployments.targets import declaration_problems
from comfyfleet.deployments.values import place, run_problems

__all__ = [
    "Deployment",
    "DeploymentInput",
    "DeploymentSummary",
    "InputType",
    "declaration_problems",
    "input_schema",
    "is_deployment_name",
    "place",
    "run_problems",
]
