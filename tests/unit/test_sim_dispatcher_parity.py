"""The simulation's ring serves accounts in the order the real Dispatcher does.

The same burst of jobs from a free, a pro and an enterprise account goes once through
scheduling.Dispatcher on the in-memory stores and queues (an agent's receive → claim →
run → finish, by hand) and once through comfyfleet.sim; both serve the same accounts in
the same order: ring slots per tier, the backlog, promotion to the back of the queue.
"""

from __future__ import annotations

from comfyfleet.clock import FakeClock
from comfyfleet.domain import JobState, Limits, NodeInfo, NodeStatus
from comfyfleet.events import MemoryJobEvents
from comfyfleet.queues import MemoryQueues
from comfyfleet.scheduling import Dispatcher, JobRequest
from comfyfleet.settings import Settings
from comfyfleet.sim import scenario
from comfyfleet.sim.engine import Simulation
from comfyfleet.sim.workload import WORKFLOW_CLASSES, Arrival
from comfyfleet.store.memory import memory_stores
from comfyfleet.store.ports import ClaimOutcome

SHARED = "sim://shared"
NODE_QUEUE = "sim://node-0"
BURST = ["free"] * 6 + ["pro"] * 6 + ["enterprise"] * 6  # submitted in this order at t=0
RUN = WORKFLOW_CLASSES["sd15"].run_seconds
REQUEST = JobRequest({"1": {"class_type": "EmptyImage", "inputs": {}}}, [])


def _settings() -> Settings:
    # One node that never goes stale; least_loaded sends every job to its queue.
    return Settings(routing_policy="least_loaded", node_stale_seconds=10**6)


def _dispatcher_order() -> list[str]:
    settings = _settings()
    clock = FakeClock(0.0)
    stores = memory_stores(settings)
    queues = MemoryQueues(clock.now)
    dispatcher = Dispatcher(
        stores, queues, settings, clock, shared_url=SHARED, events=MemoryJobEvents()
    )
    stores.nodes.register(NodeInfo("0", NodeStatus.IDLE, clock.now(), queue_url=NODE_QUEUE))
    accounts = {
        tier: stores.accounts.create(tier=tier, name=tier, now=0.0).account_id
        for tier in dict.fromkeys(BURST)
    }
    tier_of = {account_id: tier for tier, account_id in accounts.items()}
    served: list[str] = []
    running = None

    def take() -> None:
        nonlocal running
        received = queues.receive(NODE_QUEUE, wait_seconds=0, visibility_seconds=600)
        if received is None:
            received = queues.receive(SHARED, wait_seconds=0, visibility_seconds=600)
        if received is None:
            running = None
            return
        claim = dispatcher.claim(received.message, "0")
        assert claim.outcome is ClaimOutcome.CLAIMED and claim.job is not None
        served.append(tier_of[received.message.account_id])
        running = (received, claim.job)

    for index, tier in enumerate(BURST):
        limits = Limits.of(settings.tier(tier))
        dispatcher.submit(accounts[tier], tier, limits, REQUEST)
        if index == 0:
            take()  # the idle node takes the first job as it arrives
    while running is not None:
        received, job = running
        clock.advance(RUN)
        dispatcher.finish(job, "0", JobState.COMPLETED, received.message.share)
        queues.delete(received)
        take()
    return served


def _simulation_order() -> list[str]:
    s = scenario("steady", nodes=1, run_spread=0.0, failures_per_node_hour=0.0, vram_load_gib_s=1.0)
    sim = Simulation(s, "least_loaded", _settings(), seed=1)
    served: list[str] = []
    claim = sim._claim

    def recording_claim(node: object, message: object, from_shared: bool, now: float) -> None:
        served.append(sim.account_of[message.body].name)  # type: ignore[attr-defined]
        claim(node, message, from_shared, now)  # type: ignore[arg-type]

    sim._claim = recording_claim  # type: ignore[method-assign]
    sim.run(Arrival(0.0, tier, tier, "sd15", ()) for tier in BURST)
    return served


def test_the_simulation_serves_a_burst_in_the_dispatchers_order() -> None:
    expected = _dispatcher_order()

    served = _simulation_order()

    assert len(expected) == len(BURST)
    assert served == expected
    assert expected[:4] == ["free", "free", "pro", "pro"]  # ring slots, then round robin
