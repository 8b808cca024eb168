"""The router at fleet scale: the project's own decision over the nodes that can win.

``route_job`` looks at every node, which at 1,000 nodes and 1,000,000 jobs is hours of
Python. The simulation therefore hands ``comfyfleet.router.choose_route`` (the same policy
code) the options built by ``comfyfleet.router.node_option`` (the same estimate) for a few
candidates only: the ``width`` least-loaded live nodes of each download bandwidth, and the
``width`` least-loaded holders of each model the job needs and of all of them together, as
of the last snapshot (refreshed every ``ttl`` seconds, like NodeSnapshot; the options
themselves are fresh). The shared queue's estimate comes from
``comfyfleet.router.shared_start`` with fleet-wide sums kept exactly. With ``width`` at
least the fleet size the choice is route_job's (tests/unit/test_sim_routing.py).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence

from comfyfleet.domain import SHARED_ROUTE, NodeInfo
from comfyfleet.router import (
    ModelNeed,
    Route,
    backlog_seconds,
    choose_route,
    node_option,
    run_seconds,
    shared_start,
)
from comfyfleet.settings import Settings

SHARED_URL = "sim://shared"


class FleetView:
    """What the router knows of the fleet: live nodes, who holds which model, and a
    snapshot of how loaded each node is."""

    def __init__(self, settings: Settings, *, ttl: float = 1.0, width: int = 4) -> None:
        self.settings = settings
        self.ttl = ttl
        self.width = width
        self.nodes: dict[str, NodeInfo] = {}  # live nodes, by id
        self.holders: dict[str, set[str]] = {}  # model key → live node ids holding it
        self._inv_bw: dict[str, float] = {}  # node id → 1 / bandwidth
        self._inv_bw_total = 0.0
        self._holder_inv_bw: dict[str, float] = {}  # model key → Σ 1/bandwidth of holders
        self._read_at = float("-inf")
        self._free_in: dict[str, float] = {}
        self._least_loaded: list[str] = []
        self._least_loaded_by_bandwidth: list[list[str]] = []
        self._by_load_largest_id: list[str] | None = None
        self._best_holders: dict[tuple[tuple[str, ...], bool], list[str]] = {}
        self._first_free = 0.0
        self._mean_run = settings.default_run_seconds

    # -- what the registry learns from heartbeats ----------------------------------------

    def join(self, node: NodeInfo) -> None:
        self.nodes[node.node_id] = node
        bandwidth = node.bandwidth_bytes_per_second or self.settings.default_bandwidth_bytes
        self._inv_bw[node.node_id] = 1.0 / bandwidth
        self._inv_bw_total += 1.0 / bandwidth
        for key in node.cached:
            self.cached(node.node_id, key)
        self._read_at = float("-inf")

    def leave(self, node_id: str) -> None:
        node = self.nodes.pop(node_id)
        for key in list(node.cached):
            self.evicted(node_id, key)
        self._inv_bw_total -= self._inv_bw.pop(node_id)
        self._read_at = float("-inf")

    def cached(self, node_id: str, key: str) -> None:
        self.holders.setdefault(key, set()).add(node_id)
        self._holder_inv_bw[key] = self._holder_inv_bw.get(key, 0.0) + self._inv_bw[node_id]

    def evicted(self, node_id: str, key: str) -> None:
        holders = self.holders.get(key)
        if holders is not None and node_id in holders:
            holders.discard(node_id)
            self._holder_inv_bw[key] -= self._inv_bw[node_id]

    # -- routing -------------------------------------------------------------------------

    def route(
        self,
        needs: Sequence[ModelNeed],
        shared_queued: int,
        now: float,
        policy: str,
        rng: random.Random,
    ) -> Route:
        """The queue for a job: ``choose_route`` over the candidates' fresh options."""
        if now - self._read_at >= self.ttl:
            self._refresh(now)
        sizes = {need.key: need.size or 0 for need in needs}
        if not self.nodes:
            start = (shared_queued + 1) * self.settings.default_run_seconds
            return Route(SHARED_ROUTE, SHARED_URL, start)
        if policy == "random":
            # Every live node is equally likely, as rng.choice over all options makes it.
            candidates: Sequence[str] = [rng.choice(self._least_loaded)]
        else:
            candidates = self._candidates(sizes, policy)
        options = [
            node_option(self.nodes[node_id], sizes, self.settings, now) for node_id in candidates
        ]
        live = len(self.nodes)
        missing_over_bw = sum(
            size * (self._inv_bw_total - self._holder_inv_bw.get(key, 0.0))
            for key, size in sizes.items()
        )
        shared = Route(
            SHARED_ROUTE,
            SHARED_URL,
            shared_start(
                first_free=self._first_free,
                mean_run=self._mean_run,
                mean_download=missing_over_bw / live,
                live_nodes=live,
                shared_queued=shared_queued,
            ),
        )
        return choose_route(
            options,
            shared,
            bool(sizes),
            self.settings,
            policy=policy,
            rng=rng,
            shared_backlog_seconds=backlog_seconds(shared_queued, self._mean_run, live),
        )

    def _candidates(self, sizes: dict[str, int], policy: str) -> list[str]:
        chosen: dict[str, None] = {}
        for ordered in self._least_loaded_by_bandwidth:
            chosen.update(dict.fromkeys(ordered[: self.width]))
        keys = list(sizes)
        groups = [(key,) for key in keys] + ([tuple(sorted(keys))] if len(keys) > 1 else [])
        for group in groups:
            memo = (group, policy == "coverage")
            best = self._best_holders.get(memo)
            if best is None:
                best = self._best_holders[memo] = self._least_loaded_holders(group, memo[1])
            chosen.update(dict.fromkeys(best))
        return list(chosen)

    def _least_loaded_holders(self, keys: tuple[str, ...], largest_id: bool) -> list[str]:
        """The ``width`` least-loaded nodes holding all ``keys``; ties go to the smaller
        node id, or the larger one for ``coverage`` (as its max() breaks them)."""
        sets = sorted((self.holders.get(key, set()) for key in keys), key=len)
        if len(sets[0]) * 8 >= len(self.nodes):
            # Most nodes hold them: the first few in load order are the answer.
            order = self._load_order_largest_id() if largest_id else self._least_loaded
            found: list[str] = []
            for node_id in order:
                if all(node_id in held for held in sets):
                    found.append(node_id)
                    if len(found) == self.width:
                        break
            return found
        holders = sets[0].intersection(*sets[1:]) if len(sets) > 1 else sets[0]
        if largest_id:
            return heapq.nlargest(self.width, holders, key=lambda n: (-self._free_in[n], n))
        return heapq.nsmallest(self.width, holders, key=self._load_key)

    def _load_order_largest_id(self) -> list[str]:
        if self._by_load_largest_id is None:
            order = sorted(self._free_in, reverse=True)
            order.sort(key=self._free_in.__getitem__)  # stable: larger ids first among ties
            self._by_load_largest_id = order
        return self._by_load_largest_id

    def _load_key(self, node_id: str) -> tuple[float, str]:
        return (self._free_in[node_id], node_id)

    def _refresh(self, now: float) -> None:
        """Read the registry: every live node's load as of ``now``."""
        self._read_at = now
        default_run = self.settings.default_run_seconds
        self._free_in = {
            node_id: _free_in(node, now, default_run) for node_id, node in self.nodes.items()
        }
        self._least_loaded = sorted(self._free_in, key=self._load_key)
        by_bandwidth: dict[float, list[str]] = {}
        for node_id in self._least_loaded:
            by_bandwidth.setdefault(self._inv_bw[node_id], []).append(node_id)
        self._least_loaded_by_bandwidth = list(by_bandwidth.values())
        self._best_holders = {}
        self._by_load_largest_id = None
        if self.nodes:
            self._first_free = self._free_in[self._least_loaded[0]]
            runs = sum(run_seconds(node, self.settings) for node in self.nodes.values())
            self._mean_run = runs / len(self.nodes)


def _free_in(node: NodeInfo, now: float, default_run: float) -> float:
    """node_option's free_in, inlined: this only orders the candidates (the choice among
    them uses node_option itself), and a refresh computes it for every node."""
    run = node.ewma_run_seconds or default_run
    if node.current_job is None:
        return node.queued * run
    elapsed = now - (node.current_started_at or now)
    return max(run - elapsed, 0.1 * run) + node.queued * run
