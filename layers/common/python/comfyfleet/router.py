"""Cache-aware routing (DESIGN §6): which queue a job's message goes to.

A pure function of the job's models, a snapshot of the nodes and the settings, so the API,
the agents' promotions and the fleet simulation all run the same code.

    start(node) = backlog(node) + missing_bytes(node, job) / bandwidth(node)
    backlog(node) = remainder of its current job + queued(node) × its run time

`cost` sends the job to the node that would start it first when that node holds some of its
models and beats the shared queue (where the first free node takes it: late binding) by a
margin. A job only some environments can run (a rollout, comfyfleet.catalogues) goes to the
node of those environments that would start it first.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from comfyfleet.domain import SHARED_ROUTE, NodeInfo
from comfyfleet.settings import Settings

COVERAGE_THRESHOLD = 0.6  # cmfy.cloud's rule: a node with ≥ 60 % of the models cached
POLICIES = ("cost", "coverage", "least_loaded", "random")


@dataclass(frozen=True, slots=True)
class ModelNeed:
    """A model a job needs, with its size when known."""

    key: str
    folder: str = ""
    size: int | None = None

    @classmethod
    def from_ref(cls, ref: dict[str, Any]) -> ModelNeed:
        return cls(key=ref["key"], folder=ref.get("folder", ""), size=ref.get("size"))


@dataclass(frozen=True, slots=True)
class Route:
    target: str  # a node id, or SHARED_ROUTE
    queue_url: str
    estimated_start: float  # seconds from now until a node could start the job


@dataclass(frozen=True, slots=True)
class RouteOption:
    """One live node as a candidate for a job."""

    node: NodeInfo
    free_in: float  # seconds until it could start anything
    download: float  # seconds to fetch what it lacks
    missing_bytes: int
    coverage: float

    @property
    def start(self) -> float:
        return self.free_in + self.download


def route_job(
    needs: Sequence[ModelNeed],
    nodes: Sequence[NodeInfo],
    shared_queued: int,
    *,
    shared_url: str,
    settings: Settings,
    now: float,
    policy: str | None = None,
    rng: random.Random | None = None,
    environments: Collection[str] | None = None,
) -> Route:
    """Choose the queue for a job needing ``needs``, given the fleet as ``nodes`` shows it.

    ``environments``: only their nodes have every class the job uses (a rollout): it goes
    to the one of those that would start it first, whatever the policy (any other node
    would hand it back), or to the shared queue while none of them is live.
    """
    sizes = need_sizes(needs, nodes, settings)
    options = [
        node_option(node, sizes, settings, now)
        for node in nodes
        if node.live(now, settings.node_stale_seconds)
        and node.queue_url
        and (environments is None or node.environment_id in environments)
    ]
    start, backlog = _shared_estimate(options, shared_queued, settings)
    if environments is not None:
        if not options:
            return Route(SHARED_ROUTE, shared_url, start)
        return _to(min(options, key=lambda o: (o.start, o.node.node_id)))
    return choose_route(
        options,
        Route(SHARED_ROUTE, shared_url, start),
        bool(sizes),
        settings,
        policy=policy,
        rng=rng,
        shared_backlog_seconds=backlog,
    )


def choose_route(
    options: Sequence[RouteOption],
    shared: Route,
    has_models: bool,
    settings: Settings,
    *,
    policy: str | None = None,
    rng: random.Random | None = None,
    shared_backlog_seconds: float = 0.0,
) -> Route:
    """The policy's choice among the live nodes' ``options`` and the ``shared`` queue
    (``shared_backlog_seconds``: the part of its estimate spent on the jobs waiting there).

    The fleet simulation calls this with the few options that can win (see comfyfleet.sim).
    """
    policy = policy or settings.routing_policy
    if not options:
        return shared
    if policy == "cost":
        best = min(options, key=lambda o: (o.start, o.node.node_id))
        # A node's queue is for cache affinity only. A job that needs no model, or none the
        # node holds, goes to the shared queue: late binding balances the load there. And
        # the node must win on the download it saves, not on the jobs waiting in shared: a
        # node takes its own queue first, so a job sent there overtakes them, and one
        # account's promoted jobs would jump every other account's turn (DESIGN §5).
        fair_shared_start = shared.estimated_start - shared_backlog_seconds
        if (
            has_models
            and best.coverage > 0
            and best.start + settings.route_margin_seconds < fair_shared_start
        ):
            return _to(best)
        return shared
    if policy == "coverage":
        if not has_models:
            return shared
        best = max(options, key=lambda o: (o.coverage, -o.free_in, o.node.node_id))
        return _to(best) if best.coverage >= COVERAGE_THRESHOLD else shared
    if policy == "least_loaded":
        return _to(min(options, key=lambda o: (o.free_in, o.node.node_id)))
    if policy == "random":
        return _to((rng or random).choice(options))
    raise ValueError(f"unknown routing policy {policy!r}; one of {', '.join(POLICIES)}")


def _to(option: RouteOption) -> Route:
    return Route(option.node.node_id, option.node.queue_url, option.start)


def need_sizes(
    needs: Sequence[ModelNeed], nodes: Sequence[NodeInfo], settings: Settings
) -> dict[str, int]:
    """Each needed model's bytes: as given, as a node that holds it reports, or a guess."""
    sizes: dict[str, int] = {}
    for need in needs:
        size = need.size
        if size is None:
            size = next((n.cached[need.key] for n in nodes if need.key in n.cached), None)
        sizes[need.key] = size if size is not None else settings.model_size_guess(need.folder)
    return sizes


def run_seconds(node: NodeInfo, settings: Settings) -> float:
    """A node's expected run time per job: its own average, else the default."""
    return node.ewma_run_seconds or settings.default_run_seconds


def node_option(
    node: NodeInfo, sizes: dict[str, int], settings: Settings, now: float
) -> RouteOption:
    """When ``node`` could start a job needing models of ``sizes`` (key → bytes)."""
    run = run_seconds(node, settings)
    remainder = 0.0
    if node.current_job is not None:
        elapsed = now - (node.current_started_at or now)
        remainder = max(run - elapsed, 0.1 * run)  # an overdue job still has some way to go
    missing = covered = 0
    for key, size in sizes.items():  # one pass: the fleet simulation calls this a lot
        if key in node.cached:
            covered += 1
        else:
            missing += size
    bandwidth = node.bandwidth_bytes_per_second or settings.default_bandwidth_bytes
    return RouteOption(
        node=node,
        free_in=remainder + node.queued * run,
        download=missing / bandwidth,
        missing_bytes=missing,
        coverage=covered / len(sizes) if sizes else 0.0,
    )


def _shared_estimate(
    options: list[RouteOption], shared_queued: int, settings: Settings
) -> tuple[float, float]:
    """When the shared queue would start the job, and how much of that is its backlog."""
    if not options:
        return (shared_queued + 1) * settings.default_run_seconds, 0.0
    mean_run = sum(run_seconds(o.node, settings) for o in options) / len(options)
    start = shared_start(
        first_free=min(o.free_in for o in options),
        mean_run=mean_run,
        mean_download=sum(o.download for o in options) / len(options),
        live_nodes=len(options),
        shared_queued=shared_queued,
    )
    return start, backlog_seconds(shared_queued, mean_run, len(options))


def shared_start(
    *,
    first_free: float,
    mean_run: float,
    mean_download: float,
    live_nodes: int,
    shared_queued: int,
) -> float:
    """When the shared queue would start the job: the first node to free up, after the jobs
    already waiting there are spread over the fleet, plus an average node's download."""
    return first_free + backlog_seconds(shared_queued, mean_run, live_nodes) + mean_download


def backlog_seconds(shared_queued: int, mean_run: float, live_nodes: int) -> float:
    """How long the fleet takes to work through the jobs waiting in the shared queue."""
    return shared_queued * mean_run / live_nodes


class NodeSnapshot:
    """The registry as the router sees it, read at most once per ``ttl`` seconds."""

    def __init__(
        self,
        read: Callable[[], tuple[list[NodeInfo], int]],
        *,
        ttl: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._value: tuple[list[NodeInfo], int] | None = None
        self._read_at = float("-inf")

    def get(self) -> tuple[list[NodeInfo], int]:
        with self._lock:
            if self._value is None or self._clock() - self._read_at >= self._ttl:
                self._value = self._read()
                self._read_at = self._clock()
            return self._value

    def invalidate(self) -> None:
        with self._lock:
            self._value = None
