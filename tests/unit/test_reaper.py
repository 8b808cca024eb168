"""The reaper on the in-memory stores and queues: each repair, and that a second pass
changes nothing more."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from comfyfleet.clock import FakeClock
from comfyfleet.domain import (
    SHARED_ROUTE,
    Job,
    JobState,
    Limits,
    NodeInfo,
    NodeStatus,
    RingMessage,
)
from comfyfleet.errors import StorageError
from comfyfleet.events import MemoryJobEvents
from comfyfleet.ids import new_job_id
from comfyfleet.queues import MemoryQueues, Received
from comfyfleet.reaper import Reaper, ReaperReport
from comfyfleet.scheduling import Dispatcher, JobRequest
from comfyfleet.settings import Settings
from comfyfleet.store import Stores
from comfyfleet.store.memory import memory_stores

SHARED = "memory://shared.fifo"
DLQ = "memory://shared-dlq.fifo"
WORKFLOW = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8}}}
LEASE = 90


class FlakyQueues(MemoryQueues):
    """SQS that refuses the next ``fail`` sends."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock.now)
        self.fail = 0

    def send(self, queue_url: str, message: RingMessage, *, group_id: str | None = None) -> None:
        if self.fail > 0:
            self.fail -= 1
            raise StorageError("send message failed: unreachable")
        super().send(queue_url, message, group_id=group_id)


@dataclass
class World:
    settings: Settings
    clock: FakeClock
    stores: Stores
    queues: FlakyQueues
    events: MemoryJobEvents
    dispatcher: Dispatcher
    reaper: Reaper
    account_id: str
    limits: Limits

    def submit(self) -> Job:
        return self.dispatcher.submit(
            self.account_id, "free", self.limits, JobRequest(WORKFLOW, [])
        ).job

    def admit_to(self, route: str, *, send_to: str | None) -> Job:
        """A job admitted straight to ``route``'s ring slot; its message sent to ``send_to``."""
        now = self.clock.now()
        job = Job(new_job_id(now), self.account_id, JobState.QUEUED, now, WORKFLOW)
        self.stores.jobs.admit(job, self.limits, now=now, route=route)
        if send_to is not None:
            self.queues.send(send_to, self.message(job, route))
        return self.stores.jobs.get(job.job_id)

    def message(self, job: Job, route: str = SHARED_ROUTE) -> RingMessage:
        share = self.limits.share
        return RingMessage(job.job_id, self.account_id, route, share.concurrency, share.ring_slots)

    def node(self, node_id: str) -> str:
        url = f"memory://node-{node_id}.fifo"
        self.stores.nodes.register(
            NodeInfo(node_id, NodeStatus.IDLE, heartbeat_at=self.clock.now(), queue_url=url)
        )
        return url

    def take(self, url: str, node_id: str) -> Received:
        """What an agent does: receive a message and claim its job."""
        received = self.queues.receive(url, wait_seconds=0, visibility_seconds=LEASE)
        assert received is not None
        claim = self.dispatcher.claim(received.message, node_id)
        assert claim.job is not None and claim.job.state is JobState.RUNNING
        return received

    def beat(self, node_id: str) -> None:
        self.stores.nodes.heartbeat(
            node_id,
            now=self.clock.now(),
            status=NodeStatus.BUSY,
            cached={},
            free_bytes=0,
            current_job=None,
            current_started_at=None,
            ewma_run_seconds=None,
            bandwidth_bytes_per_second=None,
        )

    def job(self, job: Job) -> Job:
        return self.stores.jobs.get(job.job_id)

    def state(self) -> Any:
        """Everything a pass could change, to compare two passes."""
        jobs = sorted(
            (j.job_id, j.state, j.in_ring, j.route, j.attempt, j.node_id)
            for j in (self.stores.jobs.get(live.job_id) for live in self.stores.jobs.live_jobs())
        )
        nodes = sorted((n.node_id, n.status, n.queued) for n in self.stores.nodes.snapshot()[0])
        depths = {url: self.queues.depth(url) for url in sorted(self.queues.queues)}
        c = self.stores.limits.counters(self.account_id, now=self.clock.now())
        return jobs, nodes, depths, (c.waiting, c.ring, c.running), len(self.events.published)

    def reap(self) -> ReaperReport:
        report = self.reaper.run()
        assert report.errors == 0
        return report


def make_world(**overrides: Any) -> World:
    settings = Settings(**overrides)
    clock = FakeClock()
    stores = memory_stores(settings)
    queues = FlakyQueues(clock)
    events = MemoryJobEvents()
    dispatcher = Dispatcher(stores, queues, settings, clock, shared_url=SHARED, events=events)
    account = stores.accounts.create(tier="free", name="", now=clock.now())
    return World(
        settings,
        clock,
        stores,
        queues,
        events,
        dispatcher,
        Reaper(dispatcher, dead_letter_urls=[DLQ]),
        account.account_id,
        account.limits(settings),
    )


@pytest.fixture
def world() -> World:
    return make_world()


def test_a_quiet_fleet_gives_the_reaper_nothing_to_do(world: World) -> None:
    world.node("n1")
    job = world.submit()

    report = world.reap()

    assert report.summary() == {
        "nodes_offline": 0,
        "jobs_requeued": 0,
        "jobs_failed": 0,
        "messages_rerouted": 0,
        "messages_resent": 0,
        "dead_letters": 0,
        "jobs_promoted": 0,
        "events_republished": 0,
        "nodes_by_status": {"idle": 1},
        "errors": 0,
    }
    assert world.job(job).state is JobState.QUEUED and world.queues.depth(SHARED) == 1


# -- (a) stale nodes ---------------------------------------------------------------------


def test_a_silent_node_goes_offline_and_its_waiting_messages_move_to_shared(world: World) -> None:
    node_url = world.node("n1")
    world.node("n2")
    job = world.admit_to("n1", send_to=node_url)
    world.clock.advance(world.settings.node_stale_seconds + 1)
    world.beat("n2")

    report = world.reap()

    assert report.nodes_offline == ["n1"]
    assert world.stores.nodes.get("n1").status is NodeStatus.OFFLINE
    assert world.stores.nodes.get("n2").status is NodeStatus.BUSY
    assert report.messages_rerouted == 1
    assert world.queues.depth(node_url) == 0 and world.queues.depth(SHARED) == 1
    assert world.job(job).route == SHARED_ROUTE
    assert report.nodes_by_status == {"offline": 1, "busy": 1}
    before = world.state()
    assert world.reap().nodes_offline == []
    assert world.state() == before


def test_a_node_heard_from_in_time_stays(world: World) -> None:
    world.node("n1")
    world.clock.advance(world.settings.node_stale_seconds)

    assert world.reap().nodes_offline == []
    assert world.stores.nodes.get("n1").status is NodeStatus.IDLE


# -- (b) leases lost with their node -----------------------------------------------------


def test_a_job_running_on_a_dead_node_is_queued_again_as_a_new_attempt(world: World) -> None:
    world.node("n1")
    job = world.submit()
    world.take(SHARED, "n1")
    world.clock.advance(LEASE + 1)  # n1 died: no heartbeat, no lease renewal

    report = world.reap()

    assert report.jobs_requeued == [job.job_id]
    again = world.job(job)
    assert again.state is JobState.QUEUED and again.in_ring and again.attempt == 1
    assert again.node_id is None
    # Its message came back when the dead agent stopped extending it: another node runs it.
    world.clock.advance(world.settings.ring_resend_after_seconds)
    assert world.reap().jobs_requeued == []
    assert world.queues.depth(SHARED) == 1  # the resend was deduplicated, not doubled
    world.node("n2")
    world.take(SHARED, "n2")
    assert world.job(job).attempt == 2 and world.job(job).node_id == "n2"


def test_a_dead_nodes_job_out_of_attempts_fails_with_its_event() -> None:
    world = make_world(max_attempts=1)
    world.node("n1")
    job = world.submit()
    world.take(SHARED, "n1")
    world.clock.advance(LEASE + 1)

    report = world.reap()

    assert report.jobs_failed == [job.job_id]
    failed = world.job(job)
    assert failed.state is JobState.FAILED and failed.error is not None
    assert failed.error["code"] == "max_attempts_exceeded"
    assert [e["type"] for e in world.events.of_job(job.job_id)] == ["job.failed"]
    assert world.stores.limits.counters(world.account_id, now=world.clock.now()).running == 0
    before = world.state()
    world.reap()
    assert world.state() == before


def test_a_job_whose_message_was_lost_with_its_node_is_sent_to_shared(world: World) -> None:
    node_url = world.node("n1")
    job = world.admit_to("n1", send_to=node_url)
    received = world.take(node_url, "n1")
    world.queues.delete(received)  # the node queue went with the instance
    world.clock.advance(LEASE + 1)

    first = world.reap()
    assert first.jobs_requeued == [job.job_id] and first.messages_rerouted == 0
    world.clock.advance(world.settings.ring_resend_after_seconds)
    second = world.reap()

    assert second.messages_resent == [job.job_id]
    assert world.job(job).route == SHARED_ROUTE and world.queues.depth(SHARED) == 1
    world.node("n2")
    world.take(SHARED, "n2")
    assert world.job(job).node_id == "n2"


def test_a_job_released_as_its_node_queue_went_is_sent_to_shared(world: World) -> None:
    node_url = world.node("n1")
    job = world.admit_to("n1", send_to=node_url)
    received = world.take(node_url, "n1")
    # Terminated past the drain grace: the agent releases its job, its queue is deleted.
    world.stores.jobs.release(job.job_id, "n1", now=world.clock.now())
    world.queues.delete(received)
    world.stores.nodes.remove("n1")
    world.clock.advance(world.settings.ring_resend_after_seconds)

    assert world.reap().messages_resent == [job.job_id]
    assert world.job(job).route == SHARED_ROUTE and world.queues.depth(SHARED) == 1


def test_a_dead_nodes_job_whose_message_waits_in_its_queue_moves_to_shared(world: World) -> None:
    node_url = world.node("n1")
    job = world.admit_to("n1", send_to=node_url)
    world.take(node_url, "n1")
    world.clock.advance(LEASE + 1)

    report = world.reap()

    assert report.jobs_requeued == [job.job_id] and report.messages_rerouted == 1
    assert world.queues.depth(node_url) == 0 and world.queues.depth(SHARED) == 1
    assert world.job(job).route == SHARED_ROUTE


def test_an_expired_lease_on_a_live_node_is_left_to_its_message(world: World) -> None:
    world.node("n1")
    job = world.submit()
    world.take(SHARED, "n1")
    world.clock.advance(LEASE + 1)
    world.beat("n1")  # the node lives; its claim on the message decides

    assert world.reap().jobs_requeued == []
    assert world.job(job).state is JobState.RUNNING


# -- (c) messages never sent --------------------------------------------------------------


def test_a_job_whose_send_failed_is_sent_after_the_grace(world: World) -> None:
    world.queues.fail = 1
    job = world.submit()
    assert world.queues.depth(SHARED) == 0

    world.clock.advance(world.settings.ring_resend_after_seconds - 1)
    assert world.reap().messages_resent == []  # its sender may still be sending
    world.clock.advance(1)
    report = world.reap()

    assert report.messages_resent == [job.job_id]
    assert world.queues.depth(SHARED) == 1
    before = world.state()
    world.clock.advance(60)
    world.reap()
    assert world.state() == before  # sent again within the dedup window: dropped


def test_a_job_waiting_its_turn_is_never_doubled(world: World) -> None:
    job = world.submit()  # sent; no node takes it

    world.clock.advance(world.settings.ring_resend_after_seconds)
    resent = world.reap()
    world.clock.advance(300)
    late = world.reap()

    assert resent.messages_resent == [job.job_id]  # SQS deduplicates by job id
    assert late.messages_resent == []  # past the dedup window: left alone
    assert world.queues.depth(SHARED) == 1


def test_an_unsent_job_routed_to_a_node_that_left_goes_to_shared(world: World) -> None:
    world.node("n1")
    job = world.admit_to("n1", send_to=None)
    world.stores.nodes.remove("n1")
    world.clock.advance(world.settings.ring_resend_after_seconds)

    assert world.reap().messages_resent == [job.job_id]
    assert world.job(job).route == SHARED_ROUTE and world.queues.depth(SHARED) == 1


def test_an_unsent_job_for_a_live_node_goes_to_its_queue(world: World) -> None:
    node_url = world.node("n1")
    job = world.admit_to("n1", send_to=None)
    world.clock.advance(world.settings.ring_resend_after_seconds)
    world.beat("n1")

    assert world.reap().messages_resent == [job.job_id]
    assert world.job(job).route == "n1" and world.queues.depth(node_url) == 1


# -- (d) backlogs behind a free slot --------------------------------------------------------


def test_a_backlog_behind_a_free_slot_is_promoted(world: World) -> None:
    world.node("n1")
    first, _second, waiting = world.submit(), world.submit(), world.submit()
    assert not world.job(waiting).in_ring
    received = world.queues.receive(SHARED, wait_seconds=0, visibility_seconds=LEASE)
    assert received is not None and received.message.job_id == first.job_id
    # The agent claims through the store and dies before promoting (no Dispatcher).
    world.stores.jobs.claim(
        received.message, "n1", now=world.clock.now(), lease_seconds=LEASE, max_attempts=3
    )
    world.stores.jobs.finish(first.job_id, "n1", JobState.COMPLETED, now=world.clock.now())
    world.queues.delete(received)
    world.beat("n1")

    report = world.reap()

    assert report.jobs_promoted == [waiting.job_id]
    promoted = world.job(waiting)
    assert promoted.in_ring and promoted.ring_at == world.clock.now()
    assert world.queues.depth(SHARED) == 2  # its message went out with it
    before = world.state()
    assert world.reap().jobs_promoted == []
    assert world.state() == before


def test_a_backlog_behind_a_full_ring_waits(world: World) -> None:
    world.submit(), world.submit()
    waiting = world.submit()

    assert world.reap().jobs_promoted == []
    assert not world.job(waiting).in_ring


# -- (e) dead letters ---------------------------------------------------------------------


def test_a_dead_lettered_message_fails_its_queued_job_with_the_reason(world: World) -> None:
    job = world.admit_to(SHARED_ROUTE, send_to=DLQ)  # SQS moved it there after 10 receives

    report = world.reap()

    assert report.dead_letters == 1 and report.jobs_failed == [job.job_id]
    failed = world.job(job)
    assert failed.state is JobState.FAILED and failed.error is not None
    assert failed.error["code"] == "message_dead_lettered"
    assert [e["type"] for e in world.events.of_job(job.job_id)] == ["job.failed"]
    assert world.queues.depth(DLQ) == 0
    counters = world.stores.limits.counters(world.account_id, now=world.clock.now())
    assert counters.ring == 0 and counters.waiting == 0
    before = world.state()
    assert world.reap().dead_letters == 0
    assert world.state() == before


def test_a_dead_lettered_copy_of_a_running_job_is_only_deleted(world: World) -> None:
    world.node("n1")
    job = world.submit()
    world.take(SHARED, "n1")
    world.queues.send(DLQ, world.message(job))

    report = world.reap()

    assert report.dead_letters == 1 and report.jobs_failed == []
    assert world.job(job).state is JobState.RUNNING and world.queues.depth(DLQ) == 0


def test_a_dead_letter_of_a_job_gone_by_ttl_is_deleted(world: World) -> None:
    ghost = Job(new_job_id(world.clock.now()), world.account_id, JobState.QUEUED, 0.0, WORKFLOW)
    world.queues.send(DLQ, world.message(ghost))

    assert world.reap().dead_letters == 1
    assert world.queues.depth(DLQ) == 0


# -- (f) events whose publication failed ----------------------------------------------------


def test_an_event_whose_publication_failed_is_published_by_the_reaper(world: World) -> None:
    world.node("n1")
    job = world.submit()
    world.take(SHARED, "n1")
    world.events.fail = 1
    world.dispatcher.finish(job, "n1", JobState.COMPLETED, world.limits.share)
    assert world.events.of_job(job.job_id) == []
    world.clock.advance(61)
    world.beat("n1")

    assert world.reap().events_republished == 1
    assert [e["type"] for e in world.events.of_job(job.job_id)] == ["job.completed"]
    assert world.reap().events_republished == 0


# -- failures -------------------------------------------------------------------------------


def test_a_failing_step_is_counted_and_the_pass_goes_on(world: World) -> None:
    world.queues.fail = 1
    job = world.submit()
    world.clock.advance(world.settings.ring_resend_after_seconds)
    world.queues.fail = 1  # the resend fails too

    report = world.reaper.run()

    assert report.errors == 1 and report.messages_resent == []
    assert world.reap().messages_resent == [job.job_id]  # the next pass sends it
