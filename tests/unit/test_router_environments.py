"""Routing during a rollout: a job only some environments can run goes to their nodes only."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from comfyfleet.domain import SHARED_ROUTE, NodeInfo, NodeStatus
from comfyfleet.router import ModelNeed, route_job
from comfyfleet.settings import Settings

NOW = 1_800_000_000.0
GB = 1_000_000_000


def node(node_id: str, environment: str, **fields: Any) -> NodeInfo:
    base = NodeInfo(
        node_id,
        NodeStatus.IDLE,
        NOW,
        queue_url=f"https://sqs/{node_id}",
        ewma_run_seconds=20.0,
        bandwidth_bytes_per_second=100_000_000,
        environment_id=environment,
    )
    return replace(base, **fields)


def route(
    nodes: list[NodeInfo],
    environments: set[str] | None,
    *,
    needs: list[ModelNeed] | None = None,
    policy: str = "cost",
) -> str:
    return route_job(
        needs or [],
        nodes,
        0,
        shared_url="https://sqs/shared",
        settings=Settings(),
        now=NOW,
        policy=policy,
        rng=random.Random(1),
        environments=environments,
    ).target


def test_a_job_without_models_that_only_new_nodes_can_run_goes_to_one_of_them() -> None:
    fleet = [node("old-1", "old"), node("new-1", "new", queued=2), node("new-2", "new")]

    assert route(fleet, None) == SHARED_ROUTE  # any node: late binding in the shared queue
    assert route(fleet, {"new"}) == "new-2"  # the one that would start it first


def test_the_restriction_beats_cache_affinity() -> None:
    needs = [ModelNeed("k", "checkpoints", 6 * GB)]
    fleet = [node("old-1", "old", cached={"k": 6 * GB}), node("new-1", "new")]

    assert route(fleet, None, needs=needs) == "old-1"
    assert route(fleet, {"new"}, needs=needs) == "new-1"


@pytest.mark.parametrize("policy", ["cost", "coverage", "least_loaded", "random"])
def test_every_policy_keeps_to_the_environments(policy: str) -> None:
    fleet = [node(f"old-{i}", "old") for i in range(5)] + [node("new-1", "new", queued=3)]

    assert route(fleet, {"new"}, policy=policy) == "new-1"


def test_with_none_of_their_nodes_live_the_job_waits_in_the_shared_queue() -> None:
    fleet = [
        node("old-1", "old"),
        node("new-stale", "new", heartbeat_at=NOW - 3600),
        node("new-draining", "new", status=NodeStatus.DRAINING),
    ]

    assert route(fleet, {"new"}) == SHARED_ROUTE
    assert route(fleet, set()) == SHARED_ROUTE
