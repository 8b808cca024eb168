"""Webhook delivery (DESIGN §9): the webhooks function's logic, one SQS record at a time.

The webhooks queue is subscribed to the job-events topic (raw delivery; an SNS envelope is
unwrapped too). For each event: load the job and its account, POST the event — signed per
Standard Webhooks with every live secret of the account — to the job's ``webhook_url`` or
the account's default, through the SSRF guard (https only; loopback http only where
``allow_local_urls``), 30 s at most. A 2xx is delivered. Anything else is retried on the
Standard Webhooks schedule (the setting ``webhook_retry_schedule``: 5 s, 5 min, 30 min, 2 h,
5 h, 10 h, 10 h by default, each step ±20 %) by setting the message's visibility; after the
last step's attempt the event has failed, and SQS moves it to the DLQ.
A URL the guard refuses (plain http, a private or metadata address) fails at once: retrying
cannot change the answer. Each attempt's result is recorded on the job.

Deliveries never touch rate limits or the account's counters.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import requests
import urllib3

import comfyfleet
from comfyfleet.clock import Clock
from comfyfleet.domain import Job
from comfyfleet.errors import NotFound, StorageError
from comfyfleet.events import iso_time
from comfyfleet.netguard import FetchRefused, OutboundClient, TooManyRedirects, redact_url
from comfyfleet.settings import DEFAULT_WEBHOOK_RETRY_SCHEDULE, MAX_RETRY_STEP_SECONDS, Settings
from comfyfleet.store import Stores
from comfyfleet.webhooks import signature_headers, signing_secrets

logger = logging.getLogger(__name__)

WEBHOOK_TIMEOUT = (10.0, 30.0)  # seconds: connect, then the response
RETRY_CAP_SECONDS = MAX_RETRY_STEP_SECONDS  # SQS's longest visibility timeout
RETRY_JITTER = 0.2  # each delay is drawn from ±20 % around its step
MAX_PARALLEL = 10
_NETWORK_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, OSError)


def retry_delay(attempt: int, rng: random.Random, schedule: Sequence[int]) -> int:
    """Seconds to wait after failed attempt number ``attempt`` (1 = the first): the
    schedule's step for it, jittered ±20 % so that receivers that failed together are not
    retried together, never under 1 s nor over 12 h (an attempt past the schedule, which
    SQS's redrive prevents, waits as long as its last step)."""
    step = schedule[min(max(attempt, 1), len(schedule)) - 1]
    jittered = round(step * rng.uniform(1 - RETRY_JITTER, 1 + RETRY_JITTER))
    return max(1, min(RETRY_CAP_SECONDS, jittered))


class Outcome(StrEnum):
    DELIVERED = "delivered"  # a 2xx
    RETRY = "retried"  # another attempt later (the message's visibility says when)
    GAVE_UP = "gave_up"  # the last attempt failed: the message goes to the DLQ
    REFUSED = "refused"  # the guard refused the URL: failed, not retried
    SKIPPED = "skipped"  # nothing to send: no URL, unknown job, already delivered

    @property
    def settled(self) -> bool:
        """Whether the message is done with (deleted) rather than left for SQS."""
        return self in (Outcome.DELIVERED, Outcome.REFUSED, Outcome.SKIPPED)


@dataclass(frozen=True, slots=True)
class QueuedEvent:
    """One record of the webhooks queue, as Lambda's SQS event source passes it."""

    message_id: str
    receipt_handle: str
    body: str  # the event's JSON, exactly as published (and as signed and sent)
    receive_count: int
    source_arn: str

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> QueuedEvent:
        body = str(record.get("body", ""))
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        # Without raw delivery SNS wraps the event in its envelope; the event is "Message".
        if isinstance(data, dict) and data.get("Type") == "Notification" and "Message" in data:
            body = str(data["Message"])
        attributes = record.get("attributes") or {}
        return cls(
            message_id=str(record["messageId"]),
            receipt_handle=str(record.get("receiptHandle", "")),
            body=body,
            receive_count=int(attributes.get("ApproximateReceiveCount", 1)),
            source_arn=str(record.get("eventSourceARN", "")),
        )


class Poster(Protocol):
    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        """POST and return the status; FetchRefused for a refused URL, network errors as
        requests/urllib3 exceptions."""
        ...


class Visibility(Protocol):
    def retry_in(self, event: QueuedEvent, seconds: int) -> None:
        """Make the message visible again in ``seconds`` (StorageError on failure)."""
        ...


class GuardedPoster:
    """POSTs through the SSRF guard; redirects are not followed (a webhook endpoint answers
    itself, and following a 302 would turn the POST into a GET)."""

    def __init__(self, *, allow_loopback: bool) -> None:
        self.http = OutboundClient(
            allow_loopback=allow_loopback, timeout=WEBHOOK_TIMEOUT, max_redirects=0
        )

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        with self.http.request("POST", url, headers=headers, data=body, stream=True) as response:
            return int(response.status_code)  # the body is never read


class SqsVisibility:
    """ChangeMessageVisibility on the queue a record came from.

    The queue URL is built from the record's ARN (SQS's own URL form), so the function needs
    no sqs:GetQueueUrl; endpoints such as moto find the queue by the URL's last segment.
    """

    def __init__(self, sqs: Any) -> None:
        self.sqs = sqs

    @staticmethod
    def queue_url(arn: str) -> str:
        parts = arn.split(":")
        if len(parts) != 6 or parts[2] != "sqs":
            raise StorageError(f"not an SQS queue ARN: {arn!r}")
        region, account, name = parts[3], parts[4], parts[5]
        return f"https://sqs.{region}.amazonaws.com/{account}/{name}"

    def retry_in(self, event: QueuedEvent, seconds: int) -> None:
        url = self.queue_url(event.source_arn)
        try:
            self.sqs.change_message_visibility(
                QueueUrl=url, ReceiptHandle=event.receipt_handle, VisibilityTimeout=seconds
            )
        except Exception as exc:  # botocore's errors, without importing botocore here
            raise StorageError(f"change visibility failed: {exc}") from exc


@dataclass(frozen=True)
class BatchResult:
    failures: list[str]  # message ids to leave on the queue
    outcomes: Counter[Outcome]

    def response(self) -> dict[str, Any]:
        """Lambda's partial batch response (ReportBatchItemFailures)."""
        return {"batchItemFailures": [{"itemIdentifier": m} for m in self.failures]}


class WebhookDelivery:
    """Delivers queued job events to their webhook URLs; see the module's docstring."""

    def __init__(
        self,
        stores: Stores,
        poster: Poster,
        visibility: Visibility,
        clock: Clock,
        *,
        schedule: Sequence[int] = tuple(DEFAULT_WEBHOOK_RETRY_SCHEDULE),
        rng: random.Random | None = None,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> None:
        self.stores = stores
        self.poster = poster
        self.visibility = visibility
        self.clock = clock
        self.schedule = tuple(schedule)  # seconds before each retry
        self.max_attempts = len(self.schedule) + 1  # the first, then one per retry
        self.rng = rng or random.Random()
        self.on_outcome = on_outcome

    def handle_batch(self, records: Sequence[Mapping[str, Any]]) -> BatchResult:
        """Deliver a batch (in parallel: each may wait 30 s on its endpoint)."""
        events = [QueuedEvent.from_record(record) for record in records]
        if len(events) <= 1:
            outcomes = [self.deliver(event) for event in events]
        else:
            with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(events))) as pool:
                outcomes = list(pool.map(self.deliver, events))
        return BatchResult(
            failures=[e.message_id for e, o in zip(events, outcomes, strict=True) if not o.settled],
            outcomes=Counter(outcomes),
        )

    def deliver(self, queued: QueuedEvent) -> Outcome:
        """One attempt at one event; never raises (a surprise leaves it for a retry)."""
        try:
            outcome = self._deliver(queued)
        except StorageError:
            logger.exception("delivery state unavailable; retrying later")
            outcome = Outcome.RETRY  # the message's own visibility timeout brings it back
        except Exception:
            logger.exception("delivery failed unexpectedly; retrying later")
            outcome = Outcome.RETRY
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        return outcome

    def _deliver(self, queued: QueuedEvent) -> Outcome:
        event = _event_of(queued.body)
        if event is None:
            logger.error("not a job event; dropped", extra={"message_id": queued.message_id})
            return Outcome.SKIPPED
        event_id, job_id = event["id"], event["job_id"]
        try:
            job = self.stores.jobs.get(job_id)
            account = self.stores.accounts.get(job.account_id)
        except NotFound:
            logger.warning("job or account gone; event dropped", extra={"job_id": job_id})
            return Outcome.SKIPPED
        previous = job.webhook if isinstance(job.webhook, dict) else {}
        if previous.get("state") == "delivered" and previous.get("event_id") == event_id:
            return Outcome.SKIPPED  # a duplicate (SNS/SQS deliver at least once)
        url = job.webhook_url or account.webhook_url
        if not url:
            return Outcome.SKIPPED
        now = self.clock.now()
        body = queued.body.encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"comfyfleet-webhooks/{comfyfleet.__version__}",
            **signature_headers(signing_secrets(account, now), event_id, body, timestamp=int(now)),
        }
        attempts = _int(previous.get("attempts")) + 1
        status: int | None = None
        try:
            status = self.poster.post(url, body, headers)
            problem = None if 200 <= status < 300 else f"HTTP {status}"
        except TooManyRedirects:
            problem = "the endpoint answered with a redirect (not followed)"
        except FetchRefused as refused:
            logger.warning("webhook URL refused", extra={"job_id": job_id, "reason": str(refused)})
            self._record(job, previous, event_id, "failed", attempts, now, None, str(refused), url)
            return Outcome.REFUSED
        except _NETWORK_ERRORS as exc:
            problem = f"{type(exc).__name__} sending to {redact_url(url)}"
        if problem is None:
            self._record(job, previous, event_id, "delivered", attempts, now, status, None, url)
            return Outcome.DELIVERED
        if queued.receive_count >= self.max_attempts:
            # Visible at once, so SQS moves it to the DLQ on its next receive.
            self._record(job, previous, event_id, "failed", attempts, now, status, problem, url)
            self._retry_in(queued, 0)
            return Outcome.GAVE_UP
        delay = retry_delay(queued.receive_count, self.rng, self.schedule)
        self._retry_in(queued, delay)
        self._record(
            job, previous, event_id, "pending", attempts, now, status, problem, url, now + delay
        )
        return Outcome.RETRY

    def _retry_in(self, queued: QueuedEvent, seconds: int) -> None:
        try:
            self.visibility.retry_in(queued, seconds)
        except StorageError:
            # The message comes back after the queue's visibility timeout instead.
            logger.exception("could not set the retry delay", extra={"seconds": seconds})

    def _record(
        self,
        job: Job,
        previous: Mapping[str, Any],
        event_id: str,
        state: str,
        attempts: int,
        now: float,
        status: int | None,
        error: str | None,
        url: str,
        next_at: float | None = None,
    ) -> None:
        delivery: dict[str, Any] = {
            "state": state,
            "url": url,  # the job's own, or the account's default at the time
            "event_id": event_id,
            "attempts": attempts,
            "last_status": status,
            "last_attempt_at": iso_time(now),
            "delivered_at": iso_time(now) if state == "delivered" else None,
            "next_attempt_at": iso_time(next_at),
        }
        if error is not None:
            delivery["last_error"] = error[:500]
        if "replays" in previous:
            delivery["replays"] = previous["replays"]
        try:
            self.stores.jobs.record_delivery(job.job_id, delivery)
        except (StorageError, NotFound):
            # The attempt happened either way; only its record is missing.
            logger.exception("delivery state not recorded", extra={"job_id": job.job_id})


def _event_of(body: str) -> dict[str, Any] | None:
    try:
        event = json.loads(body)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    if not isinstance(event.get("id"), str) or not isinstance(event.get("job_id"), str):
        return None
    return event


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def aws_delivery(
    settings: Settings,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    clock: Clock | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> WebhookDelivery:
    """The delivery on DynamoDB and SQS (boto3 clients of comfyfleet.aws)."""
    from comfyfleet.aws import client
    from comfyfleet.clock import SystemClock
    from comfyfleet.store.dynamo import dynamo_stores

    return WebhookDelivery(
        dynamo_stores(settings, endpoint_url=endpoint_url, region=region),
        GuardedPoster(allow_loopback=settings.allow_local_urls),
        SqsVisibility(client("sqs", endpoint_url=endpoint_url, region=region)),
        clock or SystemClock(),
        schedule=settings.webhook_retry_schedule,
        on_outcome=on_outcome,
    )
