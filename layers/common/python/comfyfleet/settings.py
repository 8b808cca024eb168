"""Every knob of a deployment, in one pydantic-settings model read once at start-up.

Each field is set from the environment variable ``COMFYFLEET_<FIELD>``; nested values use
``__`` (``COMFYFLEET_TIERS__PRO__REQUESTS_PER_MINUTE=600``). Lists accept JSON or a comma
separated string. A bad value raises :class:`SettingsError` naming the variable, so a
process fails at start-up rather than on its first request.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "COMFYFLEET_"
ENV_NESTED_DELIMITER = "__"

MiB = 1024 * 1024
GiB = 1024 * MiB

# Ring slots per unit of tier weight: weights 1 : 1.5 : 2 give free 2, pro 3, enterprise 4
# messages in the SQS ring at once (DESIGN §5).
RING_SLOTS_PER_WEIGHT = 2


class SettingsError(ValueError):
    """A setting has a bad value; the message names the environment variable."""


class Tier(BaseModel):
    """Limits of one account tier."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    requests_per_minute: int = Field(gt=0, description="Submits allowed per fixed minute.")
    concurrency: int = Field(gt=0, description="Jobs of one account running at once.")
    queue_depth: int = Field(gt=0, description="Jobs of one account waiting at once.")
    weight: float = Field(gt=0, le=50, description="Share of free GPUs under contention.")
    job_timeout_seconds: int = Field(
        1800, gt=0, le=86400, description="A job running longer is interrupted and fails."
    )

    @property
    def ring_slots(self) -> int:
        """Messages this tier may hold in the SQS ring at once (its weighted turn)."""
        return max(1, round(RING_SLOTS_PER_WEIGHT * self.weight))


# As cmfy.cloud publishes its tiers.
DEFAULT_TIERS: dict[str, dict[str, Any]] = {
    "free": {
        "requests_per_minute": 60,
        "concurrency": 2,
        "queue_depth": 100,
        "weight": 1.0,
        "job_timeout_seconds": 600,
    },
    "pro": {
        "requests_per_minute": 300,
        "concurrency": 10,
        "queue_depth": 100,
        "weight": 1.5,
        "job_timeout_seconds": 1800,
    },
    "enterprise": {
        "requests_per_minute": 1000,
        "concurrency": 50,
        "queue_depth": 100,
        "weight": 2.0,
        "job_timeout_seconds": 3600,
    },
}

# Nodes that write model files into the node's folders: gigabytes of disk per job, and a
# file the next tenant on that node would see. Operators may extend the list.
DEFAULT_DENIED_CLASS_TYPES = [
    "CheckpointSave",
    "ImageOnlyCheckpointSave",
    "ModelSave",
    "CLIPSave",
    "VAESave",
    "LoraSave",
]

# Routing's guess of a model's size when the models table does not know it yet.
DEFAULT_MODEL_SIZES: dict[str, int] = {
    "checkpoints": 4 * GiB,
    "diffusion_models": 12 * GiB,
    "text_encoders": 5 * GiB,
    "loras": 200 * MiB,
    "vae": 330 * MiB,
    "controlnet": 1400 * MiB,
    "upscale_models": 70 * MiB,
    "clip_vision": 1700 * MiB,
    "embeddings": 1 * MiB,
    "input": 4 * MiB,
    "other": 2 * GiB,
}

# Webhook retries after the first attempt, as Standard Webhooks schedules them (jittered in
# comfyfleet.delivery). A step waits in its message's visibility, 12 h at most (SQS's cap);
# all of them, +20 % jitter included, must end within the queue's 4-day retention.
DEFAULT_WEBHOOK_RETRY_SCHEDULE = [5, 300, 1800, 7200, 18000, 36000, 36000]
MAX_RETRY_STEP_SECONDS = 12 * 3600
MAX_RETRY_SCHEDULE_SECONDS = 72 * 3600

_PREFIX_PATTERN = r"^[a-z][a-z0-9-]{1,30}[a-z0-9]$"
_HOST_PATTERN = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$"
)


def _split_list(value: Any) -> Any:
    """Accept a JSON array or a comma separated string for a list setting."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return _json(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at character {exc.pos})") from None


class Settings(BaseSettings):
    """The deployment's settings; see docs/settings.md for each knob."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        frozen=True,
        extra="ignore",
    )

    prefix: str = Field(
        "comfyfleet",
        pattern=_PREFIX_PATTERN,
        description="Prefix of every AWS resource name (tables, queues, buckets, topic).",
    )
    tiers: Annotated[dict[str, Tier], NoDecode] = Field(
        default_factory=lambda: {name: Tier(**values) for name, values in DEFAULT_TIERS.items()},
        description="Limits per account tier; values given are merged onto the defaults.",
    )
    default_tier: str = Field("free", description="Tier of an account created without one.")
    history_retention_days: int = Field(
        30, ge=1, le=3650, description="Days a finished job stays readable before its TTL."
    )
    max_workflow_bytes: int = Field(
        1 * MiB, ge=1024, le=6 * MiB, description="Largest accepted workflow, in JSON bytes."
    )
    max_workflow_nodes: int = Field(500, ge=1, le=10_000, description="Most nodes in a workflow.")
    model_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["huggingface.co", "civitai.com"],
        description="Hosts (and their subdomains) that model and image URLs may name.",
    )
    console_media_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["https://*.amazonaws.com", "https://*.cloudfront.net"],
        description="Where the console may show images, video and sound from (its CSP): "
        "the outputs' S3 links and CDN; add a custom CDN domain here.",
    )
    model_bucket: str = Field(
        "",
        description="The deployment's S3 model mirror; s3:// URLs in it are allowed. "
        "Empty means '<prefix>-models'.",
    )
    output_bucket: str = Field(
        "", description="Bucket of job outputs and previews. Empty means '<prefix>-outputs'."
    )
    max_attempts: int = Field(
        3, ge=1, le=20, description="Runs of one job (infrastructure failures) before it fails."
    )
    lease_seconds: int = Field(
        30,
        ge=1,
        le=3600,
        description="A running job's lease; its agent renews it while alive. A killed "
        "agent's job runs elsewhere about this long after (docs/upkeep.md, recovery time).",
    )
    routing_policy: Literal["cost", "coverage", "least_loaded", "random"] = Field(
        "cost", description="How a job's queue is chosen (DESIGN §6)."
    )
    route_margin_seconds: float = Field(
        5.0, ge=0, description="How much sooner a node must start a job than the shared queue."
    )
    default_run_seconds: float = Field(
        20.0, gt=0, description="A node's run time per job until it has measured its own."
    )
    default_bandwidth_bytes: int = Field(
        200 * MiB, gt=0, description="Model download speed (bytes/s) assumed for a new node."
    )
    node_stale_seconds: int = Field(
        30, ge=5, description="A node silent this long is not routed to (and later reaped)."
    )
    denied_class_types: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_DENIED_CLASS_TYPES),
        description="ComfyUI node classes no workflow may use.",
    )
    default_model_sizes: Annotated[dict[str, int], NoDecode] = Field(
        default_factory=lambda: dict(DEFAULT_MODEL_SIZES),
        description="Bytes routing assumes for a model of unknown size, by folder.",
    )
    allow_local_urls: bool = Field(
        False,
        description="Development only: let model, image and webhook URLs name loopback "
        "http servers. Never set in a deployment.",
    )
    shared_queue_url: str = Field(
        "",
        max_length=2048,
        description="URL of the shared ring queue; empty: looked up by its name on first use.",
    )
    public_base_url: str = Field(
        "",
        max_length=2048,
        pattern=r"^(https?://[^\s/?#]+(/[^\s?#]*)?)?$",
        description="The API's base URL as clients see it, for links in responses; empty: "
        "the request's own host (and stage).",
    )
    events_topic_arn: str = Field(
        "",
        max_length=256,
        description="ARN of the job-events SNS topic; empty: looked up by its name on first use.",
    )
    webhook_secret_grace_seconds: int = Field(
        86400,
        ge=0,
        le=30 * 86400,
        description="After a webhook secret rotation, how long the old secret still signs "
        "(beside the new one).",
    )
    webhook_retry_schedule: Annotated[
        list[Annotated[int, Field(gt=0, le=MAX_RETRY_STEP_SECONDS)]], NoDecode
    ] = Field(
        default_factory=lambda: list(DEFAULT_WEBHOOK_RETRY_SCHEDULE),
        min_length=1,
        description="Seconds before each retry of a failed webhook delivery (jittered by "
        "±20 %); the event fails once the schedule is spent: attempts = its length + 1.",
    )
    ring_resend_after_seconds: int = Field(
        30,
        ge=5,
        le=180,
        description="A job this long in the ring without a claim gets its message sent again "
        "by the reaper, while SQS still drops the copy if the first send worked.",
    )
    drain_grace_seconds: int = Field(
        120,
        ge=0,
        le=840,
        description="How long a draining node's running job may finish: the agent's grace "
        "after SIGTERM or a spot notice, and the lifecycle function's wait on a termination.",
    )

    @field_validator("tiers", mode="before")
    @classmethod
    def _merge_tiers(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = _json(value)
        if not isinstance(value, dict):
            return value
        merged: dict[str, Any] = {name: dict(limits) for name, limits in DEFAULT_TIERS.items()}
        for name, limits in value.items():
            if isinstance(limits, Tier):
                limits = limits.model_dump()
            if isinstance(limits, dict) and isinstance(merged.get(name), dict):
                merged[name] = {**merged[name], **limits}
            else:
                merged[name] = limits
        return merged

    @field_validator("default_model_sizes", mode="before")
    @classmethod
    def _merge_sizes(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = _json(value)
        if isinstance(value, dict):
            return {**DEFAULT_MODEL_SIZES, **value}
        return value

    @field_validator(
        "model_hosts", "denied_class_types", "console_media_origins", "webhook_retry_schedule",
        mode="before",
    )  # fmt: skip
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _retry_schedule_total(cls, schedule: list[int]) -> list[int]:
        if sum(schedule) > MAX_RETRY_SCHEDULE_SECONDS:
            raise ValueError(
                f"the retries add up to {sum(schedule)} s, more than {MAX_RETRY_SCHEDULE_SECONDS}"
                " s: with jitter the last would come after SQS dropped the event"
            )
        return schedule

    @field_validator("model_hosts")
    @classmethod
    def _hosts(cls, hosts: list[str]) -> list[str]:
        normalised = [host.strip().lower().rstrip(".") for host in hosts]
        for host in normalised:
            if not _HOST_PATTERN.match(host):
                raise ValueError(f"{host!r} is not a DNS host name")
        return normalised

    @field_validator("default_model_sizes")
    @classmethod
    def _sizes(cls, sizes: dict[str, int]) -> dict[str, int]:
        for folder, size in sizes.items():
            if size <= 0:
                raise ValueError(f"size of {folder!r} must be positive")
        return sizes

    @field_validator("default_tier")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.strip().lower()

    @model_validator(mode="after")
    def _default_tier_exists(self) -> Settings:
        if self.default_tier not in self.tiers:
            raise ValueError(
                f"{ENV_PREFIX}DEFAULT_TIER={self.default_tier!r} is not one of the tiers "
                f"({', '.join(sorted(self.tiers))})"
            )
        return self

    @property
    def webhook_attempts(self) -> int:
        """Deliveries of one webhook event at most: the first, then one per retry."""
        return len(self.webhook_retry_schedule) + 1

    @property
    def model_bucket_name(self) -> str:
        """The S3 model mirror's bucket name."""
        return self.model_bucket or f"{self.prefix}-models"

    @property
    def output_bucket_name(self) -> str:
        return self.output_bucket or f"{self.prefix}-outputs"

    def tier(self, name: str) -> Tier:
        """Limits of the named tier; an unknown name falls back to the default tier."""
        return self.tiers.get(name) or self.tiers[self.default_tier]

    def model_size_guess(self, folder: str) -> int:
        """Bytes to assume for a model of unknown size in ``folder``."""
        return self.default_model_sizes.get(folder) or self.default_model_sizes["other"]


def env_var_name(loc: tuple[int | str, ...]) -> str:
    """The environment variable that sets the value at a validation error's location."""
    parts = [str(part).upper() for part in loc if isinstance(part, str)]
    if not parts:
        return ENV_PREFIX.rstrip("_")
    return ENV_PREFIX + ENV_NESTED_DELIMITER.join(parts)


SettingsModel = TypeVar("SettingsModel", bound=Settings)


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment (``overrides`` win); raise SettingsError if bad."""
    return read_settings(Settings, **overrides)


def read_settings(model: type[SettingsModel], **overrides: Any) -> SettingsModel:
    """Read a settings model (Settings or one extending it) like :func:`load_settings`."""
    try:
        return model(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = env_var_name(error["loc"]) if error["loc"] else "settings"
            problems.append(f"{where}: {error['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None


@cache
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return load_settings()
