"""The agent's settings: the deployment's, plus where ComfyUI and the cache are.

Same environment prefix (``COMFYFLEET_``); docs/settings.md lists every field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from comfyfleet.settings import GiB, Settings

COMFY_PORT = 8188  # ComfyUI's own default; the GPU with index i has its server on 8188 + i
# Renewals per lease by default: two may fail (a throttled call, a slow one) before it runs out.
LEASE_RENEWALS = 3


class AgentSettings(Settings):
    gpu_index: int | None = Field(
        None,
        ge=0,
        description="The GPU this agent serves on a multi-GPU instance: its node id becomes "
        "<instance id>-gpu<i> and its ComfyUI's default port 8188 + i. Unset: one GPU.",
    )
    comfy_url: str = Field(
        f"http://127.0.0.1:{COMFY_PORT}",
        description="The ComfyUI server this agent drives (default port 8188 + the GPU index).",
    )
    comfy_root: Path = Field(
        Path("/opt/ComfyUI"),
        description="ComfyUI's folder: models are linked into models/<folder>, images into input/.",
    )
    comfy_output_dir: Path | None = Field(
        None, description="ComfyUI's output folder, for clean-up (default <comfy_root>/output)."
    )
    cache_dir: Path = Field(
        Path("/var/cache/comfyfleet"),
        description="The model cache, on a local disk; the agents of one instance may share it.",
    )
    cache_budget_bytes: int = Field(
        64 * GiB, gt=0, description="Bytes the model cache may hold (all its agents together)."
    )
    max_model_bytes: int = Field(64 * GiB, gt=0, description="Largest model file downloaded.")
    node_id: str = Field(
        "", description="This node's id; empty: the EC2 instance id (IMDSv2), else the host name."
    )
    on_ec2: bool = Field(
        True,
        description="Ask EC2's instance metadata (IMDSv2) for the node id and watch it for a "
        "spot interruption notice. Off (the dev stack, tests): no metadata request is made.",
    )
    shared_queue_url: str = Field(
        "", description="The shared queue's URL; empty: looked up by its name."
    )
    receive_wait_seconds: int = Field(
        10, ge=0, le=20, description="Long poll of the shared queue when the node queue is empty."
    )
    heartbeat_seconds: float = Field(
        5.0, gt=0, description="How often the node's record in the registry is renewed."
    )
    lease_renew_seconds: float | None = Field(
        None,
        gt=0,
        description="How often a running job's lease and its message's visibility are "
        "renewed; empty: a third of lease_seconds (two renewals may fail before it is lost).",
    )
    comfy_start_timeout_seconds: int = Field(
        900, gt=0, description="How long to wait for ComfyUI to come up at start."
    )
    cdn_domain: str = Field(
        "", description="CloudFront domain for output links; empty: presigned S3 links."
    )
    output_link_seconds: int = Field(
        7 * 86400, gt=0, le=7 * 86400, description="Life of a presigned output link."
    )
    include_temp_outputs: bool = Field(
        False, description="Also upload PreviewImage's temp files as outputs."
    )
    preview_interval_seconds: float = Field(
        2.0, gt=0, description="At most one preview upload per this many seconds."
    )
    progress_interval_seconds: float = Field(
        1.0, gt=0, description="At most one progress write per this many seconds."
    )
    metrics_enabled: bool = Field(
        True, description="Send the agent's metrics to CloudWatch (PutMetricData, batched)."
    )
    metrics_flush_seconds: float = Field(
        60.0, gt=0, description="How often the batched metrics are sent."
    )
    node_group_name: str = Field(
        "",
        description="The Auto Scaling group of this instance (set by the stack). Set: the "
        "agent registers only once the instance is InService (never while a warm-pool "
        "instance boots to be stopped), protects the instance from scale-in while it runs "
        "a job, and the bootstrap completes the launch hook. Empty (dev, tests): none of it.",
    )
    launch_hook_name: str = Field(
        "", description="The group's launch lifecycle hook, completed when a boot is done."
    )
    busy_dir: Path = Field(
        Path("/var/lib/comfyfleet/busy"),
        description="Where the agents of one instance mark that they run a job: scale-in "
        "protection holds while any of them does.",
    )

    @model_validator(mode="before")
    @classmethod
    def _per_gpu_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("gpu_index") == "":
            data["gpu_index"] = None  # a unit file's empty variable: one GPU
        index = str(data.get("gpu_index")).strip()  # a bad one: the field's check reports it
        if data.get("comfy_url") is None and index.isdigit():
            # Each GPU's ComfyUI listens on its own port, unless the URL is given.
            data["comfy_url"] = f"http://127.0.0.1:{COMFY_PORT + int(index)}"
        return data

    @model_validator(mode="after")
    def _renewal_within_lease(self) -> AgentSettings:
        if self.lease_renew_seconds is not None and self.lease_renew_seconds >= self.lease_seconds:
            raise ValueError(
                f"COMFYFLEET_LEASE_RENEW_SECONDS={self.lease_renew_seconds:g} must be shorter "
                f"than COMFYFLEET_LEASE_SECONDS={self.lease_seconds}: the lease would run out "
                "between renewals"
            )
        return self

    @property
    def lease_renewal_seconds(self) -> float:
        """Seconds between two renewals of a running job's lease."""
        if self.lease_renew_seconds is not None:
            return self.lease_renew_seconds
        return self.lease_seconds / LEASE_RENEWALS

    @property
    def output_dir(self) -> Path:
        return self.comfy_output_dir or self.comfy_root / "output"
