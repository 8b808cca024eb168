"""The reaper's store queries, one contract for the in-memory stores and DynamoDB (moto):
the live jobs (sparse index), ring_at stamps, the accounts with a backlog."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from comfyfleet.domain import SHARED_ROUTE, JobState, NodeInfo, NodeStatus
from comfyfleet.settings import Settings
from comfyfleet.store import Stores
from comfyfleet.store.memory import memory_stores
from tests.integration.test_store_contract import (
    LIMITS,
    NOW,
    admit_to_ring,
    claim,
    message,
    new_job,
)


@pytest.fixture(params=["memory", "dynamo"])
def stores(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Stores]:
    if request.param == "memory":
        yield memory_stores(settings)
    else:
        yield request.getfixturevalue("dynamo")


def live(stores: Stores) -> dict[str, tuple[JobState, bool, str | None]]:
    return {j.job_id: (j.state, j.in_ring, j.node_id) for j in stores.jobs.live_jobs()}


def test_live_jobs_are_the_ring_and_the_running_never_the_backlog(stores: Stores) -> None:
    account = stores.accounts.create(tier="free", name="", now=NOW).account_id
    ringed, running = admit_to_ring(stores, account), admit_to_ring(stores, account)
    waiting = new_job(account)
    stores.jobs.admit(waiting, LIMITS, now=NOW, route=None)
    claim(stores, running, node="node-a")

    assert live(stores) == {
        ringed.job_id: (JobState.QUEUED, True, None),
        running.job_id: (JobState.RUNNING, False, "node-a"),
    }
    seen = {j.job_id: j for j in stores.jobs.live_jobs()}
    assert seen[ringed.job_id].ring_at == NOW and seen[ringed.job_id].route == SHARED_ROUTE
    assert seen[running.job_id].lease_until == NOW + 60
    assert seen[running.job_id].account_id == account and seen[running.job_id].tier == "free"


def test_a_job_leaves_the_live_jobs_when_it_ends(stores: Stores) -> None:
    account = stores.accounts.create(tier="free", name="", now=NOW).account_id
    finished, cancelled = admit_to_ring(stores, account), admit_to_ring(stores, account)
    claim(stores, finished)
    stores.jobs.finish(finished.job_id, "node-a", JobState.COMPLETED, now=NOW + 1)
    stores.jobs.cancel(cancelled.job_id, now=NOW + 1)
    failed = admit_to_ring(stores, account)
    stores.jobs.fail_queued(failed.job_id, {"code": "x"}, now=NOW + 1)
    expired = admit_to_ring(stores, account)
    stores.jobs.claim(message(expired), "node-a", now=NOW, lease_seconds=60, max_attempts=1)
    stores.jobs.requeue_expired(expired.job_id, now=NOW + 61, max_attempts=1)

    assert stores.jobs.get(expired.job_id).state is JobState.FAILED
    assert live(stores) == {}


def test_a_job_back_in_the_ring_is_stamped_ring_at(stores: Stores) -> None:
    account = stores.accounts.create(tier="free", name="", now=NOW).account_id
    lost, released = admit_to_ring(stores, account), admit_to_ring(stores, account)
    claim(stores, lost, node="node-a")
    claim(stores, released, node="node-b")

    again = stores.jobs.requeue_expired(lost.job_id, now=NOW + 61, max_attempts=3)
    back = stores.jobs.release(released.job_id, "node-b", now=NOW + 5)

    assert again.ring_at == NOW + 61 and stores.jobs.get(lost.job_id).ring_at == NOW + 61
    assert back.ring_at == NOW + 5 and stores.jobs.get(released.job_id).ring_at == NOW + 5
    assert live(stores) == {
        lost.job_id: (JobState.QUEUED, True, None),
        released.job_id: (JobState.QUEUED, True, None),
    }


def test_a_promotion_stamps_ring_at_and_makes_the_job_live(stores: Stores) -> None:
    account = stores.accounts.create(tier="free", name="", now=NOW).account_id
    first = admit_to_ring(stores, account)
    admit_to_ring(stores, account)
    waiting = new_job(account)
    stores.jobs.admit(waiting, LIMITS, now=NOW, route=None)
    stores.jobs.cancel(first.job_id, now=NOW + 1)

    stores.jobs.promote(waiting.job_id, account, LIMITS.share, route=SHARED_ROUTE, now=NOW + 2)

    promoted = stores.jobs.get(waiting.job_id)
    assert promoted.in_ring and promoted.ring_at == NOW + 2
    assert live(stores)[waiting.job_id] == (JobState.QUEUED, True, None)


def test_backlogged_lists_the_accounts_with_a_backlog_and_their_counters(stores: Stores) -> None:
    busy = stores.accounts.create(tier="free", name="", now=NOW).account_id
    quiet = stores.accounts.create(tier="free", name="", now=NOW).account_id
    admit_to_ring(stores, busy), admit_to_ring(stores, busy)
    stores.jobs.admit(new_job(busy), LIMITS, now=NOW, route=None)
    admit_to_ring(stores, quiet)
    stores.nodes.register(NodeInfo("node-a", NodeStatus.IDLE, heartbeat_at=NOW))

    found = stores.limits.backlogged(now=NOW)

    assert list(found) == [busy]
    assert (found[busy].waiting, found[busy].ring, found[busy].running) == (3, 2, 0)
