"""A node that lacks a class a job uses hands the job back (comfyfleet.handback): to a node of
an environment that has it, else to wait in the shared queue, never failing it for the lack
until it has been handed back MAX_HAND_BACKS times or no environment in service is left."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from comfyfleet.clock import FakeClock
from comfyfleet.domain import SHARED_ROUTE, Job, JobState, Limits, NodeInfo, NodeStatus
from comfyfleet.events import MemoryJobEvents
from comfyfleet.handback import (
    HAND_BACK_DELAY_SECONDS,
    MAX_HAND_BACKS,
    NODE_CLASS_UNAVAILABLE,
    hand_back,
)
from comfyfleet.queues import MemoryQueues, Received
from comfyfleet.router import NodeSnapshot
from comfyfleet.scheduling import Dispatcher, JobRequest
from comfyfleet.settings import Settings
from comfyfleet.store import Stores
from comfyfleet.store.memory import memory_stores
from comfyfleet.store.ports import ClaimOutcome

SHARED = "memory://shared"
LIMITS = Limits(requests_per_minute=60, concurrency=2, queue_depth=10, ring_slots=2)
GRAPH = {
    "1": {"class_type": "EmptyImage", "inputs": {}},
    "2": {"class_type": "FancyUpscale", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0]}},
}
MISSING = {"FancyUpscale": ["2"]}


@dataclass
class Fleet:
    clock: FakeClock
    stores: Stores
    queues: MemoryQueues
    events: MemoryJobEvents
    dispatcher: Dispatcher
    account: str

    def node(self, node_id: str, environment: str, **fields: object) -> None:
        info = NodeInfo(
            node_id,
            NodeStatus.IDLE,
            self.clock.now(),
            queue_url=f"memory://{node_id}",
            environment_id=environment,
        )
        for name, value in fields.items():
            setattr(info, name, value)
        self.stores.nodes.register(info)

    def submit(self, environments: list[str] | None = None) -> Job:
        request = JobRequest(GRAPH, [], environments=environments)
        return self.dispatcher.submit(self.account, "free", LIMITS, request).job

    def take(self, queue_url: str, node_id: str) -> tuple[Received, Job]:
        received = self.queues.receive(queue_url, visibility_seconds=90)
        assert received is not None
        claim = self.dispatcher.claim(received.message, node_id)
        assert claim.outcome is ClaimOutcome.CLAIMED and claim.job is not None
        return received, claim.job

    def hand_back(self, received: Received, job: Job, node_id: str, environment: str) -> Job:
        return hand_back(
            self.dispatcher,
            received,
            job,
            node_id=node_id,
            environment_id=environment,
            missing=MISSING,
        )


@pytest.fixture
def fleet(settings: Settings) -> Fleet:
    clock = FakeClock()
    stores = memory_stores(settings)
    queues = MemoryQueues(clock.now)
    events = MemoryJobEvents()
    dispatcher = Dispatcher(
        stores,
        queues,
        settings,
        clock,
        shared_url=SHARED,
        events=events,
        snapshot=NodeSnapshot(stores.nodes.snapshot, ttl=0),  # every change seen at once
    )
    account = stores.accounts.create(tier="free", name="", now=clock.now()).account_id
    return Fleet(clock, stores, queues, events, dispatcher, account)


def test_a_job_is_handed_to_a_node_of_another_environment_as_if_never_claimed(
    fleet: Fleet,
) -> None:
    fleet.node("old-1", "old")
    fleet.node("new-1", "new")
    job = fleet.submit()  # validated before the rollout: any node may take it
    received, claimed = fleet.take(SHARED, "old-1")

    handed = fleet.hand_back(received, claimed, "old-1", "old")

    assert handed.state is JobState.QUEUED and handed.in_ring and handed.node_id is None
    assert handed.attempt == 0  # the attempt is given back: nothing failed
    assert handed.handed_back_by == ["old"] and handed.route == "new-1"
    assert fleet.queues.depth(SHARED) == 0  # its message moved to the new node's queue
    counters = fleet.stores.limits.counters(fleet.account, now=fleet.clock.now())
    assert (counters.waiting, counters.ring, counters.running) == (1, 1, 0)
    assert fleet.stores.nodes.get("new-1").queued == 1
    _, rerun = fleet.take("memory://new-1", "new-1")
    assert rerun.job_id == job.job_id and rerun.attempt == 1
    assert fleet.stores.jobs.get(job.job_id).handed_back_by == ["old"]


def test_with_no_node_of_its_environments_live_it_waits_hidden_in_the_shared_queue(
    fleet: Fleet,
) -> None:
    fleet.node("old-1", "old")
    fleet.node("new-1", "new", status=NodeStatus.DRAINING)
    job = fleet.submit(environments=["new"])  # new-1 takes no jobs: the shared queue
    received, claimed = fleet.take(SHARED, "old-1")

    handed = fleet.hand_back(received, claimed, "old-1", "old")

    assert handed.state is JobState.QUEUED and handed.route == SHARED_ROUTE
    assert fleet.queues.receive(SHARED) is None  # not straight back to the node it left
    fleet.clock.advance(HAND_BACK_DELAY_SECONDS)
    again = fleet.queues.receive(SHARED)
    assert again is not None and again.message.job_id == job.job_id


def test_a_job_handed_back_too_often_fails_node_class_unavailable(fleet: Fleet) -> None:
    fleet.node("old-1", "old")
    job = fleet.submit(environments=["new"])  # new's nodes have gone meanwhile
    for round in range(MAX_HAND_BACKS + 1):
        fleet.clock.advance(HAND_BACK_DELAY_SECONDS)
        fleet.node("old-1", "old")  # its heartbeat
        received, claimed = fleet.take(SHARED, "old-1")
        after = fleet.hand_back(received, claimed, "old-1", "old")
        if round < MAX_HAND_BACKS:
            assert after.state is JobState.QUEUED and len(after.handed_back_by) == round + 1

    failed = fleet.stores.jobs.get(job.job_id)
    assert failed.state is JobState.FAILED and failed.error is not None
    assert failed.error["code"] == NODE_CLASS_UNAVAILABLE
    assert failed.error["node_id"] == "2" and failed.error["node_type"] == "FancyUpscale"
    assert failed.error["details"]["class_types"] == ["FancyUpscale"]
    assert [event["type"] for event in fleet.events.of_job(job.job_id)] == ["job.failed"]
    assert fleet.queues.depth(SHARED) == 0
    counters = fleet.stores.limits.counters(fleet.account, now=fleet.clock.now())
    assert (counters.waiting, counters.ring, counters.running) == (0, 0, 0)


def test_when_every_environment_in_service_lacks_a_class_the_job_fails_at_once(
    fleet: Fleet,
) -> None:
    fleet.node("old-1", "old")
    job = fleet.submit()  # structural validation only: no catalogue was published
    received, claimed = fleet.take(SHARED, "old-1")

    failed = fleet.hand_back(received, claimed, "old-1", "old")

    assert failed.state is JobState.FAILED and failed.error is not None
    assert failed.error["code"] == NODE_CLASS_UNAVAILABLE
    assert failed.error["details"]["environments"] == ["old"]
    assert fleet.stores.jobs.get(job.job_id).state is JobState.FAILED


def test_a_job_in_the_nodes_own_queue_moves_to_the_shared_one(fleet: Fleet) -> None:
    fleet.node("old-1", "old")
    fleet.node("new-1", "new", heartbeat_at=fleet.clock.now() - 3600)  # stale
    job = fleet.submit(environments=["new", "old"])  # what the catalogues said then
    assert job.route == "old-1"
    received, claimed = fleet.take("memory://old-1", "old-1")

    handed = fleet.hand_back(received, claimed, "old-1", "old")

    assert handed.route == SHARED_ROUTE and fleet.queues.depth("memory://old-1") == 0
    moved = fleet.queues.receive(SHARED)  # where a node of "new" will find it
    assert moved is not None and moved.message.route == SHARED_ROUTE
    assert fleet.stores.nodes.get("old-1").queued == 0
