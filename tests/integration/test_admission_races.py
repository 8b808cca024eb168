"""Races against DynamoDB and SQS (moto): limits hold, one claimer wins, cancels stay consistent."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from comfyfleet.clock import SystemClock
from comfyfleet.domain import Account, JobState, Limits, Scope
from comfyfleet.errors import JobNotFound, JobStateConflict, LimitExceeded
from comfyfleet.events import MemoryJobEvents
from comfyfleet.queues import SqsJobQueues
from comfyfleet.resources import Provisioned
from comfyfleet.scheduling import Dispatcher, JobRequest, job_of_account
from comfyfleet.settings import Settings
from comfyfleet.store import Stores
from comfyfleet.store.ports import ClaimOutcome

WORKFLOW = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8}}}


def in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` in ``count`` threads released at once; results or exceptions."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except Exception as exc:  # collected for the assertions
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.fixture
def dispatcher(
    dynamo: Stores, sqs_queues: SqsJobQueues, aws: Provisioned, settings: Settings
) -> Dispatcher:
    return Dispatcher(
        dynamo,
        sqs_queues,
        settings,
        SystemClock(),
        shared_url=aws.queue_urls["shared"],
        events=MemoryJobEvents(),
    )


@pytest.mark.parametrize(("limit", "reason"), [(7, "rate_limit_exceeded"), (100, "queue_full")])
def test_fifty_concurrent_submits_against_a_limit_admit_exactly_that_many(
    dispatcher: Dispatcher, dynamo: Stores, limit: int, reason: str
) -> None:
    account = dynamo.accounts.create(tier="free", name="", now=SystemClock().now())
    limits = Limits(
        requests_per_minute=limit, concurrency=2, queue_depth=min(limit, 9), ring_slots=2
    )
    allowed = min(limit, 9)

    results = in_threads(
        50,
        lambda _: dispatcher.submit(account.account_id, "free", limits, JobRequest(WORKFLOW, [])),
    )

    admitted = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, LimitExceeded)]
    assert len(admitted) == allowed and len(refused) == 50 - allowed
    assert {r.code for r in refused} == {reason}
    counters = dynamo.limits.counters(account.account_id, now=SystemClock().now())
    assert (counters.waiting, counters.ring) == (allowed, 2)
    jobs = dynamo.jobs.list_for_account(account.account_id, state=None, limit=100, cursor=None)
    assert len(jobs.jobs) == allowed
    assert sum(job.in_ring for job in jobs.jobs) == 2


def test_two_agents_claiming_one_job_exactly_one_wins(
    dispatcher: Dispatcher, dynamo: Stores, sqs_queues: SqsJobQueues, aws: Provisioned
) -> None:
    account = dynamo.accounts.create(tier="free", name="", now=SystemClock().now())
    limits = Limits(60, 2, 100, 2)
    admitted = dispatcher.submit(account.account_id, "free", limits, JobRequest(WORKFLOW, []))
    received = sqs_queues.receive(aws.queue_urls["shared"], wait_seconds=0, visibility_seconds=60)
    assert received is not None and received.message.job_id == admitted.job.job_id

    claims = in_threads(
        2,
        lambda i: dynamo.jobs.claim(
            received.message, f"node-{i}", now=SystemClock().now(), lease_seconds=60, max_attempts=3
        ),
    )

    outcomes = Counter(claim.outcome for claim in claims)
    assert outcomes == {ClaimOutcome.CLAIMED: 1, ClaimOutcome.DUPLICATE: 1}
    winner = next(c for c in claims if c.outcome is ClaimOutcome.CLAIMED)
    assert dynamo.jobs.get(admitted.job.job_id).node_id == winner.job.node_id
    counters = dynamo.limits.counters(account.account_id, now=SystemClock().now())
    assert (counters.waiting, counters.ring, counters.running) == (0, 0, 1)


def test_cancel_racing_a_claim_ends_consistent(
    dispatcher: Dispatcher, dynamo: Stores, sqs_queues: SqsJobQueues, aws: Provisioned
) -> None:
    limits = Limits(60, 2, 100, 2)
    for _ in range(10):
        account = dynamo.accounts.create(tier="free", name="", now=SystemClock().now())
        job = dispatcher.submit(account.account_id, "free", limits, JobRequest(WORKFLOW, [])).job
        received = sqs_queues.receive(
            aws.queue_urls["shared"], wait_seconds=0, visibility_seconds=60
        )
        assert received is not None
        sqs_queues.delete(received)

        def race(i: int, job_id: str = job.job_id, message: Any = received.message) -> Any:
            now = SystemClock().now()
            if i == 0:
                return dynamo.jobs.claim(message, "node", now=now, lease_seconds=60, max_attempts=3)
            return dispatcher.cancel(job_id, limits.share)

        claim, cancel = in_threads(2, race)

        final = dynamo.jobs.get(job.job_id)
        counters = dynamo.limits.counters(account.account_id, now=SystemClock().now())
        if claim.outcome is ClaimOutcome.CLAIMED:  # the claim came first: cancel is a request
            assert final.state is JobState.RUNNING and final.cancel_requested
            assert (counters.waiting, counters.ring, counters.running) == (0, 0, 1)
        else:  # the cancel came first: the claim found the job gone
            assert claim.outcome is ClaimOutcome.GONE
            assert final.state is JobState.CANCELLED and cancel.state is JobState.CANCELLED
            assert (counters.waiting, counters.ring, counters.running) == (0, 0, 0)


def test_a_revoked_key_is_rejected(dynamo: Stores) -> None:
    account: Account = dynamo.accounts.create(tier="free", name="", now=1.0)
    key, plaintext = dynamo.keys.create(account.account_id, [Scope.JOBS], name="", now=1.0)
    assert (found := dynamo.keys.find(plaintext)) is not None and found.active

    dynamo.keys.revoke(key.key_id, now=2.0)

    found = dynamo.keys.find(plaintext)
    assert found is not None and not found.active


def test_a_job_of_another_account_is_not_found(dispatcher: Dispatcher, dynamo: Stores) -> None:
    mine = dynamo.accounts.create(tier="free", name="", now=SystemClock().now())
    theirs = dynamo.accounts.create(tier="free", name="", now=SystemClock().now())
    job = dispatcher.submit(
        mine.account_id, "free", Limits(60, 2, 100, 2), JobRequest(WORKFLOW, [])
    ).job

    assert job_of_account(dynamo, job.job_id, mine.account_id).job_id == job.job_id
    with pytest.raises(JobNotFound):
        job_of_account(dynamo, job.job_id, theirs.account_id)
    dispatcher.cancel(job.job_id, Limits(60, 2, 100, 2).share)
    with pytest.raises(JobStateConflict):
        dispatcher.cancel(job.job_id, Limits(60, 2, 100, 2).share)
