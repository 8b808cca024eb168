"""Routing policies on hand-made fleet snapshots."""

from __future__ import annotations

import random

import pytest

from comfyfleet.domain import SHARED_ROUTE, NodeInfo, NodeStatus
from comfyfleet.router import ModelNeed, NodeSnapshot, route_job
from comfyfleet.settings import Settings

NOW = 1_800_000_000.0
GB = 1_000_000_000


def node(
    node_id: str,
    *,
    cached: dict[str, int] | None = None,
    queued: int = 0,
    busy_since: float | None = None,
    status: NodeStatus = NodeStatus.IDLE,
    heartbeat: float = NOW,
    run: float = 20.0,
) -> NodeInfo:
    return NodeInfo(
        node_id,
        status,
        heartbeat,
        queue_url=f"https://sqs/{node_id}",
        cached=cached or {},
        queued=queued,
        current_job="j" if busy_since is not None else None,
        current_started_at=busy_since,
        ewma_run_seconds=run,
        bandwidth_bytes_per_second=100_000_000,
    )


def route(
    needs: list[ModelNeed],
    nodes: list[NodeInfo],
    *,
    shared_queued: int = 0,
    policy: str = "cost",
    settings: Settings | None = None,
) -> str:
    return route_job(
        needs,
        nodes,
        shared_queued,
        shared_url="https://sqs/shared",
        settings=settings or Settings(),
        now=NOW,
        policy=policy,
        rng=random.Random(1),
    ).target


CKPT = ModelNeed("ckpt", "checkpoints", 4 * GB)


def test_cost_sends_a_job_to_the_idle_node_holding_its_models() -> None:
    assert route([CKPT], [node("a"), node("b", cached={"ckpt": 4 * GB})]) == "b"


def test_cost_uses_the_shared_queue_when_no_node_has_an_edge() -> None:
    assert route([CKPT], [node("a"), node("b")]) == SHARED_ROUTE
    assert route([], [node("a"), node("b")]) == SHARED_ROUTE


def test_cost_sends_a_job_past_the_shared_queue_only_for_the_download_it_saves() -> None:
    # A node takes its own queue first: a job sent there overtakes the shared queue's jobs.
    assert route([], [node("a"), node("b")], shared_queued=50) == SHARED_ROUTE
    assert route([CKPT], [node("a"), node("b")], shared_queued=50) == SHARED_ROUTE
    tiny = ModelNeed("tiny", "loras", 1_000_000)  # 10 ms to fetch: not worth a jump
    warm = node("b", cached={"ckpt": 4 * GB, "tiny": 1_000_000})
    assert route([tiny], [node("a"), warm], shared_queued=50) == SHARED_ROUTE
    assert route([CKPT], [node("a"), warm], shared_queued=50) == "b"  # saves 40 s


def test_cost_does_not_wait_behind_a_long_queue_for_a_cache_hit() -> None:
    warm_but_busy = node("b", cached={"ckpt": 4 * GB}, queued=10, busy_since=NOW - 1)
    assert route([CKPT], [node("a"), warm_but_busy]) == SHARED_ROUTE


def test_cost_learns_sizes_from_the_nodes_when_the_job_does_not_know_them() -> None:
    unknown = ModelNeed("ckpt", "checkpoints", None)
    # 40 GB at 100 MB/s is 400 s away on node a: node b holding it wins
    nodes = [node("a"), node("b", cached={"ckpt": 40 * GB})]
    assert route([unknown], nodes) == "b"


def test_nodes_that_are_stale_draining_or_queueless_are_never_chosen() -> None:
    nodes = [
        node("stale", cached={"ckpt": 1}, heartbeat=NOW - 600),
        node("draining", cached={"ckpt": 1}, status=NodeStatus.DRAINING),
        node("unhealthy", cached={"ckpt": 1}, status=NodeStatus.UNHEALTHY),
    ]
    assert route([CKPT], nodes) == SHARED_ROUTE
    assert route([CKPT], nodes, policy="least_loaded") == SHARED_ROUTE
    assert route([CKPT], [], policy="random") == SHARED_ROUTE


def test_coverage_needs_sixty_percent_of_the_models_cached() -> None:
    needs = [ModelNeed(k, "loras", 100) for k in "abcde"]
    three = node("three", cached={"a": 100, "b": 100, "c": 100})
    two = node("two", cached={"a": 100, "b": 100})

    assert route(needs, [two, three], policy="coverage") == "three"
    assert route(needs, [two], policy="coverage") == SHARED_ROUTE


def test_least_loaded_ignores_the_cache() -> None:
    nodes = [node("warm", cached={"ckpt": 1}, queued=2), node("cold")]
    assert route([CKPT], nodes, policy="least_loaded") == "cold"


def test_random_picks_a_live_node() -> None:
    picks = {route([CKPT], [node("a"), node("b")], policy="random") for _ in range(5)}
    assert picks <= {"a", "b"}


def test_an_unknown_policy_is_an_error() -> None:
    with pytest.raises(ValueError, match="cost"):
        route([CKPT], [node("a")], policy="fastest")


def test_the_estimate_counts_the_nodes_backlog_and_download() -> None:
    estimate = route_job(
        [CKPT],
        [node("a", queued=2)],
        0,
        shared_url="s",
        settings=Settings(),
        now=NOW,
        policy="least_loaded",
    ).estimated_start
    assert estimate == pytest.approx(2 * 20 + 4 * GB / 100_000_000)


def test_the_snapshot_is_read_at_most_once_per_ttl() -> None:
    reads = []
    now = [0.0]
    snapshot = NodeSnapshot(lambda: reads.append(1) or ([], 0), ttl=1.0, clock=lambda: now[0])

    for t in (0.0, 0.5, 0.99, 1.0, 1.5, 2.2):
        now[0] = t
        snapshot.get()

    assert len(reads) == 3
    snapshot.invalidate()
    snapshot.get()
    assert len(reads) == 4
