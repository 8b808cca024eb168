"""One contract, two implementations: the in-memory stores behave as DynamoDB's (on moto)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from comfyfleet.domain import (
    SHARED_ROUTE,
    Job,
    JobState,
    Limits,
    NodeInfo,
    NodeStatus,
    RingMessage,
    Scope,
)
from comfyfleet.errors import (
    AccountNotFound,
    InvalidCursor,
    JobNotFound,
    JobStateConflict,
    KeyNotFound,
    LimitExceeded,
    NodeNotFound,
)
from comfyfleet.ids import new_job_id
from comfyfleet.settings import Settings
from comfyfleet.store import Stores
from comfyfleet.store.memory import memory_stores
from comfyfleet.store.ports import ClaimOutcome, ModelRecord, RingFull, RingHasRoom, RouteGone

NOW = 1_800_000_000.0
LIMITS = Limits(requests_per_minute=5, concurrency=2, queue_depth=4, ring_slots=2)
WORKFLOW = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8}}}


@pytest.fixture(params=["memory", "dynamo"])
def stores(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Stores]:
    if request.param == "memory":
        yield memory_stores(settings)
    else:
        yield request.getfixturevalue("dynamo")


def new_job(account_id: str, now: float = NOW, **fields: Any) -> Job:
    return Job(new_job_id(now), account_id, JobState.QUEUED, now, WORKFLOW, **fields)


def message(job: Job, route: str = SHARED_ROUTE, limits: Limits = LIMITS) -> RingMessage:
    return RingMessage(job.job_id, job.account_id, route, limits.concurrency, limits.ring_slots)


def admit_to_ring(stores: Stores, account_id: str, now: float = NOW) -> Job:
    job = new_job(account_id, now)
    stores.jobs.admit(job, LIMITS, now=now, route=SHARED_ROUTE)
    return job


def claim(stores: Stores, job: Job, node: str = "node-a", now: float = NOW) -> Any:
    return stores.jobs.claim(message(job), node, now=now, lease_seconds=60, max_attempts=3)


def counts(stores: Stores, account_id: str, now: float = NOW) -> tuple[int, int, int]:
    c = stores.limits.counters(account_id, now=now)
    return c.waiting, c.ring, c.running


# -- accounts and keys ------------------------------------------------------------------


def test_accounts_are_created_read_and_updated(stores: Stores) -> None:
    account = stores.accounts.create(tier="pro", name="acme", now=NOW)

    assert account.webhook_secret.startswith("whsec_")
    assert stores.accounts.get(account.account_id) == account
    account.webhook_url = "https://example.com/hook"
    stores.accounts.update(account)
    assert stores.accounts.get(account.account_id).webhook_url == "https://example.com/hook"
    with pytest.raises(AccountNotFound):
        stores.accounts.get("acct_missing")


def test_a_key_is_shown_once_stored_as_a_hash_and_revocable(stores: Stores) -> None:
    account = stores.accounts.create(tier="free", name="", now=NOW)

    key, plaintext = stores.keys.create(account.account_id, [Scope.JOBS], name="ci", now=NOW)

    assert plaintext.startswith("sk_live_") and len(plaintext) >= 8 + 43
    assert plaintext not in key.key_hash and key.key_id == plaintext[:16]
    found = stores.keys.find(plaintext)
    assert found is not None and found.active and found.scopes == {Scope.JOBS}
    assert stores.keys.find(plaintext + "x") is None
    revoked = stores.keys.revoke(key.key_id, now=NOW + 1)
    assert revoked.revoked_at == NOW + 1
    found = stores.keys.find(plaintext)
    assert found is not None and not found.active
    assert [k.key_id for k in stores.keys.list_for_account(account.account_id)] == [key.key_id]
    with pytest.raises(KeyNotFound):
        stores.keys.revoke("sk_live_nothere", now=NOW)


# -- admission ---------------------------------------------------------------------------


def test_admission_takes_a_ring_slot_while_there_is_room_then_the_backlog(stores: Stores) -> None:
    account = stores.accounts.create(tier="free", name="", now=NOW)
    first, second = (
        admit_to_ring(stores, account.account_id),
        admit_to_ring(stores, account.account_id),
    )
    third = new_job(account.account_id)

    with pytest.raises(RingFull):
        stores.jobs.admit(third, LIMITS, now=NOW, route=SHARED_ROUTE)
    stores.jobs.admit(third, LIMITS, now=NOW, route=None)

    assert counts(stores, account.account_id) == (3, 2, 0)
    assert (
        stores.jobs.get(first.job_id).in_ring
        and stores.jobs.get(second.job_id).route == SHARED_ROUTE
    )
    assert not stores.jobs.get(third.job_id).in_ring
    assert [e.job_id for e in stores.jobs.backlog(account.account_id, limit=5)] == [third.job_id]


def test_a_job_may_not_wait_in_the_backlog_while_the_ring_has_room(stores: Stores) -> None:
    account = stores.accounts.create(tier="free", name="", now=NOW)

    with pytest.raises(RingHasRoom):
        stores.jobs.admit(new_job(account.account_id), LIMITS, now=NOW, route=None)

    assert counts(stores, account.account_id) == (0, 0, 0)


def test_the_rate_window_refuses_with_seconds_to_its_end(stores: Stores) -> None:
    account = stores.accounts.create(tier="free", name="", now=NOW)
    limits = Limits(requests_per_minute=2, concurrency=2, queue_depth=10, ring_slots=2)
    for _ in range(2):
        stores.jobs.admit(new_job(account.account_id), limits, now=NOW + 10, route=SHARED_ROUTE)

    with pytest.raises(LimitExceeded) as refused:
        stores.jobs.admit(new_job(account.account_id), limits, now=NOW + 10, route=None)

    assert refused.value.code == "rate_limit_exceeded"
    assert refused.value.retry_after == 50  # NOW is on a minute boundary
    assert refused.value.counters.window_requests == 2
    stores.jobs.admit(new_job(account.account_id), limits, now=NOW + 61, route=None)  # next window


def test_the_queue_depth_refuses_with_queue_full(stores: Stores) -> None:
    account = stores.accounts.create(tier="free", name="", now=NOW)
    limits = Limits(requests_per_minute=100, concurrency=2, queue_depth=2, ring_slots=2)
    for _ in range(2):
        stores.jobs.admit(new_job(account.account_id), limits, now=NOW, route=SHARED_ROUTE)

    with pytest.raises(LimitExceeded) as refused:
        stores.jobs.admit(new_job(account.account_id), limits, now=NOW, route=None)

    assert refused.value.code == "queue_full"
    assert refused.value.counters.waiting == 2
    assert stores.limits.counters(account.account_id, now=NOW).window_requests == 2


def test_admission_to_a_node_that_left_is_refused(stores: Stores) -> None:
    account = stores.accounts.create(tier="free", name="", now=NOW)

    with pytest.raises(RouteGone):
        stores.jobs.admit(new_job(account.account_id), LIMITS, now=NOW, route="i-gone")

    assert counts(stores, account.account_id) == (0, 0, 0)


def test_admission_to_an_unknown_account_is_refused(stores: Stores) -> None:
    with pytest.raises(AccountNotFound):
        stores.jobs.admit(new_job("acct_nobody"), LIMITS, now=NOW, route=SHARED_ROUTE)


# -- claim, lease, finish ----------------------------------------------------------------


def test_claim_runs_the_job_and_moves_the_counters(stores: Stores) -> None:
    account = stores.accounts.create(tier="free", name="", now=NOW)
    job = admit_to_ring(stores, account.account_id)

    result = claim(stores, job)

    assert result.outcome is ClaimOutcome.CLAIMED and not result.reclaimed
    assert result.job.state is JobState.RUNNING and result.job.attempt == 1
    assert result.job.workflow == WORKFLOW and result.job.lease_until == NOW + 60
    assert counts(stores, account.account_id) == (0, 0, 1)
    assert claim(stores, job, "node-b").outcome is ClaimOutcome.DUPLICATE


def test_a_claim_waits_while_the_account_runs_all_it_may(stores: Stores) -> None:
    account = stores.accounts.create(tier="free", name="", now=NOW)
    one = Limits(requests_per_minute=9, concurrency=1, queue_depth=9, ring_slots=2)
    first, second = (new_job(account.account_id) for _ in range(2))
    stores.jobs.admit(first, one, now=NOW, route=SHARED_ROUTE)
    stores.jobs.claim(message(first, limits=one), "a", now=NOW, lease_seconds=60, max_attempts=3)
    # a job admitted by an older process with a larger limit, then the tier shrank
    stores.jobs.admit(second, LIMITS, now=NOW, route=SHARED_ROUTE)

    deferred = stores.jobs.claim(
        message(second, limits=one), "b", now=NOW, lease_seconds=60, max_attempts=3
    )

    assert deferred.outcome is ClaimOutcome.DEFERRED
    assert stores.jobs.get(second.job_id).state is JobState.QUEUED


def test_an_expired_lease_is_claimable_again_as_a_new_attempt(stores: Stores) -> None:
    account = stores.accounts.create(tier="free", name="", now=NOW)
    job = admit_to_ring(stores, account.account_id)
    claim(stores, job, "node-a")

    early = claim(stores, job, "node-b", now=NOW + 30)
    late = claim(stores, job, "node-b", now=NOW + 61)

    assert early.outcome is ClaimOutcome.DUPLICATE
    assert late.outcome is ClaimOutcome.CLAIMED and late.reclaimed
    assert late.job.node_id == "node-b" and late.job.attempt == 2
    assert counts(stores, account.account_id, NOW + 61) == (0, 0, 1)
    with pytest.raises(JobStateConflict):
        stores.jobs.extend_lease(job.job_id, "node-a", until=NOW + 200)


def test_out_of_attempts_a_reclaim_fails_the_job(stores: Stores) -> None:
    account = stores.accounts.create(tier="free", name="", now=NOW)
    job = admit_to_ring(stores, account.account_id)
    stores.jobs.claim(message(job), "a", now=NOW, lease_seconds=60, max_attempts=1)

    result = stores.jobs.claim(message(job), "b", now=NOW + 61, lease_seconds=60, max_attempts=1)

    assert result.outcome is ClaimOutcome.EXHAUSTED
    assert result.job.state is JobState.FAILED
    assert result.job.error["code"] == "max_attempts_exceeded"
    assert counts(stores, account.account_id, NOW + 61) == (0, 0, 0)


def test_lease_renewal_reports_a_cancel_request(stores: Stores) -> None:
    account = stores.accounts.create(tier="free", name="", now=NOW)
    job = admit_to_ring(stores, account.account_id)
    claim(stores, job)

    assert stores.jobs.extend_lease(job.job_id, "node-a", until=NOW + 120) is False
    stores.jobs.cancel(job.job_id, now=NOW + 1)
    assert stores.jobs.extend_lease(job.job_id, "node-a", until=NOW + 130) is True
    assert stores.jobs.get(job.job_id).lease_until == NOW + 130


def test_progress_and_finish_record_the_outcome(stores: Stores) -> None:
    account = stores.accounts.create(tier="free", name="", now=NOW)
    job = admit_to_ring(stores, account.account_id)
    claim(stores, job)
    stores.jobs.record_progress(job.job_id, "node-a", {"value": 3, "max": 20, "node": "5"})
    assert stores.jobs.get(job.job_id).progress == {"value": 3, "max": 20, "node": "5"}

    outputs = {"images": ["https://cdn/x.png"]}
    done = stores.jobs.finish(
        job.job_id, "node-a", JobState.COMPLETED, now=NOW + 5, outputs=outputs
    )

    stored = stores.jobs.get(job.job_id)
    assert done.state is stored.state is JobState.COMPLETED
    assert stored.outputs == outputs and stored.execution_time_ms == 5000
    assert stored.expires_at == int(NOW + 5) + 30 * 86400
    assert counts(stores, account.account_id) == (0, 0, 0)
    with pytest.raises(JobStateConflict):
        stores.jobs.finish(job.job_id, "node-a", JobState.FAILED, now=NOW + 6, error={"code": "x"})
    with pytest.raises(JobStateConflict):
        stores.jobs.record_progress(job.job_id, "node-a", {"value": 1})


def test_only_the_node_running_a_job_may_finish_it(stores: Stores) -> None:
    account = stores.accounts.create(tier="free", name="", now=NOW)
    job = admit_to_ring(stores, account.account_id)
    claim(stores, job, "node-a")

    with pytest.raises(JobStateConflict):
        stores.jobs.finish(job.job_id, "node-b", JobState.COMPLETED, now=NOW)
    with pytest.raises(JobNotFound):
        stores.jobs.finish("01HNOTAJOB0000000000000000", "node-a", JobState.COMPLETED, now=NOW)


def test_release_puts_a_running_job_back_in_the_ring(stores: Stores) -> None:
    account = stores.accounts.create(tier="free", name="", now=NOW)
    job = admit_to_ring(stores, account.account_id)
    claim(stores, job)

    released = stores.jobs.release(job.job_id, "node-a", now=NOW + 1)

    assert released.state is JobState.QUEUED and released.in_ring
    assert counts(stores, account.account_id) == (1, 1, 0)
    again = claim(stores, job, "node-b", now=NOW + 2)
    assert again.outcome is ClaimOutcome.CLAIMED and again.job.attempt == 2


def test_requeue_expired_gives_the_job_another_attempt_or_fails_it(stores: Stores) -> None:
    account = stores.accounts.create(tier="free", name="", now=NOW)
    job = admit_to_ring(stores, account.account_id)
    claim(stores, job)
    with pytest.raises(JobStateConflict):
        stores.jobs.requeue_expired(job.job_id, now=NOW + 10, max_attempts=3)

    requeued = stores.jobs.requeue_expired(job.job_id, now=NOW + 61, max_attempts=3)
    assert requeued.state is JobState.QUEUED and counts(stores, account.account_id) == (1, 1, 0)

    claim(stores, job, now=NOW + 62)
    failed = stores.jobs.requeue_expired(job.job_id, now=NOW + 200, max_attempts=2)
    assert failed.state is JobState.FAILED and counts(stores, account.account_id) == (0, 0, 0)


# -- cancel, fail, backlog, promotion --------------------------------------------------


def test_cancel_ends_a_queued_job_at_once_and_frees_its_place(stores: Stores) -> None:
    account = stores.accounts.create(tier="free", name="", now=NOW)
    in_ring = admit_to_ring(stores, account.account_id)
    admit_to_ring(stores, account.account_id)
    waiting = new_job(account.account_id)
    stores.jobs.admit(waiting, LIMITS, now=NOW, route=None)

    assert stores.jobs.cancel(in_ring.job_id, now=NOW + 1).state is JobState.CANCELLED
    assert counts(stores, account.account_id) == (2, 1, 0)
    assert stores.jobs.cancel(waiting.job_id, now=NOW + 1).state is JobState.CANCELLED
    assert counts(stores, account.account_id) == (1, 1, 0)
    assert stores.jobs.backlog(account.account_id, limit=5) == []
    with pytest.raises(JobStateConflict):
        stores.jobs.cancel(in_ring.job_id, now=NOW + 2)
    assert claim(stores, in_ring).outcome is ClaimOutcome.GONE


def test_cancel_of_a_running_job_is_a_request(stores: Stores) -> None:
    account = stores.accounts.create(tier="free", name="", now=NOW)
    job = admit_to_ring(stores, account.account_id)
    claim(stores, job)

    cancelled = stores.jobs.cancel(job.job_id, now=NOW + 1)

    assert cancelled.state is JobState.RUNNING and cancelled.cancel_requested
    done = stores.jobs.finish(job.job_id, "node-a", JobState.CANCELLED, now=NOW + 2)
    assert done.state is JobState.CANCELLED and counts(stores, account.account_id) == (0, 0, 0)


def test_fail_queued_records_the_error(stores: Stores) -> None:
    account = stores.accounts.create(tier="free", name="", now=NOW)
    job = admit_to_ring(stores, account.account_id)

    failed = stores.jobs.fail_queued(job.job_id, {"code": "dead_lettered"}, now=NOW + 1)

    assert failed.state is JobState.FAILED and stores.jobs.get(job.job_id).error == {
        "code": "dead_lettered"
    }
    assert counts(stores, account.account_id) == (0, 0, 0)


def test_promotion_moves_the_oldest_backlog_job_into_a_free_slot_once(stores: Stores) -> None:
    account = stores.accounts.create(tier="free", name="", now=NOW)
    first = admit_to_ring(stores, account.account_id)
    admit_to_ring(stores, account.account_id)
    older, newer = new_job(account.account_id), new_job(account.account_id)
    for job in (older, newer):
        stores.jobs.admit(job, LIMITS, now=NOW, route=None)
    with pytest.raises(RingFull):
        stores.jobs.promote(older.job_id, account.account_id, LIMITS, route=SHARED_ROUTE)

    claim(stores, first)  # ring 1, running 1: active 2 = concurrency, still no room
    with pytest.raises(RingFull):
        stores.jobs.promote(older.job_id, account.account_id, LIMITS, route=SHARED_ROUTE)
    stores.jobs.finish(first.job_id, "node-a", JobState.COMPLETED, now=NOW + 1)

    [entry, _] = stores.jobs.backlog(account.account_id, limit=5)
    assert entry.job_id == older.job_id and entry.models == []
    stores.jobs.promote(older.job_id, account.account_id, LIMITS, route=SHARED_ROUTE)
    with pytest.raises(JobStateConflict):
        stores.jobs.promote(older.job_id, account.account_id, LIMITS, route=SHARED_ROUTE)
    assert stores.jobs.get(older.job_id).in_ring
    assert counts(stores, account.account_id) == (3, 2, 0)


# -- listing ------------------------------------------------------------------------------


def test_listing_is_newest_first_paged_by_cursor_and_filtered(stores: Stores) -> None:
    account = stores.accounts.create(tier="enterprise", name="", now=NOW)
    other = stores.accounts.create(tier="free", name="", now=NOW)
    roomy = Limits(requests_per_minute=100, concurrency=50, queue_depth=100, ring_slots=50)
    ids = []
    for i in range(5):
        job = new_job(account.account_id, NOW + i)
        stores.jobs.admit(job, roomy, now=NOW + i, route=SHARED_ROUTE)
        ids.append(job.job_id)
    admit_to_ring(stores, other.account_id)
    stores.jobs.cancel(ids[1], now=NOW + 9)

    first = stores.jobs.list_for_account(account.account_id, state=None, limit=2, cursor=None)
    second = stores.jobs.list_for_account(
        account.account_id, state=None, limit=2, cursor=first.cursor
    )
    third = stores.jobs.list_for_account(
        account.account_id, state=None, limit=2, cursor=second.cursor
    )
    cancelled = stores.jobs.list_for_account(
        account.account_id, state=JobState.CANCELLED, limit=10, cursor=None
    )

    assert [j.job_id for j in first.jobs + second.jobs + third.jobs] == ids[::-1]
    assert third.cursor is None
    assert [j.job_id for j in cancelled.jobs] == [ids[1]]
    with pytest.raises(InvalidCursor):
        stores.jobs.list_for_account(account.account_id, state=None, limit=2, cursor="!!")


# -- nodes and models ---------------------------------------------------------------------


def test_the_registry_tracks_nodes_and_the_queued_counts(stores: Stores) -> None:
    account = stores.accounts.create(tier="free", name="", now=NOW)
    node = NodeInfo(
        "i-0abc",
        NodeStatus.IDLE,
        NOW,
        queue_url="https://sqs/node",
        gpu="A10G",
        free_bytes=10,
        cached={"k1": 5},
    )
    stores.nodes.register(node)
    stores.jobs.admit(new_job(account.account_id), LIMITS, now=NOW, route="i-0abc")
    admit_to_ring(stores, account.account_id)

    stores.nodes.heartbeat(
        "i-0abc",
        now=NOW + 5,
        status=NodeStatus.BUSY,
        cached={"k1": 5, "k2": 7},
        free_bytes=3,
        current_job="j",
        current_started_at=NOW + 1,
        ewma_run_seconds=12.5,
        bandwidth_bytes_per_second=1e8,
    )

    nodes, shared = stores.nodes.snapshot()
    [seen] = nodes
    assert (seen.status, seen.cached, seen.queued, seen.ewma_run_seconds) == (
        NodeStatus.BUSY,
        {"k1": 5, "k2": 7},
        1,
        12.5,
    )
    assert shared == 1
    stores.nodes.set_status("i-0abc", NodeStatus.DRAINING)
    assert stores.nodes.get("i-0abc").status is NodeStatus.DRAINING
    stores.nodes.register(node)  # registering again keeps the queue's count
    assert stores.nodes.get("i-0abc").queued == 1
    stores.nodes.remove("i-0abc")
    assert stores.nodes.snapshot()[0] == []
    with pytest.raises(NodeNotFound):
        stores.nodes.set_status("i-0abc", NodeStatus.IDLE)


def test_the_model_catalog_records_sizes_and_hashes(stores: Stores) -> None:
    record = ModelRecord("k" * 64, "https://huggingface.co/x", 1234, "a" * 64, "loras", "models/k")
    stores.models.put(record)

    assert stores.models.get_many(["k" * 64, "missing"]) == {"k" * 64: record}


def test_an_unreachable_dynamodb_is_a_storage_error(settings: Settings) -> None:
    from comfyfleet.errors import StorageError
    from comfyfleet.store.dynamo import dynamo_stores

    stores = dynamo_stores(settings, endpoint_url="http://127.0.0.1:9", region="us-east-1")

    with pytest.raises(StorageError):
        stores.jobs.get("01HNOTAJOB0000000000000000")
    with pytest.raises(StorageError):
        stores.jobs.extend_lease("01HNOTAJOB0000000000000000", "n", until=1.0)


def test_reroute_moves_a_queued_job_between_queues_once(stores: Stores) -> None:
    account = stores.accounts.create(tier="free", name="", now=NOW)
    stores.nodes.register(NodeInfo("i-1", NodeStatus.IDLE, NOW, queue_url="https://sqs/i-1"))
    job = new_job(account.account_id)
    stores.jobs.admit(job, LIMITS, now=NOW, route="i-1")

    stores.jobs.reroute(job.job_id, from_route="i-1", to_route=SHARED_ROUTE)

    assert stores.jobs.get(job.job_id).route == SHARED_ROUTE
    assert stores.nodes.get("i-1").queued == 0 and stores.nodes.snapshot()[1] == 1
    with pytest.raises(JobStateConflict):
        stores.jobs.reroute(job.job_id, from_route="i-1", to_route=SHARED_ROUTE)


def test_a_cancel_request_can_be_read_cheaply(stores: Stores) -> None:
    account = stores.accounts.create(tier="free", name="", now=NOW)
    job = admit_to_ring(stores, account.account_id)
    claim(stores, job)
    assert stores.jobs.cancel_requested(job.job_id) is False

    stores.jobs.cancel(job.job_id, now=NOW + 1)

    assert stores.jobs.cancel_requested(job.job_id) is True
    with pytest.raises(JobNotFound):
        stores.jobs.cancel_requested("01HNOTAJOB0000000000000000")


def test_a_drain_set_by_an_operator_outlives_the_nodes_own_heartbeats(stores: Stores) -> None:
    stores.nodes.register(NodeInfo("i-0abc", NodeStatus.IDLE, NOW, queue_url="https://sqs/n"))
    stores.nodes.set_status("i-0abc", NodeStatus.DRAINING)

    recorded = stores.nodes.heartbeat(
        "i-0abc",
        now=NOW + 5,
        status=NodeStatus.IDLE,
        cached={"k1": 5},
        free_bytes=3,
        current_job=None,
        current_started_at=None,
        ewma_run_seconds=None,
        bandwidth_bytes_per_second=None,
    )

    assert recorded is NodeStatus.DRAINING
    seen = stores.nodes.get("i-0abc")
    assert (seen.status, seen.heartbeat_at) == (NodeStatus.DRAINING, NOW + 5)
    assert seen.cached == {"k1": 5}
    with pytest.raises(NodeNotFound):
        stores.nodes.heartbeat(
            "i-gone",
            now=NOW,
            status=NodeStatus.IDLE,
            cached={},
            free_bytes=0,
            current_job=None,
            current_started_at=None,
            ewma_run_seconds=None,
            bandwidth_bytes_per_second=None,
        )
