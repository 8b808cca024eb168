"""Webhook delivery on the memory fakes: signed POSTs, retries through the message's
visibility on the Standard Webhooks schedule, the last attempt to the DLQ, refused URLs
failed at once, duplicates skipped, and what is recorded on the job."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from comfyfleet.clock import FakeClock
from comfyfleet.delivery import (
    RETRY_CAP_SECONDS,
    GuardedPoster,
    Outcome,
    QueuedEvent,
    WebhookDelivery,
    retry_delay,
)
from comfyfleet.domain import Job, JobState, Limits
from comfyfleet.errors import StorageError
from comfyfleet.events import MemoryJobEvents, encode_event
from comfyfleet.netguard import BlockedAddress, BlockedUrl, FetchRefused
from comfyfleet.queues import MemoryQueues
from comfyfleet.scheduling import Dispatcher, JobRequest
from comfyfleet.settings import Settings
from comfyfleet.store import Stores
from comfyfleet.store.memory import memory_stores
from comfyfleet.webhooks import rotated, verify

ARN = "arn:aws:sqs:us-east-1:123456789012:comfyfleet-webhooks"
HOOK = "https://hooks.example.com/comfy"
LIMITS = Limits(requests_per_minute=60, concurrency=2, queue_depth=10, ring_slots=2)


@dataclass
class Sent:
    url: str
    body: bytes
    headers: dict[str, str]


@dataclass
class ScriptedPoster:
    """Answers each POST with the next scripted status, or raises the scripted exception."""

    answers: list[int | Exception] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        self.sent.append(Sent(url, body, dict(headers)))
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, Exception):
            raise answer
        return answer


@dataclass
class RecordedVisibility:
    changes: list[tuple[str, int]] = field(default_factory=list)

    def retry_in(self, event: QueuedEvent, seconds: int) -> None:
        self.changes.append((event.message_id, seconds))


class World:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.clock = FakeClock()
        self.stores: Stores = memory_stores(settings)
        self.events = MemoryJobEvents()
        self.dispatcher = Dispatcher(
            self.stores,
            MemoryQueues(self.clock.now),
            settings,
            self.clock,
            shared_url="memory://shared",
            events=self.events,
        )
        self.poster = ScriptedPoster()
        self.visibility = RecordedVisibility()
        self.outcomes: list[Outcome] = []
        self.delivery = WebhookDelivery(
            self.stores,
            self.poster,
            self.visibility,
            self.clock,
            schedule=settings.webhook_retry_schedule,
            rng=random.Random(7),
            on_outcome=self.outcomes.append,
        )
        self.account = self.stores.accounts.create(tier="free", name="", now=self.clock.now())

    def ended_job(self, webhook_url: str | None = HOOK) -> Job:
        request = JobRequest({"1": {"class_type": "X", "inputs": {}}}, [], webhook_url=webhook_url)
        job = self.dispatcher.submit(self.account.account_id, "free", LIMITS, request).job
        return self.dispatcher.cancel(job.job_id, LIMITS.share)

    def record(self, job: Job, receive_count: int = 1, message_id: str = "m-1") -> dict[str, Any]:
        [event] = self.events.of_job(job.job_id)
        return {
            "messageId": message_id,
            "receiptHandle": f"receipt-{message_id}-{receive_count}",
            "body": encode_event(event),
            "attributes": {"ApproximateReceiveCount": str(receive_count)},
            "messageAttributes": {},
            "eventSourceARN": ARN,
        }

    def deliver(self, record: dict[str, Any]) -> Outcome:
        return self.delivery.deliver(QueuedEvent.from_record(record))

    def webhook(self, job: Job) -> dict[str, Any]:
        state = self.stores.jobs.get(job.job_id).webhook
        assert state is not None
        return state


@pytest.fixture
def world(settings: Settings) -> World:
    return World(settings)


def test_a_2xx_delivers_the_event_signed_with_the_account_secret(world: World) -> None:
    job = world.ended_job()
    record = world.record(job)

    result = world.delivery.handle_batch([record])

    assert result.failures == [] and result.response() == {"batchItemFailures": []}
    [sent] = world.poster.sent
    assert sent.url == HOOK and sent.body == record["body"].encode()
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.headers["webhook-id"] == f"evt_{job.job_id}"
    event = verify(sent.headers, sent.body, world.account.webhook_secret, now=world.clock.now())
    assert event["type"] == "job.cancelled" and event["job_id"] == job.job_id
    state = world.webhook(job)
    assert state["state"] == "delivered" and state["attempts"] == 1
    assert state["last_status"] == 200 and state["delivered_at"]
    assert state["event_id"] == f"evt_{job.job_id}"
    assert world.visibility.changes == [] and world.outcomes == [Outcome.DELIVERED]


def test_a_failed_attempt_is_retried_later_through_the_visibility(world: World) -> None:
    job = world.ended_job()
    world.poster.answers = [503]

    result = world.delivery.handle_batch([world.record(job)])

    assert result.response() == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}
    [(message_id, delay)] = world.visibility.changes
    assert message_id == "m-1" and 4 <= delay <= 6  # the first retry: 5 s ± 20 %
    state = world.webhook(job)
    assert state["state"] == "pending" and state["attempts"] == 1
    assert state["last_status"] == 503 and state["last_error"] == "HTTP 503"
    assert state["next_attempt_at"] and state["delivered_at"] is None


def test_retries_back_off_then_deliver_once_with_the_same_event_id(world: World) -> None:
    job = world.ended_job()
    world.poster.answers = [500, requests.ConnectionError("refused"), 429, 204]

    outcomes = [world.deliver(world.record(job, receive_count=n)) for n in range(1, 5)]

    assert outcomes == [Outcome.RETRY, Outcome.RETRY, Outcome.RETRY, Outcome.DELIVERED]
    delays = [seconds for _, seconds in world.visibility.changes]
    assert len(delays) == 3 and delays[0] < delays[1] < delays[2]
    assert {sent.headers["webhook-id"] for sent in world.poster.sent} == {f"evt_{job.job_id}"}
    assert world.webhook(job)["state"] == "delivered" and world.webhook(job)["attempts"] == 4
    assert world.deliver(world.record(job, receive_count=5)) is Outcome.SKIPPED  # a duplicate
    assert len(world.poster.sent) == 4


def test_the_last_attempt_gives_up_and_leaves_the_message_for_the_dlq(world: World) -> None:
    job = world.ended_job()
    world.poster.answers = [500]

    outcome = world.deliver(world.record(job, receive_count=world.settings.webhook_attempts))

    assert outcome is Outcome.GAVE_UP and not outcome.settled
    assert world.visibility.changes == [("m-1", 0)]  # visible now: SQS moves it to the DLQ
    assert world.webhook(job)["state"] == "failed"


@pytest.mark.parametrize(
    "refusal",
    [
        BlockedUrl("scheme 'http' for 'hooks.example.com' is refused; use https"),
        BlockedAddress("hooks.example.com", "10.0.0.7", "private"),
    ],
)
def test_a_refused_url_fails_at_once_and_is_not_retried(
    world: World, refusal: FetchRefused
) -> None:
    job = world.ended_job()
    world.poster.answers = [refusal]

    result = world.delivery.handle_batch([world.record(job)])

    assert result.failures == [] and world.visibility.changes == []
    state = world.webhook(job)
    assert state["state"] == "failed" and state["last_status"] is None
    assert "refused" in state["last_error"]
    assert world.outcomes == [Outcome.REFUSED]


def test_the_accounts_default_url_is_used_when_the_job_names_none(world: World) -> None:
    account = world.stores.accounts.get(world.account.account_id)
    account.webhook_url = "https://default.example.com/hook"
    world.stores.accounts.update(account)
    job = world.ended_job(webhook_url=None)

    assert world.deliver(world.record(job)) is Outcome.DELIVERED
    assert world.poster.sent[0].url == "https://default.example.com/hook"


def test_without_any_url_there_is_nothing_to_send(world: World) -> None:
    job = world.ended_job(webhook_url=None)

    assert world.deliver(world.record(job)) is Outcome.SKIPPED
    assert world.poster.sent == [] and world.stores.jobs.get(job.job_id).webhook is None


def test_during_a_rotation_grace_both_secrets_sign(world: World) -> None:
    old = world.account.webhook_secret
    account = rotated(world.account, now=world.clock.now(), grace_seconds=3600)
    world.stores.accounts.update(account)
    job = world.ended_job()

    world.deliver(world.record(job))

    sent = world.poster.sent[0]
    assert len(sent.headers["webhook-signature"].split(" ")) == 2
    for secret in (old, account.webhook_secret):
        assert verify(sent.headers, sent.body, secret, now=world.clock.now())["id"]


def test_an_sns_envelope_is_unwrapped_and_the_event_sent_as_published(world: World) -> None:
    job = world.ended_job()
    record = world.record(job)
    published = record["body"]
    record["body"] = json.dumps({"Type": "Notification", "MessageId": "x", "Message": published})

    assert world.deliver(record) is Outcome.DELIVERED
    assert world.poster.sent[0].body == published.encode()


def test_unknown_jobs_and_foreign_messages_are_dropped(world: World) -> None:
    job = world.ended_job()
    record = world.record(job)
    gone = {**record, "body": record["body"].replace(job.job_id, "0" * 26)}
    garbage = {**record, "body": "not json"}

    assert world.deliver(gone) is Outcome.SKIPPED
    assert world.deliver(garbage) is Outcome.SKIPPED
    assert world.poster.sent == []


def test_a_storage_failure_leaves_the_message_for_a_later_retry(world: World) -> None:
    job = world.ended_job()

    class Down:
        def get(self, job_id: str) -> Job:
            raise StorageError("get job failed: ThrottlingException")

    world.delivery.stores = dataclasses.replace(world.stores, jobs=Down())

    assert world.deliver(world.record(job)) is Outcome.RETRY
    assert world.visibility.changes == [] and world.poster.sent == []


def test_a_batch_reports_only_the_records_to_retry(world: World) -> None:
    first, second, third = world.ended_job(), world.ended_job(), world.ended_job()
    world.poster.answers = [200, 200, 200]
    records = [
        world.record(first, message_id="a"),
        {**world.record(second, message_id="b"), "body": "{}"},
        world.record(third, message_id="c"),
    ]

    result = world.delivery.handle_batch(records)

    assert result.failures == [] and result.outcomes[Outcome.DELIVERED] == 2
    assert result.outcomes[Outcome.SKIPPED] == 1
    assert {world.stores.jobs.get(j.job_id).state for j in (first, third)} == {JobState.CANCELLED}


def test_the_retries_follow_the_standard_webhooks_schedule_within_their_jitter() -> None:
    schedule = Settings().webhook_retry_schedule
    rng = random.Random(19)

    for _ in range(200):
        delays = [retry_delay(attempt, rng, schedule) for attempt in range(1, len(schedule) + 1)]

        for delay, step in zip(delays, schedule, strict=True):
            assert round(step * 0.8) <= delay <= round(step * 1.2)
        assert delays[0] <= 10  # the first retry within 10 s
    assert schedule == [5, 300, 1800, 7200, 5 * 3600, 10 * 3600, 10 * 3600]


def test_a_retry_waits_at_least_a_second_and_at_most_12_hours() -> None:
    class Lowest(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return a

    class Highest(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    assert retry_delay(1, Lowest(), [1]) == 1  # 0.8 s would round to 1, never to 0
    assert retry_delay(1, Highest(), [RETRY_CAP_SECONDS]) == RETRY_CAP_SECONDS
    assert retry_delay(9, Highest(), [5, 60]) == 72  # past the schedule: its last step


def test_an_event_is_attempted_once_per_step_of_the_schedule_plus_one_then_fails() -> None:
    world = World(Settings(webhook_retry_schedule=[5, 60, 600]))
    job = world.ended_job()
    world.poster.answers = [500] * 10

    outcomes = [world.deliver(world.record(job, receive_count=count)) for count in range(1, 5)]

    assert outcomes == [Outcome.RETRY, Outcome.RETRY, Outcome.RETRY, Outcome.GAVE_UP]
    assert world.delivery.max_attempts == world.settings.webhook_attempts == 4
    delays = [seconds for _, seconds in world.visibility.changes]
    assert 4 <= delays[0] <= 6 and 48 <= delays[1] <= 72 and 480 <= delays[2] <= 720
    assert delays[3] == 0  # given up: visible now, SQS's redrive moves it to the DLQ
    assert world.webhook(job)["state"] == "failed" and world.webhook(job)["attempts"] == 4


@pytest.mark.parametrize(
    ("url", "error", "reason"),
    [
        ("http://hooks.example.com/x", BlockedUrl, "use https"),
        ("https://10.1.2.3/x", BlockedAddress, "private"),
        ("https://169.254.169.254/latest", BlockedAddress, "metadata"),
        ("https://127.0.0.1:8443/x", BlockedAddress, "loopback"),
        ("https://[::ffff:192.168.0.1]/x", BlockedAddress, "private"),
    ],
)
def test_the_guarded_poster_refuses_plain_http_and_internal_addresses(
    url: str, error: type[Exception], reason: str
) -> None:
    poster = GuardedPoster(allow_loopback=False)

    with pytest.raises(error, match=reason):
        poster.post(url, b"{}", {})


def test_deliveries_never_touch_the_accounts_rate_limits(world: World) -> None:
    job = world.ended_job()
    before = world.stores.limits.counters(world.account.account_id, now=world.clock.now())
    world.poster.answers = [500, 200]

    world.deliver(world.record(job, receive_count=1))
    world.deliver(world.record(job, receive_count=2))

    after = world.stores.limits.counters(world.account.account_id, now=world.clock.now())
    assert after == before and world.webhook(job)["state"] == "delivered"
