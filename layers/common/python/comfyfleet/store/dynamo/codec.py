"""DynamoDB attribute values for the domain's records (low-level client format).

Nested payloads (models, outputs, errors, progress, metadata) are stored as compact JSON
text and the workflow as zlib-compressed JSON: a 1 MiB workflow shrinks well under
DynamoDB's 400 KB item limit, and nothing reads these fields inside DynamoDB.
"""

from __future__ import annotations

import json
import math
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from comfyfleet.domain import Job, JobState
from comfyfleet.errors import StorageError
from comfyfleet.ids import ulid_time

Item = dict[str, dict[str, Any]]


def s(value: str) -> dict[str, Any]:
    return {"S": value}


def n(value: float | int) -> dict[str, Any]:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("DynamoDB numbers are finite")
    return {"N": str(value) if isinstance(value, int) else repr(value)}


def flag(value: bool) -> dict[str, Any]:
    return {"BOOL": value}


def as_json(value: Any) -> dict[str, Any]:
    return {"S": json.dumps(value, separators=(",", ":"))}


def get_s(item: Item, name: str) -> str | None:
    value = item.get(name)
    return value["S"] if value and "S" in value else None


def get_n(item: Item, name: str) -> float | None:
    value = item.get(name)
    return float(value["N"]) if value and "N" in value else None


def get_int(item: Item, name: str, default: int = 0) -> int:
    value = item.get(name)
    return int(value["N"]) if value and "N" in value else default


def get_bool(item: Item, name: str) -> bool:
    value = item.get(name)
    return bool(value and value.get("BOOL"))


def get_json(item: Item, name: str) -> Any:
    text = get_s(item, name)
    return json.loads(text) if text is not None else None


def pack_workflow(workflow: dict[str, Any]) -> bytes:
    return zlib.compress(json.dumps(workflow, separators=(",", ":")).encode(), 6)


def unpack_workflow(blob: bytes) -> dict[str, Any]:
    workflow: dict[str, Any] = json.loads(zlib.decompress(blob))
    return workflow


# The one value of event_pending: the pending_events index is a single sparse partition.
EVENT_PENDING = "1"
_OPTIONAL_TEXT = ("webhook_url", "route", "node_id")
_OPTIONAL_NUMBERS = ("lease_until", "started_at", "completed_at", "expires_at", "ring_at")
_OPTIONAL_JSON = (
    "metadata",
    "progress",
    "outputs",
    "error",
    "webhook",
    "environments",
    "deployment",
)


def created_day(timestamp: float) -> str:
    """The by_day index's partition for a moment: its UTC date. A job's is the moment its
    id carries, so a cursor's id names its day."""
    return time.strftime("%Y-%m-%d", time.gmtime(timestamp))


def is_live(job: Job) -> bool:
    """In the ring or running: the jobs the live index holds."""
    return job.state is JobState.RUNNING or (job.state is JobState.QUEUED and job.in_ring)


def job_to_item(job: Job) -> Item:
    item: Item = {
        "job_id": s(job.job_id),
        "account_id": s(job.account_id),
        "state": s(job.state.value),
        "created_at": n(job.created_at),
        "tier": s(job.tier),
        "workflow": {"B": pack_workflow(job.workflow)},
        "models": as_json(job.models),
        "in_ring": flag(job.in_ring),
        "attempt": n(job.attempt),
        "cancel_requested": flag(job.cancel_requested),
        "created_day": s(created_day(ulid_time(job.job_id))),  # the by_day index's key
    }
    for name in _OPTIONAL_TEXT:
        value = getattr(job, name)
        if value is not None:
            item[name] = s(value)
    for name in _OPTIONAL_NUMBERS:
        value = getattr(job, name)
        if value is not None:
            item[name] = n(value)
    for name in _OPTIONAL_JSON:
        value = getattr(job, name)
        if value is not None:
            item[name] = as_json(value)
    if job.handed_back_by:
        item["handed_back_by"] = as_json(job.handed_back_by)
    if job.state is JobState.QUEUED and not job.in_ring:
        item["backlog_account"] = s(job.account_id)  # the sparse backlog index's key
    if job.event_pending:
        item["event_pending"] = s(EVENT_PENDING)  # the sparse pending_events index's key
    if is_live(job):
        item["live_account"] = s(job.account_id)  # the sparse live index's key
    return item


def job_from_item(item: Item) -> Job:
    blob = item.get("workflow", {}).get("B")
    expires = get_n(item, "expires_at")
    return Job(
        job_id=item["job_id"]["S"],
        account_id=item["account_id"]["S"],
        state=JobState(item["state"]["S"]),
        created_at=float(item["created_at"]["N"]),
        workflow=unpack_workflow(blob) if blob is not None else {},
        models=get_json(item, "models") or [],
        tier=get_s(item, "tier") or "free",
        webhook_url=get_s(item, "webhook_url"),
        metadata=get_json(item, "metadata"),
        in_ring=get_bool(item, "in_ring"),
        route=get_s(item, "route"),
        node_id=get_s(item, "node_id"),
        attempt=get_int(item, "attempt"),
        lease_until=get_n(item, "lease_until"),
        cancel_requested=get_bool(item, "cancel_requested"),
        started_at=get_n(item, "started_at"),
        completed_at=get_n(item, "completed_at"),
        progress=get_json(item, "progress"),
        outputs=get_json(item, "outputs"),
        error=get_json(item, "error"),
        expires_at=int(expires) if expires is not None else None,
        webhook=get_json(item, "webhook"),
        event_pending="event_pending" in item,
        ring_at=get_n(item, "ring_at"),
        environments=get_json(item, "environments"),
        handed_back_by=get_json(item, "handed_back_by") or [],
        deployment=get_json(item, "deployment"),
    )


def error_code(exc: ClientError) -> str:
    code: str = exc.response.get("Error", {}).get("Code", "")
    return code


@contextmanager
def storage_errors(action: str) -> Iterator[None]:
    """Turn an AWS failure nobody handled into StorageError (never a botocore type)."""
    try:
        yield
    except ClientError as exc:
        raise StorageError(f"{action} failed: {error_code(exc)}") from exc
    except BotoCoreError as exc:
        raise StorageError(f"{action} failed: {exc}") from exc


def call(action: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
    """One AWS call with its failure turned into StorageError."""
    with storage_errors(action):
        return fn(**kwargs)


class GuardedClient:
    """A boto3 client whose transport failures (timeouts, connection errors) surface as
    StorageError. ClientError still reaches the caller, which handles the conditional
    failures it expects and turns the rest into StorageError itself."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if not callable(method):
            return method

        def guarded(**kwargs: Any) -> Any:
            try:
                return method(**kwargs)
            except BotoCoreError as exc:
                raise StorageError(f"{name} failed: {exc}") from exc

        return guarded
