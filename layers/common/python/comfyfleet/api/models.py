"""Request and response bodies of the HTTP API; Powertools builds the OpenAPI document from
these. Shapes follow cmfy.cloud's public API where it has one, so its users can switch by
changing the base URL.

Timestamps are ISO 8601 in UTC with milliseconds (``2026-01-01T12:00:00.000Z``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from comfyfleet.domain import JobState, NodeStatus, Scope

MAX_METADATA_BYTES = 4096
MAX_NAME_LENGTH = 200

_NODE_SCHEMA = {
    "type": "object",
    "required": ["class_type", "inputs"],
    "properties": {
        "class_type": {"type": "string"},
        "inputs": {"type": "object", "additionalProperties": True},
    },
}
_GRAPH_SCHEMA = {
    "type": "object",
    "description": "A workflow in ComfyUI's API format (Workflow → Export (API)): nodes by id.",
    "additionalProperties": _NODE_SCHEMA,
}
_MANIFEST_SCHEMA = {
    "type": "array",
    "description": "Files the workflow needs that its loader inputs do not name by URL.",
    "items": {
        "type": "object",
        "required": ["url", "folder"],
        "properties": {
            "url": {"type": "string"},
            "folder": {"type": "string", "description": "ComfyUI model folder, or input"},
            "filename": {"type": "string"},
            "sha256": {"type": "string"},
            "size": {"type": "integer"},
        },
    },
}

# The workflow and the manifest are checked by comfyfleet.workflow, which reports every
# problem with a stable code (400 invalid_workflow); pydantic only documents their shape.
Graph = Annotated[Any, WithJsonSchema(_GRAPH_SCHEMA)]
Manifest = Annotated[Any, WithJsonSchema(_MANIFEST_SCHEMA)]


def iso(timestamp: float | None) -> str | None:
    """Epoch seconds as the API writes times."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- errors -----------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    code: str = Field(description="Stable, machine-readable reason.")
    message: str
    details: Any = Field(None, description="Structured detail, e.g. each workflow error.")
    request_id: str


class ErrorResponse(BaseModel):
    """The one error shape of every endpoint."""

    error: ErrorBody


# -- jobs ---------------------------------------------------------------------------------------


class JobSubmission(_Strict):
    prompt: Graph = Field(description="The workflow, in ComfyUI's API format.")
    webhook_url: str | None = Field(
        None, max_length=2048, description="https URL notified when the job ends."
    )
    models: Manifest = Field(None, description="Model and input files the workflow needs.")
    metadata: dict[str, Any] | None = Field(
        None, description=f"Yours, returned as given: a JSON object of ≤ {MAX_METADATA_BYTES} B."
    )


class JobLinks(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    self_: str = Field(alias="self")
    cancel: str


class JobAccepted(BaseModel):
    job_id: str
    status: Literal["queued"] = "queued"
    queue_position: int = Field(description="1 = the next of your queued jobs to start.")
    estimated_wait_seconds: int
    created_at: str
    links: JobLinks


class DeploymentRef(BaseModel):
    name: str
    version: int


class TemplateJobAccepted(JobAccepted):
    seed: int = Field(description="The noise seed used (drawn when not given).")


class Progress(BaseModel):
    value: float
    max: float
    node: str | None = None
    percent: float


class OutputFile(BaseModel):
    url: str
    filename: str | None = None
    content_type: str | None = None
    size: int | None = None
    node_id: str | None = None


class Outputs(BaseModel):
    images: list[str] = Field(default_factory=list)
    files: list[OutputFile] = Field(default_factory=list)


class JobError(BaseModel):
    code: str
    message: str
    node_id: str | None = None
    node_type: str | None = None
    details: Any = None


class WebhookStatus(BaseModel):
    url: str
    state: Literal["waiting", "pending", "delivered", "failed"] = Field(
        description="waiting: the job has not ended; pending: being delivered."
    )
    attempts: int = 0


class JobView(BaseModel):
    job_id: str
    account_id: str
    status: JobState
    created_at: str
    started_at: str | None = None
    completed_at: str | None = None
    execution_time_ms: int | None = None
    queue_position: int | None = Field(None, description="While queued.")
    progress: Progress | None = Field(None, description="While running.")
    outputs: Outputs | None = None
    error: JobError | None = None
    attempts: int = 0
    cancel_requested: bool = False
    webhook: WebhookStatus | None = None
    metadata: dict[str, Any] | None = None
    deployment: DeploymentRef | None = Field(None, description="The deployment it ran from.")
    links: JobLinks


class JobList(BaseModel):
    jobs: list[JobView]
    next_cursor: str | None = Field(None, description="Pass as cursor for the next page.")


class PreviewLink(BaseModel):
    url: str | None = Field(description="null (with ?redirect=false) while there is no frame.")
    expires_in_seconds: int


class WebhookReplayed(BaseModel):
    job_id: str
    event_id: str = Field(description="The same id as the first delivery (webhook-id).")
    type: str = Field(description="job.completed, job.failed or job.cancelled")
    state: Literal["pending"] = "pending"


# -- account -------------------------------------------------------------------------------------


class UsageLimits(BaseModel):
    requests_per_minute: int
    concurrency: int
    queue_depth: int


class UsageCounts(BaseModel):
    requests_this_minute: int
    window_resets_at: str
    running: int
    queued: int


class Usage(BaseModel):
    account_id: str
    tier: str
    limits: UsageLimits
    current: UsageCounts


class Me(BaseModel):
    account_id: str
    tier: str
    scopes: list[Scope] = Field(description="What this key may call: jobs, admin.")
    key_id: str


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    time: str


class TemplateInfo(BaseModel):
    name: str
    description: str
    parameters: dict[str, Any] = Field(description="JSON Schema of the template's parameters.")


class TemplateList(BaseModel):
    workflows: list[TemplateInfo]


# -- admin -----------------------------------------------------------------------------------------


class AccountCreate(_Strict):
    tier: str = Field(min_length=1, max_length=64)
    name: str = Field("", max_length=MAX_NAME_LENGTH)


class AccountCreated(BaseModel):
    account_id: str
    tier: str
    name: str
    webhook_secret: str = Field(description="Signs this account's webhooks (Standard Webhooks).")
    created_at: str


class WebhookSecretRotated(BaseModel):
    account_id: str
    webhook_secret: str = Field(description="The new secret; shown in this response only.")
    previous_secret_expires_at: str | None = Field(
        None, description="Until then the old secret signs too (both signatures are sent)."
    )


class KeyCreate(_Strict):
    account_id: str = Field(min_length=1, max_length=64)
    scopes: list[Scope] = Field(min_length=1, max_length=len(Scope))
    name: str = Field("", max_length=MAX_NAME_LENGTH)


class KeyView(BaseModel):
    key_id: str
    account_id: str
    scopes: list[Scope]
    name: str
    created_at: str
    revoked_at: str | None = None


class KeyCreated(KeyView):
    api_key: str = Field(description="The key itself; shown this once and never stored.")


class KeyList(BaseModel):
    keys: list[KeyView]


class NodeView(BaseModel):
    node_id: str
    status: NodeStatus
    heartbeat_at: str | None
    registered_at: str | None
    gpu: str
    current_job: str | None
    queued: int
    cached_models: int
    free_bytes: int
    ewma_run_seconds: float | None
    queue_url: str
    environment_id: str = Field(
        "", description="Its software (node setup's lock; core: ComfyUI's core nodes only)."
    )


class NodeList(BaseModel):
    nodes: list[NodeView]


class NodeDrained(BaseModel):
    node_id: str
    status: NodeStatus
    moved_jobs: int = Field(description="Waiting jobs moved from its queue to the shared one.")


class NodeRemoved(BaseModel):
    node_id: str
    removed: bool = True
    moved_jobs: int


class QueueView(BaseModel):
    name: str
    kind: Literal["shared", "node", "webhooks", "dead_letter"]
    visible: int = Field(description="Messages waiting to be received.")
    in_flight: int = Field(description="Received and not yet deleted (running jobs).")
    delayed: int
    oldest_age_seconds: float | None = Field(
        None, description="Age of the oldest message (CloudWatch); null when unknown."
    )


class QueueList(BaseModel):
    queues: list[QueueView]
