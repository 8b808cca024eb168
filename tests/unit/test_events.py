"""Job events: the payload, and exactly one event per terminal transition through the
Dispatcher — finish, cancel, the reaper's fail_queued and requeue_expired, an exhausted
claim — with nothing lost when publishing fails (event_pending, republish_pending)."""

from __future__ import annotations

import pytest

from comfyfleet.api.models import iso
from comfyfleet.clock import FakeClock
from comfyfleet.domain import Job, JobState, Limits, RingMessage
from comfyfleet.errors import JobStateConflict
from comfyfleet.events import MemoryJobEvents, iso_time, job_event
from comfyfleet.queues import MemoryQueues
from comfyfleet.scheduling import Dispatcher, JobRequest
from comfyfleet.settings import Settings
from comfyfleet.store import Stores
from comfyfleet.store.memory import memory_stores

SHARED = "memory://shared"
LIMITS = Limits(requests_per_minute=60, concurrency=2, queue_depth=10, ring_slots=2)
SHARE = LIMITS.share
REQUEST = JobRequest({"1": {"class_type": "EmptyImage", "inputs": {}}}, [], metadata={"k": 1})
OUTPUTS = {"images": ["https://cdn.example.com/a.png"], "files": []}


class World:
    def __init__(self, settings: Settings) -> None:
        self.clock = FakeClock()
        self.stores: Stores = memory_stores(settings)
        self.events = MemoryJobEvents()
        self.dispatcher = Dispatcher(
            self.stores,
            MemoryQueues(self.clock.now),
            settings,
            self.clock,
            shared_url=SHARED,
            events=self.events,
        )
        self.account = self.stores.accounts.create(tier="free", name="", now=self.clock.now())

    def submit(self) -> Job:
        return self.dispatcher.submit(self.account.account_id, "free", LIMITS, REQUEST).job

    def claim(self, job: Job, node: str = "node-1") -> Job:
        message = RingMessage(job.job_id, job.account_id, "shared", 2, 2)
        claimed = self.dispatcher.claim(message, node).job
        assert claimed is not None
        return claimed

    def types(self, job_id: str) -> list[str]:
        return [event["type"] for event in self.events.of_job(job_id)]


@pytest.fixture
def world(settings: Settings) -> World:
    return World(settings)


def test_a_completed_jobs_event_has_the_cmfy_shape_and_a_stable_id(world: World) -> None:
    job = world.claim(world.submit())
    world.clock.advance(2.5)

    done = world.dispatcher.finish(job, "node-1", JobState.COMPLETED, SHARE, outputs=OUTPUTS)

    [event] = world.events.of_job(job.job_id)
    assert event == {
        "id": f"evt_{job.job_id}",
        "type": "job.completed",
        "job_id": job.job_id,
        "status": "completed",
        "created_at": iso(job.created_at),
        "started_at": iso(done.started_at),
        "completed_at": iso(done.completed_at),
        "execution_time_ms": 2500,
        "outputs": {"images": ["https://cdn.example.com/a.png"]},
        "metadata": {"k": 1},
    }
    assert job_event(world.stores.jobs.get(job.job_id))["id"] == event["id"]  # replays keep it
    assert world.events.attributes == [
        {"type": "job.completed", "account": world.account.account_id}
    ]
    assert not world.stores.jobs.get(job.job_id).event_pending


def test_a_failed_jobs_event_carries_its_error(world: World) -> None:
    job = world.claim(world.submit())
    error = {"code": "execution_error", "message": "boom", "node_id": "3"}

    world.dispatcher.finish(job, "node-1", JobState.FAILED, SHARE, error=error)

    [event] = world.events.of_job(job.job_id)
    assert event["type"] == "job.failed" and event["error"] == error
    assert event["outputs"] == {"images": []}


def test_only_an_ended_job_has_an_event(world: World) -> None:
    with pytest.raises(ValueError, match="only an ended job"):
        job_event(world.submit())


def test_iso_time_writes_times_as_the_api_does() -> None:
    for moment in (0.0, 1_800_000_000.123456, 1_800_000_000.9999):
        assert iso_time(moment) == iso(moment)
    assert iso_time(None) is None


def test_cancelling_a_queued_job_publishes_one_cancelled_event(world: World) -> None:
    job = world.submit()

    cancelled = world.dispatcher.cancel(job.job_id, SHARE)

    assert cancelled.state is JobState.CANCELLED
    assert world.types(job.job_id) == ["job.cancelled"]
    event = world.events.of_job(job.job_id)[0]
    assert event["started_at"] is None and event["execution_time_ms"] is None
    with pytest.raises(JobStateConflict):
        world.dispatcher.cancel(job.job_id, SHARE)
    assert world.types(job.job_id) == ["job.cancelled"]


def test_cancelling_a_running_job_publishes_when_its_agent_ends_it(world: World) -> None:
    job = world.claim(world.submit())

    asked = world.dispatcher.cancel(job.job_id, SHARE)
    assert asked.state is JobState.RUNNING and world.types(job.job_id) == []

    world.dispatcher.finish(job, "node-1", JobState.CANCELLED, SHARE)
    assert world.types(job.job_id) == ["job.cancelled"]


def test_fail_queued_publishes_once_and_refills_the_ring(world: World) -> None:
    first, second, waiting = world.submit(), world.submit(), world.submit()
    assert not world.stores.jobs.get(waiting.job_id).in_ring
    error = {"code": "dead_lettered", "message": "the message reached the DLQ"}

    failed = world.dispatcher.fail_queued(first.job_id, error, SHARE)

    assert failed.state is JobState.FAILED and world.types(first.job_id) == ["job.failed"]
    assert world.events.of_job(first.job_id)[0]["error"] == error
    assert world.stores.jobs.get(waiting.job_id).in_ring  # promoted into the freed slot
    with pytest.raises(JobStateConflict):
        world.dispatcher.fail_queued(first.job_id, error, SHARE)
    assert world.types(first.job_id) == ["job.failed"] and world.types(second.job_id) == []


def test_an_expired_lease_requeues_silently_then_fails_with_an_event(settings: Settings) -> None:
    world = World(Settings(max_attempts=2))
    job = world.claim(world.submit())
    world.clock.advance(settings.lease_seconds + 1)

    again = world.dispatcher.requeue_expired(job.job_id, SHARE)
    assert again.state is JobState.QUEUED and world.types(job.job_id) == []

    world.claim(again, "node-2")
    world.clock.advance(settings.lease_seconds + 1)
    failed = world.dispatcher.requeue_expired(job.job_id, SHARE)

    assert failed.state is JobState.FAILED
    assert world.types(job.job_id) == ["job.failed"]
    assert world.events.of_job(job.job_id)[0]["error"]["code"] == "max_attempts_exceeded"


def test_a_claim_out_of_attempts_publishes_the_failure(settings: Settings) -> None:
    world = World(Settings(max_attempts=1))
    job = world.claim(world.submit())
    world.stores.jobs.release(job.job_id, "node-1", now=world.clock.now())

    message = RingMessage(job.job_id, job.account_id, "shared", 2, 2)
    claim = world.dispatcher.claim(message, "node-2")

    assert claim.job is not None and claim.job.state is JobState.FAILED
    assert world.types(job.job_id) == ["job.failed"]


def test_a_failed_publish_leaves_the_event_pending_for_the_reaper(world: World) -> None:
    job = world.claim(world.submit())
    world.events.fail = 1

    done = world.dispatcher.finish(job, "node-1", JobState.COMPLETED, SHARE, outputs=OUTPUTS)

    assert done.state is JobState.COMPLETED and done.event_pending
    assert world.events.of_job(job.job_id) == []
    assert world.dispatcher.republish_pending() == 0  # too recent: it may be in flight
    world.clock.advance(61)
    assert world.dispatcher.republish_pending() == 1
    assert world.types(job.job_id) == ["job.completed"]
    assert not world.stores.jobs.get(job.job_id).event_pending
    assert world.dispatcher.republish_pending() == 0  # idempotent


def test_republishing_while_the_topic_is_still_down_keeps_the_flag(world: World) -> None:
    job = world.submit()
    world.events.fail = 2
    world.dispatcher.cancel(job.job_id, SHARE)
    world.clock.advance(61)

    assert world.dispatcher.republish_pending() == 0
    assert world.stores.jobs.get(job.job_id).event_pending
    assert world.dispatcher.republish_pending() == 1
    assert world.types(job.job_id) == ["job.cancelled"]
