"""Job events (DESIGN §9): one per terminal transition, on the SNS topic ``job-events``.

The payload follows cmfy.cloud's webhook body, so its users' receivers keep working::

    {"id": "evt_<job_id>", "type": "job.completed" | "job.failed" | "job.cancelled",
     "job_id", "status", "created_at", "started_at", "completed_at", "execution_time_ms",
     "outputs": {"images": [...]}, "error"?, "metadata"?}

The event id is derived from the job, so a republished or replayed event keeps its id
(Standard Webhooks' ``webhook-id``: receivers deduplicate on it). Message attributes
``type`` and ``account`` let subscriptions filter.

Nothing lost: a job's terminal write also sets ``event_pending``; the Dispatcher clears it
once the event is published. If a process dies (or SNS fails) in between, the flag stays
and ``Dispatcher.republish_pending`` — the reaper calls it — publishes the event later.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from comfyfleet.domain import Job, JobState
from comfyfleet.errors import NotFound, StorageError
from comfyfleet.resources import topic_name
from comfyfleet.settings import Settings
from comfyfleet.store.ports import JobStore

logger = logging.getLogger(__name__)

EVENT_TYPES: dict[JobState, str] = {
    JobState.COMPLETED: "job.completed",
    JobState.FAILED: "job.failed",
    JobState.CANCELLED: "job.cancelled",
}
EVENT_ID_PREFIX = "evt_"
# An event still pending this long after its job ended was lost by the process that ended
# it (publishing takes milliseconds): the reaper publishes it.
REPUBLISH_AFTER_SECONDS = 60.0


def event_id(job_id: str) -> str:
    """The stable id of a job's terminal event."""
    return EVENT_ID_PREFIX + job_id


def iso_time(timestamp: float | None) -> str | None:
    """Epoch seconds as the API writes times (``2026-01-01T12:00:00.000Z``)."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def job_event(job: Job) -> dict[str, Any]:
    """The terminal event of an ended job (ValueError if it has not ended)."""
    kind = EVENT_TYPES.get(job.state)
    if kind is None:
        raise ValueError(f"job {job.job_id} is {job.state}: only an ended job has an event")
    outputs = job.outputs if isinstance(job.outputs, dict) else {}
    images = [url for url in outputs.get("images") or [] if isinstance(url, str)]
    event: dict[str, Any] = {
        "id": event_id(job.job_id),
        "type": kind,
        "job_id": job.job_id,
        "status": job.state.value,
        "created_at": iso_time(job.created_at),
        "started_at": iso_time(job.started_at),
        "completed_at": iso_time(job.completed_at),
        "execution_time_ms": job.execution_time_ms,
        "outputs": {"images": images},
    }
    if outputs.get("files"):
        event["outputs"]["files"] = outputs["files"]
    if job.error is not None:
        event["error"] = job.error
    if job.metadata is not None:
        event["metadata"] = job.metadata
    return event


def encode_event(event: dict[str, Any]) -> str:
    """The event as its message (and webhook) body: compact JSON."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


class JobEvents(Protocol):
    def publish(self, job: Job) -> None:
        """Publish the ended job's event; StorageError when it could not be sent."""
        ...


class SnsJobEvents:
    """Job events on the SNS topic; its ARN is looked up by name on first use unless set."""

    def __init__(self, sns: Any, settings: Settings) -> None:
        self.sns = sns
        self._topic_arn = settings.events_topic_arn or None
        self._name = topic_name(settings)
        self._lock = threading.Lock()

    @property
    def topic_arn(self) -> str:
        if self._topic_arn is None:
            with self._lock:
                if self._topic_arn is None:
                    self._topic_arn = self._find_topic()
        return self._topic_arn

    def _find_topic(self) -> str:
        try:
            for page in self.sns.get_paginator("list_topics").paginate():
                for topic in page.get("Topics", []):
                    arn: str = topic["TopicArn"]
                    if arn.rsplit(":", 1)[-1] == self._name:
                        return arn
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"find topic failed: {exc}") from exc
        raise StorageError(f"no SNS topic named {self._name}")

    def publish(self, job: Job) -> None:
        event = job_event(job)
        try:
            self.sns.publish(
                TopicArn=self.topic_arn,
                Message=encode_event(event),
                MessageAttributes={
                    "type": {"DataType": "String", "StringValue": event["type"]},
                    "account": {"DataType": "String", "StringValue": job.account_id},
                },
            )
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"publish event failed: {exc}") from exc


class MemoryJobEvents:
    """Job events kept in memory, for unit tests and in-memory stacks; ``fail`` makes the
    next that many publishes raise StorageError (SNS down)."""

    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []
        self.attributes: list[dict[str, str]] = []
        self.fail = 0
        self._lock = threading.Lock()

    def publish(self, job: Job) -> None:
        event = job_event(job)
        with self._lock:
            if self.fail > 0:
                self.fail -= 1
                raise StorageError("publish event failed: the topic is unreachable")
            self.published.append(event)
            self.attributes.append({"type": event["type"], "account": job.account_id})

    def of_job(self, job_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [event for event in self.published if event["job_id"] == job_id]


class EventOutbox:
    """Publishes ended jobs' events and clears their ``event_pending``.

    ``ended`` never raises for a failed publish: the job's end is already written, and the
    flag it leaves set is the reaper's cue (``republish``). A job may therefore see its
    event twice (a publish whose acknowledgement was lost), never zero times; the id is
    the same, so receivers deduplicate.
    """

    def __init__(self, jobs: JobStore, events: JobEvents) -> None:
        self.jobs = jobs
        self.events = events

    def ended(self, job: Job) -> Job:
        """Publish the event of a job just ended; returns the job as it now stands."""
        try:
            self.events.publish(job)
        except StorageError:
            logger.exception("event not published; the reaper will", extra={"job_id": job.job_id})
            return job
        try:
            self.jobs.clear_event_pending(job.job_id)
        except StorageError:
            # Published but still flagged: the reaper sends it again, with the same id.
            logger.exception("event pending not cleared", extra={"job_id": job.job_id})
            return job
        job.event_pending = False
        return job

    def republish(self, *, ended_before: float, limit: int = 100) -> int:
        """Publish the events of jobs that ended before ``ended_before`` and still have one
        pending; returns how many were published. Idempotent once they are."""
        published = 0
        for job_id in self.jobs.pending_events(ended_before=ended_before, limit=limit):
            try:
                job = self.jobs.get(job_id)
            except NotFound:
                continue
            if not job.event_pending or not job.state.terminal:
                continue
            if not self.ended(job).event_pending:
                published += 1
        return published
