"""The stores' side of environments, one contract for both implementations (memory, and
DynamoDB on moto): a node's environment on its record, a job's environments, and the hand-back
of a job by a node that lacks one of its classes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from comfyfleet.domain import SHARED_ROUTE, Job, JobState, NodeInfo, NodeStatus
from comfyfleet.errors import JobStateConflict
from comfyfleet.settings import Settings
from comfyfleet.store import Stores
from comfyfleet.store.memory import memory_stores
from tests.integration.test_store_contract import (
    LIMITS,
    NOW,
    admit_to_ring,
    claim,
    counts,
    message,
    new_job,
)


@pytest.fixture(params=["memory", "dynamo"])
def stores(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Stores]:
    if request.param == "memory":
        yield memory_stores(settings)
    else:
        yield request.getfixturevalue("dynamo")


def register(stores: Stores, node_id: str, environment: str) -> None:
    stores.nodes.register(
        NodeInfo(
            node_id, NodeStatus.IDLE, NOW, queue_url=f"q-{node_id}", environment_id=environment
        )
    )


def running(stores: Stores) -> Job:
    account = stores.accounts.create(tier="free", name="", now=NOW).account_id
    job = admit_to_ring(stores, account)
    assert claim(stores, job, "node-a").job.attempt == 1
    return job


def test_a_nodes_environment_is_kept_on_its_record(stores: Stores) -> None:
    register(stores, "node-a", "3f2a9c1d5e7b")
    stores.nodes.heartbeat(
        "node-a",
        now=NOW + 5,
        status=NodeStatus.BUSY,
        cached={},
        free_bytes=1,
        current_job=None,
        current_started_at=None,
        ewma_run_seconds=None,
        bandwidth_bytes_per_second=None,
    )

    assert stores.nodes.get("node-a").environment_id == "3f2a9c1d5e7b"
    [listed], _ = stores.nodes.snapshot()
    assert listed.environment_id == "3f2a9c1d5e7b"


def test_a_jobs_environments_are_kept(stores: Stores) -> None:
    account = stores.accounts.create(tier="free", name="", now=NOW).account_id
    restricted = new_job(account, environments=["new"])
    anywhere = new_job(account, NOW + 1)
    stores.jobs.admit(restricted, LIMITS, now=NOW, route=SHARED_ROUTE)
    stores.jobs.admit(anywhere, LIMITS, now=NOW + 1, route=SHARED_ROUTE)

    assert stores.jobs.get(restricted.job_id).environments == ["new"]
    assert stores.jobs.get(anywhere.job_id).environments is None
    assert stores.jobs.get(anywhere.job_id).handed_back_by == []


def test_a_hand_back_undoes_the_claim_and_sends_the_job_on(stores: Stores) -> None:
    register(stores, "node-a", "old")
    register(stores, "node-b", "new")
    job = running(stores)

    handed = stores.jobs.hand_back(
        job.job_id, "node-a", now=NOW + 2, route="node-b", environment_id="old"
    )

    stored = stores.jobs.get(job.job_id)
    assert handed.state is stored.state is JobState.QUEUED
    assert stored.in_ring and stored.node_id is None and stored.lease_until is None
    assert stored.attempt == 0 and stored.route == "node-b" and stored.ring_at == NOW + 2
    assert stored.handed_back_by == handed.handed_back_by == ["old"]
    assert counts(stores, job.account_id) == (1, 1, 0)
    assert stores.nodes.get("node-b").queued == 1
    again = stores.jobs.claim(
        message(job, "node-b"), "node-b", now=NOW + 3, lease_seconds=60, max_attempts=3
    )
    assert again.job is not None and again.job.attempt == 1
    assert stores.nodes.get("node-b").queued == 0


def test_each_hand_back_is_recorded(stores: Stores) -> None:
    job = running(stores)
    stores.jobs.hand_back(job.job_id, "node-a", now=NOW, route=SHARED_ROUTE, environment_id="e1")
    claim(stores, job, "node-c", now=NOW + 1)

    stores.jobs.hand_back(
        job.job_id, "node-c", now=NOW + 2, route=SHARED_ROUTE, environment_id="e2"
    )

    assert stores.jobs.get(job.job_id).handed_back_by == ["e1", "e2"]


def test_only_the_node_running_a_job_hands_it_back(stores: Stores) -> None:
    job = running(stores)

    with pytest.raises(JobStateConflict):
        stores.jobs.hand_back(
            job.job_id, "node-b", now=NOW, route=SHARED_ROUTE, environment_id="old"
        )
    assert stores.jobs.get(job.job_id).state is JobState.RUNNING
