"""The operator's list of every account's jobs (JobStore.list_all), on memory and DynamoDB:
newest first across accounts and days, by state, in pages whose cursor crosses days, and
nothing older than the history's retention."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from comfyfleet import ids
from comfyfleet.domain import SHARED_ROUTE, Job, JobState, Limits
from comfyfleet.ids import new_job_id
from comfyfleet.settings import Settings
from comfyfleet.store import Stores
from comfyfleet.store.memory import memory_stores
from tests.support import basic_graph

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
DAY = 86400.0
LIMITS = Limits(requests_per_minute=100, concurrency=10, queue_depth=50, ring_slots=10)


@pytest.fixture(params=["memory", "dynamo"])
def stores(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Stores]:
    # Job ids are monotonic per process: ids made earlier at a later time would carry that
    # time (and so that day), not the one these tests give.
    ids.reset()
    if request.param == "memory":
        yield memory_stores(settings)
    else:
        yield request.getfixturevalue("dynamo")


def admitted(stores: Stores, account_id: str, at: float) -> Job:
    job = Job(new_job_id(at), account_id, JobState.QUEUED, at, basic_graph(), tier="pro")
    stores.jobs.admit(job, LIMITS, now=at, route=SHARED_ROUTE)
    return job


def test_every_accounts_jobs_come_newest_first_across_days_in_pages(stores: Stores) -> None:
    first = stores.accounts.create(tier="pro", name="", now=NOW - 90 * DAY).account_id
    second = stores.accounts.create(tier="pro", name="", now=NOW - 90 * DAY).account_id
    expired = admitted(stores, first, NOW - 60 * DAY)  # past the 30 days of history
    older = [admitted(stores, first, NOW - 2 * DAY + i) for i in range(2)]
    newer = [admitted(stores, account, NOW - 60 + i) for i, account in enumerate((first, second))]
    stores.jobs.cancel(newer[0].job_id, now=NOW)

    pages = []
    cursor = None
    for _ in range(4):
        page = stores.jobs.list_all(state=None, limit=3, cursor=cursor, now=NOW)
        pages.append([job.job_id for job in page.jobs])
        cursor = page.cursor
        if cursor is None:
            break
    cancelled = stores.jobs.list_all(state=JobState.CANCELLED, limit=10, cursor=None, now=NOW)

    listed = [job_id for page in pages for job_id in page]
    expected = [j.job_id for j in (*reversed(newer), *reversed(older))]
    assert listed == expected and expired.job_id not in listed
    assert len(pages[0]) == 3  # a page crosses from today into the day before yesterday
    assert [job.job_id for job in cancelled.jobs] == [newer[0].job_id]
    assert cancelled.jobs[0].account_id == first and cancelled.cursor is None
