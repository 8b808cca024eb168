"""The discrete-event fleet: admission, the ring, nodes, caches, failures, on virtual time.

What is the project's own code here, called as the services call it:
- admission's has-room rule (``scheduling._has_room``) and promotion's slot rule
  (``scheduling.ring_has_slot``): ring slots per account, the backlog, promotion at claim,
  finish and (for a dead node's job) requeue, oldest backlog job first, to the back;
- routing: ``router.node_option``, ``router.shared_start`` and ``router.choose_route``
  (see comfyfleet.sim.routing for the candidate set);
- the LRU choice of ``cache_policy.lru_evictions``, as gpu_agent.cache calls it (in
  comfyfleet.sim.nodes, with the rest of what a node is);
- the message group of ``RingMessage.group_id``, on a FIFO model (comfyfleet.sim.fifo);
- the agent's receive order: its own queue first, then the shared queue;
- with autoscaling, the stack's scaling rules (comfyfleet.autoscaling, in sim.fleet_size).
The stores' transactions are replaced by the same counter moves on plain fields: the
in-memory stores rescan every job for a backlog read, which a million jobs cannot afford.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from comfyfleet.autoscaling import DEFAULT_IDLE_MINUTES
from comfyfleet.domain import SHARED_ROUTE, Counters, Limits, NodeStatus, RingMessage
from comfyfleet.router import ModelNeed
from comfyfleet.scheduling import _has_room as has_room
from comfyfleet.scheduling import ring_has_slot
from comfyfleet.settings import Settings
from comfyfleet.sim.fifo import FifoMessage, FifoQueue
from comfyfleet.sim.nodes import SimNode, new_node, sync_models
from comfyfleet.sim.routing import FleetView
from comfyfleet.sim.workload import WORKFLOW_CLASSES, Arrival, Scenario

_FINISH, _FAIL, _REAP, _REPAIR, _POLL, _WAKE, NEXT_EVENT_KIND = range(7)  # a subclass's from there
Handler = Callable[[float, int, int], None]
HELD = math.inf  # an agent keeps its message in flight while the job runs
TIMELINE_BINS = 200
FAIRNESS_PERIOD_SECONDS = 120.0  # backlog periods shorter than this are not measured


@dataclass(slots=True)
class _Account:
    name: str
    limits: Limits
    weight: float
    ring: int = 0
    running: int = 0
    backlog: deque[int] = field(default_factory=deque)
    window_start: int = -1
    window_count: int = 0
    backlog_since: float = 0.0
    period_starts: int = 0  # claims of its jobs since its backlog last formed
    backlogged_seconds: float = 0.0  # over its long backlog periods only
    backlogged_starts: int = 0


@dataclass
class Outcome:
    """What one policy's run measured (raw; comfyfleet.sim.metrics summarises it)."""

    policy: str
    nodes: int
    waits: list[float]
    cold_starts: int
    completed: int
    rejected: int
    bytes_downloaded: int
    sampling_seconds: float
    node_seconds: float
    makespan: float
    fairness_samples: list[float]  # per backlogged account: starts/s while backlogged ÷ weight
    sampling_spans: list[tuple[float, float]] = field(default_factory=list)
    failures: int = 0
    billed_seconds: float = 0.0  # node-seconds paid for: launch (boot included) to removal
    first_after_idle_waits: list[float] = field(default_factory=list)
    fleet_sizes: list[tuple[float, int]] = field(default_factory=list)  # (time, launched)


class Simulation:
    """One fleet of ``s.nodes``, one routing policy, one stream of arrivals.

    ``idle_minutes``: how long a span without any job waiting or running must last for the
    next job to count as the first after an idle period (``Outcome.first_after_idle_waits``).
    """

    def __init__(
        self,
        s: Scenario,
        policy: str,
        settings: Settings,
        *,
        seed: int,
        keep_spans: bool = False,
        idle_minutes: int = DEFAULT_IDLE_MINUTES,
    ) -> None:
        self.s = s
        self.policy = policy
        self.settings = settings
        self.rng = random.Random(f"{seed}:{policy}")  # random routing, traces' run times
        self.failures = random.Random(f"{seed}:failures")  # the same for every policy
        self.keep_spans = keep_spans
        self.view = FleetView(settings)
        self.shared: FifoQueue[int] = FifoQueue()
        self.shared_queued = 0
        self.events: list[tuple[float, int, int, int, int]] = []
        self._seq = 0
        self.accounts: dict[str, _Account] = {}
        self.idle: deque[int] = deque()
        self.nodes: list[SimNode] = []
        # jobs admitted and not finished; since when there were none
        self.active, self.quiet_since, self.idle_seconds = 0, 0.0, 60.0 * idle_minutes
        self.after_idle: set[int] = set()
        # per job
        self.submitted: list[float] = []
        self.account_of: list[_Account] = []
        self.needs: list[tuple[ModelNeed, ...]] = []
        self.workflow: list[str] = []
        self.run_factor: list[float] = []
        self.started: list[float] = []
        self.cold: list[bool] = []
        self.out = Outcome(policy, s.nodes, [], 0, 0, 0, 0, 0.0, 0.0, 0.0, [])
        self._start_fleet()

    def _start_fleet(self) -> None:
        """The fleet at time 0: ``s.nodes`` nodes in service."""
        for _ in range(self.s.nodes):
            node = new_node(len(self.nodes), self.s)
            self.nodes.append(node)
            self._enter_service(node, 0.0)

    def _handlers(self) -> tuple[Handler, ...]:
        """The handler of each event kind, by its number."""
        return (self._finish, self._fail, self._reap, self._repair, self._poll, self._wake)

    # -- the loop ------------------------------------------------------------------------

    def run(self, arrivals: Iterable[Arrival]) -> Outcome:
        now = 0.0
        handlers = self._handlers()
        for arrival in arrivals:
            while self.events and self.events[0][0] <= arrival.at:
                now, _, kind, a, b = heapq.heappop(self.events)
                handlers[kind](now, a, b)
            now = arrival.at
            self._submit(arrival, now)
        # Every admitted job ends (runs are not failed by the simulated infrastructure).
        while self.events and self.out.completed + self.out.rejected < len(self.submitted):
            now, _, kind, a, b = heapq.heappop(self.events)
            handlers[kind](now, a, b)
        return self._close(now)

    def _push(self, at: float, kind: int, a: int, b: int = 0) -> None:
        self._seq += 1
        heapq.heappush(self.events, (at, self._seq, kind, a, b))

    # -- admission and the ring (scheduling.Dispatcher's rules) ---------------------------

    def _submit(self, arrival: Arrival, now: float) -> None:
        account = self.accounts.get(arrival.account)
        if account is None:
            tier = self.settings.tier(arrival.tier)
            account = self.accounts[arrival.account] = _Account(
                arrival.account, Limits.of(tier), tier.weight
            )
        job = len(self.submitted)
        self.submitted.append(now)
        self.account_of.append(account)
        self.needs.append(tuple(ModelNeed(m.key, m.folder, m.size) for m in arrival.models))
        self.workflow.append(arrival.workflow)
        factor = arrival.run_factor
        if factor is None:
            factor = self.rng.lognormvariate(0.0, self.s.run_spread)
        self.run_factor.append(factor)
        self.started.append(math.nan)
        self.cold.append(False)
        window = int(now // 60) * 60
        if account.window_start != window:
            account.window_start, account.window_count = window, 0
        waiting = account.ring + len(account.backlog)
        limits = account.limits
        if account.window_count >= limits.requests_per_minute or waiting >= limits.queue_depth:
            self.out.rejected += 1  # 429 rate_limit_exceeded or queue_full
            return
        account.window_count += 1
        if self.active == 0 and now - self.quiet_since >= self.idle_seconds:
            self.after_idle.add(job)
        self.active += 1
        seen = Counters(account.window_count, 0.0, waiting, account.ring, account.running)
        if has_room(seen, limits):
            self._send(job, account, now)
        else:
            if not account.backlog:
                account.backlog_since, account.period_starts = now, 0
            account.backlog.append(job)

    def _send(self, job: int, account: _Account, now: float) -> None:
        """Route the job and send its message to the back of that queue."""
        route = self.view.route(self.needs[job], self.shared_queued, now, self.policy, self.rng)
        account.ring += 1
        group = self._group(job, route.target)
        if route.target == SHARED_ROUTE:
            self.shared.send(group, job)
            self.shared_queued += 1
            self._push(now, _WAKE, 0)
        else:
            node = self.nodes[int(route.target)]
            node.queue.send(group, job)
            node.info.queued += 1
            if node.idle and node.up:
                self._push(now, _POLL, node.index)

    def _group(self, job: int, route: str) -> str:
        account = self.account_of[job]
        share = account.limits.share
        message = RingMessage(str(job), account.name, route, share.concurrency, share.ring_slots)
        return message.group_id

    def _promote(self, account: _Account, now: float) -> None:
        """Fill the account's free ring slots from its backlog, oldest first."""
        share = account.limits.share
        while account.backlog and ring_has_slot(account.ring, account.running, share):
            self._send(account.backlog.popleft(), account, now)
            if not account.backlog:
                self._end_backlog(account, now)

    # -- nodes ---------------------------------------------------------------------------

    def _wake(self, now: float, _a: int, _b: int) -> None:
        """A message reached the shared queue: a long-polling idle node gets it."""
        while self.idle:
            node = self.nodes[self.idle.popleft()]
            if node.idle and node.up:
                self._poll(now, node.index, 0)
                return

    def _poll(self, now: float, index: int, _b: int) -> None:
        node = self.nodes[index]
        if not node.up or node.job >= 0:
            return
        message, from_shared = node.queue.receive(now, HELD), False
        if message is None:
            message, from_shared = self.shared.receive(now, HELD), True
        if message is None:
            if not node.idle:
                node.idle = True
                self.idle.append(index)
            return
        node.idle = False
        self._claim(node, message, from_shared, now)

    def _claim(
        self, node: SimNode, message: FifoMessage[int], from_shared: bool, now: float
    ) -> None:
        job = message.body
        account = self.account_of[job]
        account.ring -= 1
        account.running += 1
        if from_shared:
            self.shared_queued -= 1
        else:
            node.info.queued -= 1
        if account.backlog:
            account.period_starts += 1
        node.job, node.message, node.from_shared = job, message, from_shared
        self._promote(account, now)
        missing, download, load = sync_models(
            node, self.needs[job], self.view, self.s.vram_load_gib_s
        )
        self.out.bytes_downloaded += missing
        run = WORKFLOW_CLASSES[self.workflow[job]].run_seconds * self.run_factor[job]
        start = now + download + load
        self.started[job] = start
        self.cold[job] = download > 0
        info = node.info
        info.status, info.current_job, info.current_started_at = NodeStatus.BUSY, str(job), now
        took = load + run
        ewma = info.ewma_run_seconds
        info.ewma_run_seconds = took if ewma is None else 0.8 * ewma + 0.2 * took
        node.sampling = (start, start + run)
        self._push(start + run, _FINISH, node.index, node.generation)

    def _finish(self, now: float, index: int, generation: int) -> None:
        node = self.nodes[index]
        if node.generation != generation or node.message is None:
            return  # the node died mid-run
        job = node.job
        account = self.account_of[job]
        account.running -= 1
        self.out.completed += 1
        wait = self.started[job] - self.submitted[job]
        self.out.waits.append(wait)
        if job in self.after_idle:
            self.out.first_after_idle_waits.append(wait)
        self.active -= 1
        if self.active == 0:
            self.quiet_since = now
        self.out.cold_starts += self.cold[job]
        self.out.sampling_seconds += node.sampling[1] - node.sampling[0]  # a finished run only
        if self.keep_spans:
            self.out.sampling_spans.append(node.sampling)
        (self.shared if node.from_shared else node.queue).delete(node.message)
        node.job, node.message = -1, None
        node.info.status, node.info.current_job = NodeStatus.IDLE, None
        self._promote(account, now)
        self._poll(now, index, 0)

    # -- failures: a node dies, the reaper moves its queue, a new instance joins ----------

    def _schedule_failure(self, node: SimNode, now: float) -> None:
        rate = self.s.failures_per_node_hour / 3600
        if rate > 0:
            self._push(now + self.failures.expovariate(rate), _FAIL, node.index, node.generation)

    def _fail(self, now: float, index: int, generation: int) -> None:
        node = self.nodes[index]
        if not node.up or node.generation != generation:
            return
        self.out.failures += 1
        node.up, node.idle = False, False
        node.generation += 1
        self.out.node_seconds += now - node.up_since
        if node.message is not None:
            # The job's lease runs out; the store requeues it (running → ring), and the
            # message comes back when its visibility ends.
            account = self.account_of[node.job]
            account.running -= 1
            account.ring += 1
            if node.from_shared:
                self.shared.change_visibility(node.message, now, self.settings.lease_seconds)
                self.shared_queued += 1
                self._push(now + self.settings.lease_seconds, _WAKE, 0)
            else:
                node.info.queued += 1
            node.job, node.message = -1, None
        # The registry stops routing to it once its heartbeat is stale.
        self._push(now + self.settings.node_stale_seconds, _REAP, index)
        repair = max(self.s.repair_seconds, self.settings.node_stale_seconds + 1.0)
        self._push(now + repair, _REPAIR, index)

    def _reap(self, now: float, index: int, _b: int) -> None:
        node = self.nodes[index]
        self.view.leave(node.info.node_id)
        moved = node.queue.drain()
        node.info.queued = 0
        for job in moved:
            self.shared.send(self._group(job, SHARED_ROUTE), job)
        self.shared_queued += len(moved)
        for _ in moved:
            self._push(now, _WAKE, 0)

    def _repair(self, now: float, index: int, _b: int) -> None:
        old = self.nodes[index]
        node = self.nodes[index] = new_node(index, self.s)
        node.generation = old.generation + 1
        self._enter_service(node, now)

    def _enter_service(self, node: SimNode, now: float) -> None:
        """The node's agent registers and starts polling."""
        node.up, node.up_since = True, now
        node.info.heartbeat_at = now
        self.view.join(node.info)
        self._schedule_failure(node, now)
        self._push(now, _POLL, node.index)

    def _end_backlog(self, account: _Account, now: float) -> None:
        """Count a backlog period towards fairness if it was long: a short one starts with
        the account's ring messages just sent, at the back of the queue, and would read as
        a low share however fair the ring is."""
        if now - account.backlog_since >= FAIRNESS_PERIOD_SECONDS:
            account.backlogged_seconds += now - account.backlog_since
            account.backlogged_starts += account.period_starts

    # -- the end -------------------------------------------------------------------------

    def _close(self, now: float) -> Outcome:
        out = self.out
        out.makespan = now
        out.node_seconds += sum(now - n.up_since for n in self.nodes if n.up)
        out.billed_seconds = self._billed_seconds(now)
        # Accounts that wanted more than they got for a tenth of the run: their share is
        # the ring's doing, not a brief spike's.
        min_backlogged = max(FAIRNESS_PERIOD_SECONDS, 0.1 * now)
        for account in self.accounts.values():
            if account.backlog:
                self._end_backlog(account, now)
            if account.backlogged_seconds >= min_backlogged:
                rate = account.backlogged_starts / account.backlogged_seconds
                out.fairness_samples.append(rate / account.weight)
        return out

    def _billed_seconds(self, now: float) -> float:
        """A fixed fleet is paid for whole: every node, the whole run."""
        return self.s.nodes * now
