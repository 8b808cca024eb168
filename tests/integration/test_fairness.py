"""Fairness on SQS FIFO and DynamoDB (moto): the backlog makes one consumer round robin.

SQS FIFO alone serves the oldest message first, so a heavy user's whole backlog would run
before a light user's first job; with per-account ring slots it does not.
"""

from __future__ import annotations

from collections import Counter

import pytest

from comfyfleet.clock import SystemClock
from comfyfleet.domain import JobState
from comfyfleet.events import MemoryJobEvents
from comfyfleet.queues import JobQueues, SqsJobQueues
from comfyfleet.resources import Provisioned
from comfyfleet.scheduling import Dispatcher, JobRequest
from comfyfleet.settings import Settings
from comfyfleet.store import Stores
from comfyfleet.store.ports import ClaimOutcome

WORKFLOW = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8}}}


def serve(
    dispatcher: Dispatcher, queues: JobQueues, queue_url: str, *, jobs: int | None = None
) -> list[tuple[str, str]]:
    """One consumer: receive → claim → finish → delete, until the queue is empty."""
    served: list[tuple[str, str]] = []
    while jobs is None or len(served) < jobs:
        received = queues.receive(queue_url, wait_seconds=0, visibility_seconds=60)
        if received is None:
            return served
        claim = dispatcher.claim(received.message, "node-1")
        assert claim.outcome in (ClaimOutcome.CLAIMED, ClaimOutcome.GONE), claim
        if claim.job is not None:
            served.append((claim.job.account_id, claim.job.job_id))
            dispatcher.finish(claim.job, "node-1", JobState.COMPLETED, received.message.share)
        queues.delete(received)
    return served


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


def submit(
    dispatcher: Dispatcher, settings: Settings, stores: Stores, tier: str, count: int
) -> str:
    account = stores.accounts.create(tier=tier, name=tier, now=SystemClock().now())
    limits = account.limits(settings)
    for _ in range(count):
        dispatcher.submit(account.account_id, tier, limits, JobRequest(WORKFLOW, []))
    return account.account_id


def test_a_light_user_is_served_before_a_heavy_users_fifth_job(
    dispatcher: Dispatcher,
    sqs_queues: SqsJobQueues,
    aws: Provisioned,
    settings: Settings,
    dynamo: Stores,
) -> None:
    heavy = submit(dispatcher, settings, dynamo, "free", 10)
    light = submit(dispatcher, settings, dynamo, "free", 2)

    order = [account for account, _ in serve(dispatcher, sqs_queues, aws.queue_urls["shared"])]

    assert Counter(order) == {heavy: 10, light: 2}
    fifth_heavy = [i for i, account in enumerate(order) if account == heavy][4]
    assert all(i < fifth_heavy for i, account in enumerate(order) if account == light), order


def test_the_heavy_users_own_jobs_run_in_the_order_submitted(
    dispatcher: Dispatcher,
    sqs_queues: SqsJobQueues,
    aws: Provisioned,
    settings: Settings,
    dynamo: Stores,
) -> None:
    heavy = submit(dispatcher, settings, dynamo, "free", 6)
    submitted = [
        j.job_id
        for j in reversed(
            dynamo.jobs.list_for_account(heavy, state=None, limit=10, cursor=None).jobs
        )
    ]

    served = [job for _, job in serve(dispatcher, sqs_queues, aws.queue_urls["shared"])]

    assert served == submitted


def test_under_saturation_service_shares_follow_the_ring_slots(
    dispatcher: Dispatcher,
    sqs_queues: SqsJobQueues,
    aws: Provisioned,
    settings: Settings,
    dynamo: Stores,
) -> None:
    accounts = {
        tier: submit(dispatcher, settings, dynamo, tier, 30)
        for tier in ("free", "pro", "enterprise")
    }

    served = serve(dispatcher, sqs_queues, aws.queue_urls["shared"], jobs=45)

    shares = Counter(account for account, _ in served)
    # slots 2 : 3 : 4 of 9 → 10, 15 and 20 of 45 jobs
    assert abs(shares[accounts["free"]] - 10) <= 1
    assert abs(shares[accounts["pro"]] - 15) <= 1
    assert abs(shares[accounts["enterprise"]] - 20) <= 1
