"""The deployment store's contract, on memory and on DynamoDB (moto): versions numbered from
1 and never given twice, reads of a version, pages of names, deletes; and the job record's
note of the deployment it ran from."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from comfyfleet.deployments import Deployment, DeploymentInput, InputType
from comfyfleet.domain import Job, JobState, Limits
from comfyfleet.errors import DeploymentNotFound, InvalidCursor
from comfyfleet.ids import new_job_id
from comfyfleet.settings import Settings
from comfyfleet.store import Stores
from comfyfleet.store.memory import memory_stores
from tests.support import basic_graph

NOW = 1_800_000_000.0
ACCOUNT = "acct_01HZZZZZZZZZZZZZZZZZZZZZZZ"
OTHER = "acct_01HYYYYYYYYYYYYYYYYYYYYYYY"
WIDTH = DeploymentInput("width", "1", "width", InputType.INTEGER, default=64, maximum=512)


@pytest.fixture(params=["memory", "dynamo"])
def stores(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Stores]:
    if request.param == "memory":
        yield memory_stores(settings)
    else:
        yield request.getfixturevalue("dynamo")


def draft(name: str = "invert", account_id: str = ACCOUNT, **fields: object) -> Deployment:
    values: dict[str, object] = {
        "account_id": account_id,
        "name": name,
        "version": 0,
        "workflow": basic_graph(),
        "inputs": {"width": WIDTH},
        "created_at": NOW,
        "description": "inverted",
    }
    values.update(fields)
    return Deployment(**values)  # type: ignore[arg-type]


def test_versions_are_numbered_from_1_and_each_reads_back_whole(stores: Stores) -> None:
    first = stores.deployments.create(draft())
    second = stores.deployments.create(
        draft(created_at=NOW + 5, models=[{"url": "s3://m/a.safetensors", "folder": "loras"}])
    )

    assert (first.version, second.version) == (1, 2)
    assert stores.deployments.get(ACCOUNT, "invert") == second
    assert stores.deployments.get(ACCOUNT, "invert", 1) == first
    assert stores.deployments.get(ACCOUNT, "invert", 1).inputs["width"] == WIDTH
    for version in (0, 3):
        with pytest.raises(DeploymentNotFound):
            stores.deployments.get(ACCOUNT, "invert", version)
    with pytest.raises(DeploymentNotFound):
        stores.deployments.get(OTHER, "invert")


def test_concurrent_posts_of_one_name_get_distinct_versions(stores: Stores) -> None:
    with ThreadPoolExecutor(8) as pool:
        versions = list(pool.map(lambda i: stores.deployments.create(draft()).version, range(8)))

    assert sorted(versions) == list(range(1, 9))
    assert stores.deployments.get(ACCOUNT, "invert").version == 8


def test_a_delete_removes_every_version_and_the_numbers_are_not_given_again(
    stores: Stores,
) -> None:
    for _ in range(3):
        stores.deployments.create(draft())

    assert stores.deployments.delete(ACCOUNT, "invert") == 3
    with pytest.raises(DeploymentNotFound):
        stores.deployments.get(ACCOUNT, "invert")
    with pytest.raises(DeploymentNotFound):
        stores.deployments.delete(ACCOUNT, "invert")
    again = stores.deployments.create(draft(created_at=NOW + 60))
    assert again.version == 4
    for version in (1, 3):
        with pytest.raises(DeploymentNotFound):
            stores.deployments.get(ACCOUNT, "invert", version)
    assert stores.deployments.delete(ACCOUNT, "invert") == 1


def test_names_are_listed_in_pages_without_deleted_ones_or_other_accounts(
    stores: Stores,
) -> None:
    for name in ("d", "b", "a", "c", "e"):
        stores.deployments.create(draft(name))
    stores.deployments.create(draft("b", created_at=NOW + 9, description="newer"))
    stores.deployments.delete(ACCOUNT, "c")
    stores.deployments.create(draft("z", OTHER))

    first = stores.deployments.list_for_account(ACCOUNT, limit=2, cursor=None)
    second = stores.deployments.list_for_account(ACCOUNT, limit=2, cursor=first.cursor)

    assert [(s.name, s.version) for s in first.deployments] == [("a", 1), ("b", 2)]
    b = first.deployments[1]
    assert (b.created_at, b.updated_at, b.description) == (NOW, NOW + 9, "newer")
    assert [s.name for s in second.deployments] == ["d", "e"] and second.cursor is None
    with pytest.raises(InvalidCursor):
        stores.deployments.list_for_account(ACCOUNT, limit=2, cursor="%%%")


def test_a_job_keeps_the_deployment_it_ran_from(stores: Stores) -> None:
    account = stores.accounts.create(tier="free", name="", now=NOW)
    job = Job(
        new_job_id(NOW),
        account.account_id,
        JobState.QUEUED,
        NOW,
        basic_graph(),
        deployment={"name": "invert", "version": 2},
    )
    stores.jobs.admit(job, Limits(5, 2, 4, 2), now=NOW, route="shared")

    assert stores.jobs.get(job.job_id).deployment == {"name": "invert", "version": 2}
