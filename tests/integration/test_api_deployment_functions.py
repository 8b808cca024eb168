"""Deployments through the api function on REST proxy events against moto: a version stored
in the deployments table, read back, run into a queued job that names it, deleted; and a
version too large for one DynamoDB item refused with 413 before anything is written."""

from __future__ import annotations

import os

import pytest

from comfyfleet.resources import Provisioned
from comfyfleet.store import Stores
from tests.deployment_support import deployment_body
from tests.integration.lambda_functions import Functions


@pytest.fixture
def functions(aws: Provisioned, dynamo: Stores) -> Functions:
    return Functions.load(aws, dynamo)


def test_a_deployment_is_stored_run_and_deleted_through_the_function(
    functions: Functions,
) -> None:
    account = functions.account()
    key = account.key

    created = functions.call("POST", "/v1/deployments", key, body=deployment_body())
    shown = functions.call("GET", "/v1/deployments/invert", key, query={"version": "1"})
    run = functions.call(
        "POST", "/v1/deployments/invert/jobs", key, body={"inputs": {"prefix": "fn"}}
    )

    assert created.status == 201 and created.body["version"] == 1
    assert shown.status == 200 and shown.body["input_schema"]["required"] == ["prefix"]
    assert run.status == 202 and run.body["deployment"] == {"name": "invert", "version": 1}
    job = functions.stores.jobs.get(run.body["job_id"])
    assert job.workflow["3"]["inputs"]["filename_prefix"] == "fn"
    assert job.deployment == {"name": "invert", "version": 1}
    read = functions.call("GET", f"/v1/jobs/{job.job_id}", key)
    assert read.body["deployment"] == {"name": "invert", "version": 1}
    deleted = functions.call("DELETE", "/v1/deployments/invert", key)
    assert deleted.status == 200 and deleted.body["versions"] == 1
    gone = functions.call("GET", "/v1/deployments/invert", key)
    assert gone.status == 404 and gone.code == "not_found"


def test_a_version_too_large_for_one_item_is_413(functions: Functions) -> None:
    account = functions.account()
    body = deployment_body()
    # 900 KB of hex passes the 1 MiB workflow bound; compressed it is still over 400 KB.
    body["workflow"]["1"]["inputs"]["note"] = os.urandom(450_000).hex()

    refused = functions.call("POST", "/v1/deployments", account.key, body=body)

    assert refused.status == 413 and refused.code == "payload_too_large"
    assert functions.call("GET", "/v1/deployments/invert", account.key).status == 404
