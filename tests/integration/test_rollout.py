"""Two environments in service at once (a rollout), on moto with real agents and fakecomfy:
each agent publishes its environment's catalogue and reports its environment; the api
function serves their union as /v1/object_info and sends a job only the new environment can
run to its nodes; a node that lacks a class hands the job back instead of failing it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from comfyfleet.aws import client
from comfyfleet.catalogue import NodeCatalogue
from comfyfleet.domain import CORE_ENVIRONMENT, JobState, Limits
from comfyfleet.events import MemoryJobEvents
from comfyfleet.resources import CATALOGUE_KEY, Provisioned, catalogue_key
from comfyfleet.scheduling import Dispatcher, JobRequest
from comfyfleet.settings import Settings
from comfyfleet.store import Stores
from fakecomfy.node_types import core_object_info
from gpu_agent.runner import Ending
from tests.integration.agent_nodes import Node, sqs_dispatcher, start_node
from tests.integration.conftest import REGION
from tests.integration.lambda_functions import Functions
from tests.support import basic_graph

OLD, NEW = "0ld0e7ab1e", "4e3c5d2b1a"  # node setup's environment ids are short hashes
LACKING = "ImageInvert"  # basic_graph uses it; the old environment does not have it
LIMITS = Limits(requests_per_minute=100, concurrency=4, queue_depth=50, ring_slots=4)


@pytest.fixture
def make_node(aws: Provisioned, dynamo: Stores, tmp_path: Path) -> Iterator[Callable[..., Node]]:
    nodes: list[Node] = []

    def make(name: str, environment: str | None, catalogue: dict[str, Any]) -> Node:
        node = start_node(
            name,
            aws=aws,
            dynamo=dynamo,
            tmp_path=tmp_path,
            environment=environment,
            catalogue=catalogue,
            events=MemoryJobEvents(),
            metrics_enabled=False,
        )
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.stop()


def old_catalogue() -> dict[str, Any]:
    catalogue = core_object_info()
    del catalogue[LACKING]
    return catalogue


@pytest.fixture
def rollout(make_node: Callable[..., Node]) -> tuple[Node, Node]:
    return make_node("old", OLD, old_catalogue()), make_node("new", NEW, core_object_info())


@pytest.fixture
def dispatcher(dynamo: Stores, aws: Provisioned, settings: Settings) -> Dispatcher:
    return sqs_dispatcher(dynamo, aws, settings, MemoryJobEvents())


@pytest.fixture
def functions(aws: Provisioned, dynamo: Stores) -> Functions:
    return Functions.load(aws, dynamo)


def submit_directly(dispatcher: Dispatcher, dynamo: Stores) -> str:
    """A job submitted without the catalogues (as before the rollout): any node may take it."""
    account = dynamo.accounts.create(tier="pro", name="", now=time.time()).account_id
    return dispatcher.submit(account, "pro", LIMITS, JobRequest(basic_graph(), [])).job.job_id


def test_each_environment_publishes_its_catalogue_and_its_nodes_report_it(
    rollout: tuple[Node, Node], make_node: Callable[..., Node], dynamo: Stores
) -> None:
    make_node("plain", None, core_object_info())  # node setup never ran there
    s3 = client("s3", region=REGION)
    bucket = rollout[0].settings.model_bucket_name

    def published(key: str) -> NodeCatalogue:
        return NodeCatalogue.from_json(s3.get_object(Bucket=bucket, Key=key)["Body"].read())

    assert LACKING not in published(catalogue_key(OLD))
    assert LACKING in published(catalogue_key(NEW))
    assert LACKING in published(catalogue_key(CORE_ENVIRONMENT))
    assert "SaveImage" in published(CATALOGUE_KEY)  # the last node to start: the fallback
    assert dynamo.nodes.get("old").environment_id == OLD
    assert dynamo.nodes.get("new").environment_id == NEW
    assert dynamo.nodes.get("plain").environment_id == CORE_ENVIRONMENT


def test_the_api_serves_the_union_of_the_environments_in_service(
    rollout: tuple[Node, Node], functions: Functions
) -> None:
    account = functions.account()

    everything = functions.call("GET", "/v1/object_info", account.key)
    etag = everything.headers["ETag"]
    unchanged = functions.call(
        "GET", "/v1/object_info", account.key, headers={"If-None-Match": etag}
    )
    one = functions.call("GET", f"/v1/object_info/{LACKING}", account.key)
    unknown = functions.call("GET", "/v1/object_info/NoSuchNode", account.key)
    admin = functions.call("GET", "/v1/object_info", account.admin_key)

    assert everything.status == 200 and sorted(everything.body) == sorted(core_object_info())
    assert unchanged.status == 304 and unchanged.headers["ETag"] == etag
    assert one.status == 200 and one.body == {LACKING: core_object_info()[LACKING]}
    assert unknown.status == 404 and unknown.code == "not_found"
    assert admin.status == 403 and admin.code == "forbidden"


def test_a_job_only_the_new_environment_can_run_goes_to_its_node_and_runs_there(
    rollout: tuple[Node, Node], functions: Functions, dynamo: Stores
) -> None:
    old, new = rollout
    account = functions.account()
    graph = basic_graph()
    nowhere = {**graph, "4": {"class_type": "NoSuchNode", "inputs": {}}}

    accepted = functions.call("POST", "/v1/jobs", account.key, body={"prompt": graph})
    refused = functions.call("POST", "/v1/jobs", account.key, body={"prompt": nowhere})

    assert accepted.status == 202
    job = dynamo.jobs.get(accepted.body["job_id"])
    assert job.environments == [NEW] and job.route == "new"
    assert old.parts.agent._receive() is None  # nothing reaches the old node
    assert new.work() == [Ending.COMPLETED]
    done = dynamo.jobs.get(job.job_id)
    assert done.state is JobState.COMPLETED and done.node_id == "new"
    assert refused.status == 400 and refused.code == "invalid_workflow"
    [detail] = refused.body["error"]["details"]
    assert detail["node_id"] == "4" and "NoSuchNode" in detail["message"]


def test_a_node_lacking_a_class_hands_the_job_to_a_node_that_has_it(
    rollout: tuple[Node, Node], dispatcher: Dispatcher, dynamo: Stores
) -> None:
    old, new = rollout
    job_id = submit_directly(dispatcher, dynamo)

    assert old.work() == [Ending.HANDED_BACK]
    handed = dynamo.jobs.get(job_id)
    assert handed.state is JobState.QUEUED and handed.route == "new"
    assert handed.handed_back_by == [OLD] and handed.attempt == 0
    assert new.work() == [Ending.COMPLETED]
    done = dynamo.jobs.get(job_id)
    assert done.state is JobState.COMPLETED and done.attempt == 1 and done.error is None


def test_with_no_node_that_has_the_class_the_job_fails_node_class_unavailable(
    make_node: Callable[..., Node], dispatcher: Dispatcher, dynamo: Stores
) -> None:
    old = make_node("old", OLD, old_catalogue())
    job_id = submit_directly(dispatcher, dynamo)

    assert old.work() == [Ending.FAILED]

    failed = dynamo.jobs.get(job_id)
    assert failed.state is JobState.FAILED and failed.error is not None
    assert failed.error["code"] == "node_class_unavailable"
    assert failed.error["node_type"] == LACKING and failed.error["node_id"] == "2"
    assert old.parts.agent._receive() is None  # its message is gone
