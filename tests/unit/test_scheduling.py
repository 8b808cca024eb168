"""The Dispatcher on in-memory stores and queues: admission, counters, promotion, routing."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from comfyfleet.clock import FakeClock
from comfyfleet.domain import Counters, JobState, Limits, NodeInfo, NodeStatus, RingMessage
from comfyfleet.errors import LimitExceeded, StorageError
from comfyfleet.events import MemoryJobEvents
from comfyfleet.queues import MemoryQueues
from comfyfleet.scheduling import Dispatcher, JobRequest
from comfyfleet.settings import Settings
from comfyfleet.store import Stores
from comfyfleet.store.memory import memory_stores
from comfyfleet.store.ports import ClaimOutcome

SHARED = "https://sqs/shared"
FREE = Limits(requests_per_minute=60, concurrency=2, queue_depth=5, ring_slots=2)
REQUEST = JobRequest({"1": {"class_type": "EmptyImage", "inputs": {}}}, [])


class CountingLimits:
    def __init__(self, inner: Any) -> None:
        self.inner, self.reads = inner, 0

    def counters(self, account_id: str, *, now: float) -> Counters:
        self.reads += 1
        result: Counters = self.inner.counters(account_id, now=now)
        return result


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_800_000_000.0)


@pytest.fixture
def stores(settings: Settings) -> Stores:
    return memory_stores(settings)


@pytest.fixture
def queues(clock: FakeClock) -> MemoryQueues:
    return MemoryQueues(clock.now)


@pytest.fixture
def dispatcher(
    stores: Stores, queues: MemoryQueues, settings: Settings, clock: FakeClock
) -> Dispatcher:
    return Dispatcher(stores, queues, settings, clock, shared_url=SHARED, events=MemoryJobEvents())


def account(stores: Stores, clock: FakeClock) -> str:
    return stores.accounts.create(tier="free", name="", now=clock.now()).account_id


def test_jobs_take_ring_slots_then_wait_in_the_backlog_with_positions(
    dispatcher: Dispatcher, stores: Stores, queues: MemoryQueues, clock: FakeClock
) -> None:
    acct = account(stores, clock)

    admissions = [dispatcher.submit(acct, "free", FREE, REQUEST) for _ in range(4)]

    assert [a.job.in_ring for a in admissions] == [True, True, False, False]
    assert [a.queue_position for a in admissions] == [1, 2, 3, 4]
    assert admissions[-1].counters.window_requests == 4
    assert admissions[3].estimated_wait_seconds > admissions[0].estimated_wait_seconds
    assert queues.depth(SHARED) == 2


def test_counters_are_read_at_most_once_a_second_per_account(
    stores: Stores, queues: MemoryQueues, settings: Settings, clock: FakeClock
) -> None:
    counting = CountingLimits(stores.limits)
    dispatcher = Dispatcher(
        dataclasses.replace(stores, limits=counting),
        queues,
        settings,
        clock,
        shared_url=SHARED,
        events=MemoryJobEvents(),
    )
    acct = account(stores, clock)

    roomy = Limits(requests_per_minute=60, concurrency=2, queue_depth=50, ring_slots=2)

    for _ in range(5):
        dispatcher.submit(acct, "free", roomy, REQUEST)
        clock.advance(0.1)
    clock.advance(1.0)
    dispatcher.submit(acct, "free", roomy, REQUEST)

    assert counting.reads == 2


def test_a_refusal_carries_the_counters_for_the_headers(
    dispatcher: Dispatcher, stores: Stores, clock: FakeClock
) -> None:
    acct = account(stores, clock)
    for _ in range(5):
        dispatcher.submit(acct, "free", FREE, REQUEST)

    with pytest.raises(LimitExceeded) as refused:
        dispatcher.submit(acct, "free", FREE, REQUEST)

    assert refused.value.code == "queue_full"
    assert refused.value.counters.waiting == 5 and refused.value.counters.window_requests == 5


def test_a_claim_and_a_finish_refill_the_ring_from_the_backlog(
    dispatcher: Dispatcher, stores: Stores, queues: MemoryQueues, clock: FakeClock
) -> None:
    acct = account(stores, clock)
    jobs = [dispatcher.submit(acct, "free", FREE, REQUEST).job for _ in range(4)]

    received = queues.receive(SHARED)
    assert received is not None
    claim = dispatcher.claim(received.message, "node-1")
    assert claim.outcome is ClaimOutcome.CLAIMED and claim.job is not None
    assert queues.depth(SHARED) == 2  # concurrency 2 = 1 running + 1 in the ring: no room

    dispatcher.finish(claim.job, "node-1", JobState.COMPLETED, received.message.share)
    queues.delete(received)

    assert queues.depth(SHARED) == 2  # jobs[1] and the promoted jobs[2]
    assert stores.jobs.get(jobs[2].job_id).in_ring
    assert not stores.jobs.get(jobs[3].job_id).in_ring


def test_cancelling_a_queued_job_promotes_the_next(
    dispatcher: Dispatcher, stores: Stores, queues: MemoryQueues, clock: FakeClock
) -> None:
    acct = account(stores, clock)
    first, _, third = (dispatcher.submit(acct, "free", FREE, REQUEST).job for _ in range(3))

    cancelled = dispatcher.cancel(first.job_id, FREE.share)

    assert cancelled.state is JobState.CANCELLED
    assert stores.jobs.get(third.job_id).in_ring
    received = queues.receive(SHARED)
    assert received is not None and received.message.job_id == first.job_id
    assert dispatcher.claim(received.message, "n").outcome is ClaimOutcome.GONE


def test_a_job_goes_to_the_queue_of_the_node_holding_its_model(
    dispatcher: Dispatcher, stores: Stores, queues: MemoryQueues, clock: FakeClock
) -> None:
    for node_id, cached in (("i-warm", {"k": 8_000_000_000}), ("i-cold", {})):
        stores.nodes.register(
            NodeInfo(
                node_id,
                NodeStatus.IDLE,
                clock.now(),
                queue_url=f"https://sqs/{node_id}",
                cached=cached,
            )
        )
    acct = account(stores, clock)
    request = JobRequest(
        REQUEST.workflow, [{"key": "k", "folder": "checkpoints", "url": "u", "filename": "f"}]
    )

    admission = dispatcher.submit(acct, "free", FREE, request)

    assert admission.job.route == "i-warm"
    assert queues.depth("https://sqs/i-warm") == 1 and queues.depth(SHARED) == 0
    assert stores.nodes.get("i-warm").queued == 1


def test_a_failed_send_keeps_the_job_admitted_for_the_reaper(
    stores: Stores, settings: Settings, clock: FakeClock
) -> None:
    class Unreachable(MemoryQueues):
        def send(
            self, queue_url: str, message: RingMessage, *, group_id: str | None = None
        ) -> None:
            raise StorageError("send message failed: timeout")

    dispatcher = Dispatcher(
        stores, Unreachable(clock.now), settings, clock, shared_url=SHARED, events=MemoryJobEvents()
    )
    acct = account(stores, clock)

    admission = dispatcher.submit(acct, "free", FREE, REQUEST)

    stored = stores.jobs.get(admission.job.job_id)
    assert stored.state is JobState.QUEUED and stored.in_ring


def test_a_leaving_nodes_queue_is_drained_back_to_the_shared_queue(
    dispatcher: Dispatcher, stores: Stores, queues: MemoryQueues, clock: FakeClock
) -> None:
    for node_id, cached in (("i-warm", {"k": 8_000_000_000}), ("i-cold", {})):
        stores.nodes.register(
            NodeInfo(
                node_id,
                NodeStatus.IDLE,
                clock.now(),
                queue_url=f"https://sqs/{node_id}",
                cached=cached,
            )
        )
    acct = account(stores, clock)
    request = JobRequest(REQUEST.workflow, [{"key": "k", "folder": "checkpoints"}])
    jobs = [dispatcher.submit(acct, "free", FREE, request).job for _ in range(2)]
    cancelled = dispatcher.cancel(jobs[1].job_id, FREE.share)
    assert cancelled.state is JobState.CANCELLED

    moved = dispatcher.drain_node_queue("i-warm", "https://sqs/i-warm")

    assert moved == 1 and queues.depth("https://sqs/i-warm") == 0
    assert stores.jobs.get(jobs[0].job_id).route == "shared"
    received = queues.receive(SHARED)
    assert received is not None and received.message.job_id == jobs[0].job_id
    assert received.message.route == "shared"
    assert stores.nodes.get("i-warm").queued == 0
    claim = dispatcher.claim(received.message, "i-cold")
    assert claim.outcome is ClaimOutcome.CLAIMED
