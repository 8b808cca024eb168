"""Domain records → response bodies. Fields written by other processes (the agent's progress
and outputs, the webhooks function's delivery state) are read leniently: a malformed one is
left out rather than turning a GET into a 500."""

from __future__ import annotations

from typing import Any

from comfyfleet.api.models import (
    DeploymentRef,
    JobError,
    JobLinks,
    JobView,
    KeyView,
    NodeView,
    OutputFile,
    Outputs,
    Progress,
    WebhookStatus,
    iso,
)
from comfyfleet.domain import ApiKey, Job, JobState, NodeInfo

_WEBHOOK_STATES = frozenset({"pending", "delivered", "failed"})


def job_links(base_url: str, job_id: str) -> JobLinks:
    return JobLinks(
        self_=f"{base_url}/v1/jobs/{job_id}", cancel=f"{base_url}/v1/jobs/{job_id}/cancel"
    )


def job_view(job: Job, base_url: str, queue_position: int | None = None) -> JobView:
    running = job.state is JobState.RUNNING
    return JobView(
        job_id=job.job_id,
        account_id=job.account_id,
        status=job.state,
        created_at=iso(job.created_at) or "",
        started_at=iso(job.started_at),
        completed_at=iso(job.completed_at),
        execution_time_ms=job.execution_time_ms,
        queue_position=queue_position if job.state is JobState.QUEUED else None,
        progress=_progress(job.progress) if running else None,
        outputs=_outputs(job.outputs),
        error=_error(job.error),
        attempts=job.attempt,
        cancel_requested=job.cancel_requested,
        webhook=_webhook(job),
        metadata=job.metadata,
        deployment=_deployment(job.deployment),
        links=job_links(base_url, job.job_id),
    )


def _deployment(value: Any) -> DeploymentRef | None:
    if not isinstance(value, dict):
        return None
    name, version = value.get("name"), value.get("version")
    if not isinstance(name, str) or not isinstance(version, int):
        return None
    return DeploymentRef(name=name, version=version)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _progress(raw: Any) -> Progress | None:
    if not isinstance(raw, dict):
        return None
    value, maximum = _number(raw.get("value")), _number(raw.get("max"))
    if value is None or maximum is None:
        return None
    percent = _number(raw.get("percent"))
    if percent is None:
        percent = round(100 * value / maximum, 1) if maximum > 0 else 0.0
    return Progress(value=value, max=maximum, node=_text(raw.get("node")), percent=percent)


def _outputs(raw: Any) -> Outputs | None:
    if not isinstance(raw, dict):
        return None
    images = [url for url in raw.get("images") or [] if isinstance(url, str)]
    files = []
    for entry in raw.get("files") or []:
        if isinstance(entry, dict) and isinstance(entry.get("url"), str):
            size = entry.get("size")
            files.append(
                OutputFile(
                    url=entry["url"],
                    filename=_text(entry.get("filename")),
                    content_type=_text(entry.get("content_type")),
                    size=size if isinstance(size, int) and not isinstance(size, bool) else None,
                    node_id=_text(entry.get("node_id")),
                )
            )
    return Outputs(images=images, files=files)


def _error(raw: Any) -> JobError | None:
    if not isinstance(raw, dict):
        return None
    return JobError(
        code=_text(raw.get("code")) or "error",
        message=_text(raw.get("message")) or "",
        node_id=_text(raw.get("node_id")),
        node_type=_text(raw.get("node_type")),
        details=raw.get("details"),
    )


def _webhook(job: Job) -> WebhookStatus | None:
    delivery = job.webhook if isinstance(job.webhook, dict) else {}
    # A job without its own URL shows the delivery to the account's default, once recorded.
    url = job.webhook_url or _text(delivery.get("url"))
    if not url:
        return None
    state = delivery.get("state")
    if state not in _WEBHOOK_STATES:
        state = "pending" if job.state.terminal else "waiting"
    attempts = delivery.get("attempts")
    return WebhookStatus(
        url=url,
        state=state,
        attempts=attempts if isinstance(attempts, int) and not isinstance(attempts, bool) else 0,
    )


def key_view(key: ApiKey) -> KeyView:
    return KeyView(
        key_id=key.key_id,
        account_id=key.account_id,
        scopes=sorted(key.scopes),
        name=key.name,
        created_at=iso(key.created_at) or "",
        revoked_at=iso(key.revoked_at),
    )


def node_view(node: NodeInfo) -> NodeView:
    return NodeView(
        node_id=node.node_id,
        status=node.status,
        heartbeat_at=iso(node.heartbeat_at) if node.heartbeat_at else None,
        registered_at=iso(node.registered_at) if node.registered_at else None,
        gpu=node.gpu,
        current_job=node.current_job,
        queued=node.queued,
        cached_models=len(node.cached),
        free_bytes=node.free_bytes,
        ewma_run_seconds=node.ewma_run_seconds,
        queue_url=node.queue_url,
        environment_id=node.environment_id,
    )
