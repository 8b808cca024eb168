"""Admission and promotion during a rollout: a job only some environments can run keeps to
their nodes from the ring and from its account's backlog; outside a rollout a promotion
spends no read on it."""

from __future__ import annotations

from typing import Any

import pytest

from comfyfleet.clock import FakeClock
from comfyfleet.domain import SHARED_ROUTE, Limits, NodeInfo, NodeStatus
from comfyfleet.events import MemoryJobEvents
from comfyfleet.queues import MemoryQueues
from comfyfleet.router import NodeSnapshot
from comfyfleet.scheduling import Dispatcher, JobRequest
from comfyfleet.settings import Settings
from comfyfleet.store import Stores
from comfyfleet.store.memory import memory_stores

SHARED = "memory://shared"
LIMITS = Limits(requests_per_minute=60, concurrency=2, queue_depth=10, ring_slots=1)
GRAPH = {"1": {"class_type": "EmptyImage", "inputs": {}}}


@pytest.fixture
def world(settings: Settings) -> tuple[Dispatcher, Stores, str]:
    clock = FakeClock()
    stores = memory_stores(settings)
    dispatcher = Dispatcher(
        stores,
        MemoryQueues(clock.now),
        settings,
        clock,
        shared_url=SHARED,
        events=MemoryJobEvents(),
        snapshot=NodeSnapshot(stores.nodes.snapshot, ttl=0),
    )
    account = stores.accounts.create(tier="free", name="", now=clock.now()).account_id
    return dispatcher, stores, account


def serve(dispatcher: Dispatcher, stores: Stores, node_id: str, environment: str) -> None:
    now = dispatcher.clock.now()
    stores.nodes.register(
        NodeInfo(
            node_id,
            NodeStatus.IDLE,
            now,
            queue_url=f"memory://{node_id}",
            environment_id=environment,
        )
    )


def claim_first(dispatcher: Dispatcher, node_id: str) -> None:
    received = dispatcher.queues.receive(SHARED, wait_seconds=0, visibility_seconds=60)
    assert received is not None
    dispatcher.claim(received.message, node_id)


def submit(dispatcher: Dispatcher, account: str, environments: list[str] | None) -> Any:
    request = JobRequest(GRAPH, [], environments=environments)
    return dispatcher.submit(account, "free", LIMITS, request).job


def test_a_restricted_job_promoted_from_the_backlog_goes_to_its_environments_node(
    world: tuple[Dispatcher, Stores, str],
) -> None:
    dispatcher, stores, account = world
    serve(dispatcher, stores, "old-1", "old")
    serve(dispatcher, stores, "new-1", "new")
    first = submit(dispatcher, account, None)
    waiting = submit(dispatcher, account, ["new"])
    assert first.route == SHARED_ROUTE and not stores.jobs.get(waiting.job_id).in_ring

    claim_first(dispatcher, "old-1")  # frees the account's ring slot: a promotion

    promoted = stores.jobs.get(waiting.job_id)
    assert promoted.in_ring and promoted.route == "new-1"
    assert dispatcher.queues.depth("memory://new-1") == 1  # type: ignore[attr-defined]


def test_with_one_environment_in_service_a_promotion_reads_no_job(
    world: tuple[Dispatcher, Stores, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    dispatcher, stores, account = world
    serve(dispatcher, stores, "old-1", "old")
    submit(dispatcher, account, None)
    waiting = submit(dispatcher, account, ["old"])
    reads: list[str] = []
    read = stores.jobs.get
    monkeypatch.setattr(stores.jobs, "get", lambda job_id: reads.append(job_id) or read(job_id))

    claim_first(dispatcher, "old-1")

    assert reads == []
    assert stores.jobs.get(waiting.job_id).route == SHARED_ROUTE  # cost routing, as ever
