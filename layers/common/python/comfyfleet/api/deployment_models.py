"""Request and response bodies of the deployment routes (docs/deployments.md)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from comfyfleet.api.models import MAX_METADATA_BYTES, DeploymentRef, Graph, JobAccepted, Manifest
from comfyfleet.deployments.spec import (
    INPUT_NAME_PATTERN,
    MAX_DESCRIPTION_LENGTH,
    MAX_ENUM_VALUES,
    MAX_INPUTS,
    NAME_PATTERN,
    InputType,
)

DeploymentName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
InputName = Annotated[str, StringConstraints(pattern=INPUT_NAME_PATTERN)]
Number = int | float


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputDeclaration(_Strict):
    node: Annotated[str, StringConstraints(min_length=1, max_length=64)] | int = Field(
        description="The id of the node whose input this is (as in the workflow)."
    )
    input: str = Field(min_length=1, max_length=200, description="The input's name on the node.")
    type: InputType = Field(description="image and model take a URL, as the loaders do.")
    default: Any = Field(
        None, description="Used when a run leaves it out; without one, the input is required."
    )
    minimum: Number | None = Field(None, description="integer and number inputs.")
    maximum: Number | None = Field(None, description="integer and number inputs.")
    enum: list[Any] | None = Field(None, min_length=1, max_length=MAX_ENUM_VALUES)
    description: str | None = Field(None, max_length=MAX_DESCRIPTION_LENGTH)


class DeploymentCreate(_Strict):
    name: DeploymentName = Field(description="[a-z0-9-]{1,64}, unique per account.")
    workflow: Graph = Field(description="The workflow, in ComfyUI's API format.")
    inputs: dict[InputName, InputDeclaration] = Field(
        default_factory=dict, max_length=MAX_INPUTS, description="The inputs a run sets, by name."
    )
    models: Manifest = Field(None, description="Model and input files the workflow needs.")
    description: str = Field("", max_length=MAX_DESCRIPTION_LENGTH)
    output: Any = Field(None, description="Output format: not available yet (a 400 when sent).")


class DeploymentRun(_Strict):
    inputs: dict[str, Any] = Field(default_factory=dict, description="Values by input name.")
    version: int | None = Field(None, ge=1, description="A version; the newest when omitted.")
    webhook_url: str | None = Field(
        None, max_length=2048, description="https URL notified when the job ends."
    )
    metadata: dict[str, Any] | None = Field(
        None, description=f"Yours, returned as given: a JSON object of ≤ {MAX_METADATA_BYTES} B."
    )


class DeploymentInfo(BaseModel):
    name: str
    version: int = Field(description="The newest version (a built-in's is 1).")
    builtin: bool = Field(description="A built-in template: read-only, owned by nobody.")
    description: str
    created_at: str | None = None
    updated_at: str | None = None


class DeploymentList(BaseModel):
    deployments: list[DeploymentInfo] = Field(
        description="The built-ins first (on the first page), then yours by name."
    )
    next_cursor: str | None = Field(None, description="Pass as cursor for the next page.")


class DeploymentView(BaseModel):
    name: str
    version: int
    builtin: bool
    description: str
    created_at: str | None = None
    input_schema: dict[str, Any] = Field(description="JSON Schema of a run's inputs.")
    inputs: dict[str, Any] | None = Field(None, description="The declarations (not built-ins).")
    workflow: dict[str, Any] | None = Field(None, description="The stored workflow.")
    models: list[Any] | None = None


class DeploymentDeleted(BaseModel):
    name: str
    deleted: bool = True
    versions: int = Field(description="How many versions were deleted.")


class DeploymentJobAccepted(JobAccepted):
    deployment: DeploymentRef
    seed: int | None = Field(None, description="Built-ins: the noise seed used.")
