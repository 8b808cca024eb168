"""Running deployments through the local gateway: the values placed into the stored graph and
nothing else changed, the job's record of its deployment, every way a run's values are
refused (status, code and the input's field), and the built-ins on the same path."""

from __future__ import annotations

from typing import Any

import pytest

from comfyfleet.catalogue import NodeCatalogue
from comfyfleet.resources import CATALOGUE_KEY
from comfyfleet.settings import Settings
from comfyfleet.templates import render_template
from tests.api_support import RATE_HEADERS, MemoryApi, error_of, memory_setup
from tests.deployment_support import deployment_body, with_input
from tests.support import basic_graph, checkpoint_graph

CHECKPOINT = "https://huggingface.co/org/repo/resolve/main/model.safetensors"


@pytest.fixture
def app(settings: Settings) -> MemoryApi:
    return memory_setup(settings)


def deployed(app: MemoryApi, body: dict[str, Any] | None = None) -> Any:
    client = app.client(app.account())
    created = client.post("/v1/deployments", body or deployment_body())
    assert created.status == 201, created.json()
    return client


def test_a_run_places_the_values_and_defaults_and_changes_nothing_else(app: MemoryApi) -> None:
    client = deployed(app)

    accepted = client.post(
        "/v1/deployments/invert/jobs", {"inputs": {"prefix": "cat", "width": 96}}
    )

    assert accepted.status == 202
    body = accepted.json()
    assert body["status"] == "queued" and body["deployment"] == {"name": "invert", "version": 1}
    expected = basic_graph()
    expected["1"]["inputs"]["width"] = 96  # given
    expected["1"]["inputs"]["color"] = 0  # its default (the graph's value too)
    expected["3"]["inputs"]["filename_prefix"] = "cat"
    job = app.world.stores.jobs.get(body["job_id"])
    assert job.workflow == expected
    assert job.deployment == {"name": "invert", "version": 1}
    shown = client.get(f"/v1/jobs/{body['job_id']}").json()
    assert shown["deployment"] == {"name": "invert", "version": 1}
    stored = client.get("/v1/deployments/invert").json()["workflow"]
    assert stored == basic_graph()  # the stored graph is untouched by runs


def test_a_run_of_an_older_version_uses_that_versions_graph(app: MemoryApi) -> None:
    client = deployed(app)
    second = deployment_body()
    second["workflow"]["1"]["inputs"]["height"] = 32
    client.post("/v1/deployments", second)

    old = client.post("/v1/deployments/invert/jobs", {"inputs": {"prefix": "a"}, "version": 1})
    new = client.post("/v1/deployments/invert/jobs", {"inputs": {"prefix": "a"}})

    old_job = app.world.stores.jobs.get(old.json()["job_id"])
    new_job = app.world.stores.jobs.get(new.json()["job_id"])
    assert (old_job.deployment, old_job.workflow["1"]["inputs"]["height"]) == (
        {"name": "invert", "version": 1},
        64,
    )
    assert (new_job.deployment, new_job.workflow["1"]["inputs"]["height"]) == (
        {"name": "invert", "version": 2},
        32,
    )
    missing = client.post("/v1/deployments/invert/jobs", {"inputs": {"prefix": "a"}, "version": 7})
    assert missing.status == 404 and error_of(missing)["code"] == "not_found"


@pytest.mark.parametrize(
    ("inputs", "field", "message"),
    [
        ({"prefix": "a", "depth": 3}, "body.inputs.depth", "unknown input"),
        ({}, "body.inputs.prefix", "is required"),
        ({"prefix": 7}, "body.inputs.prefix", "must be a string"),
        ({"prefix": "a", "width": "96"}, "body.inputs.width", "must be an integer"),
        ({"prefix": "a", "width": 96.5}, "body.inputs.width", "must be an integer"),
        ({"prefix": "a", "width": True}, "body.inputs.width", "must be an integer"),
        ({"prefix": "a", "width": 4}, "body.inputs.width", "the minimum is 8"),
        ({"prefix": "a", "width": 2048}, "body.inputs.width", "the maximum is 1024"),
    ],
)
def test_values_that_do_not_fit_are_400_naming_the_input(
    app: MemoryApi, inputs: dict[str, Any], field: str, message: str
) -> None:
    client = deployed(app)

    refused = client.post("/v1/deployments/invert/jobs", {"inputs": inputs})

    assert refused.status == 400 and error_of(refused)["code"] == "invalid_request"
    [detail] = error_of(refused)["details"]
    assert detail["field"] == field and message in detail["message"]
    assert app.world.metrics.rejections == ["invalid_request"]


def test_a_value_outside_its_enum_is_refused(app: MemoryApi) -> None:
    client = deployed(
        app,
        with_input("color", {"node": "1", "input": "color", "type": "integer", "enum": [0, 255]}),
    )

    refused = client.post("/v1/deployments/invert/jobs", {"inputs": {"prefix": "a", "color": 7}})

    assert refused.status == 400
    assert error_of(refused)["details"] == [
        {"field": "body.inputs.color", "message": "must be one of [0, 255]"}
    ]


def test_a_value_the_fleets_catalogue_refuses_is_named_by_its_input(
    app: MemoryApi, catalogue: NodeCatalogue
) -> None:
    body = with_input("height", {"node": "1", "input": "height", "type": "integer", "default": 64})
    client = deployed(app, body)
    bucket = app.world.settings.model_bucket_name
    app.world.objects.put(bucket, CATALOGUE_KEY, catalogue.to_json().encode())
    app.world.clock.advance(61)  # the API reads the catalogue again at most once a minute

    refused = client.post(
        "/v1/deployments/invert/jobs", {"inputs": {"prefix": "a", "height": 99_999}}
    )

    assert refused.status == 400 and error_of(refused)["code"] == "invalid_request"
    assert error_of(refused)["details"] == [
        {
            "field": "body.inputs.height",
            "code": "value_out_of_range",
            "message": "value 99999 is bigger than the maximum 16384",
        }
    ]


def test_model_and_image_inputs_take_urls_under_the_same_rules(app: MemoryApi) -> None:
    graph = checkpoint_graph(CHECKPOINT)
    body = {
        "name": "ckpt",
        "workflow": graph,
        "inputs": {"model": {"node": "4", "input": "ckpt_name", "type": "model"}},
    }
    client = deployed(app, body)
    other = "https://civitai.com/api/download/models/12345"

    accepted = client.post("/v1/deployments/ckpt/jobs", {"inputs": {"model": other}})
    bare = client.post("/v1/deployments/ckpt/jobs", {"inputs": {"model": "v1-5.safetensors"}})
    elsewhere = client.post(
        "/v1/deployments/ckpt/jobs", {"inputs": {"model": "https://example.com/m.safetensors"}}
    )

    assert accepted.status == 202
    job = app.world.stores.jobs.get(accepted.json()["job_id"])
    assert [model["url"] for model in job.models] == [other]
    assert bare.status == 400 and error_of(bare)["details"][0]["field"] == "body.inputs.model"
    assert elsewhere.status == 400 and error_of(elsewhere)["details"] == [
        {
            "field": "body.inputs.model",
            "code": "url_not_allowed",
            "message": error_of(elsewhere)["details"][0]["message"],
        }
    ]


def test_a_run_is_admitted_like_a_submit(app: MemoryApi) -> None:
    client = deployed(app)
    key = {"Idempotency-Key": "run-1"}
    run = {"inputs": {"prefix": "a"}, "metadata": {"order": 3}}

    first = client.post("/v1/deployments/invert/jobs", run, headers=key)
    again = client.post("/v1/deployments/invert/jobs", run, headers=key)
    other = client.post("/v1/deployments/invert/jobs", {"inputs": {"prefix": "b"}}, headers=key)
    hook = client.post(
        "/v1/deployments/invert/jobs",
        {"inputs": {"prefix": "a"}, "webhook_url": "http://10.0.0.1/hook"},
    )

    assert first.status == again.status == 202 and again.json() == first.json()
    assert again.header("Idempotent-Replayed") == "true"
    assert all(first.header(name) for name in RATE_HEADERS)
    assert app.world.stores.jobs.get(first.json()["job_id"]).metadata == {"order": 3}
    assert other.status == 409 and error_of(other)["code"] == "idempotency_conflict"
    assert hook.status == 400 and error_of(hook)["details"][0]["field"] == "body.webhook_url"
    assert len(app.world.metrics.latencies_ms) == 1


def test_a_run_counts_against_the_accounts_queue(app: MemoryApi) -> None:
    client = app.client(app.account(queue_depth=1))
    client.post("/v1/deployments", deployment_body())

    first = client.post("/v1/deployments/invert/jobs", {"inputs": {"prefix": "a"}})
    second = client.post("/v1/deployments/invert/jobs", {"inputs": {"prefix": "a"}})

    assert first.status == 202
    assert second.status == 429 and error_of(second)["code"] == "queue_full"


def test_a_built_in_runs_through_the_deployment_path_with_the_templates_graph(
    app: MemoryApi,
) -> None:
    client = app.client(app.account())
    params = {"prompt": "a lighthouse", "seed": 42, "width": 768}

    run = client.post("/v1/deployments/sd15/jobs", {"inputs": params})
    template = client.post("/v1/workflows/sd15", params)

    assert run.status == template.status == 202
    assert run.json()["seed"] == template.json()["seed"] == 42
    assert run.json()["deployment"] == {"name": "sd15", "version": 1}
    expected = render_template("sd15", params).graph
    for accepted in (run, template):
        job = app.world.stores.jobs.get(accepted.json()["job_id"])
        assert job.workflow == expected
        assert job.deployment == {"name": "sd15", "version": 1}


@pytest.mark.parametrize(
    ("inputs", "field"),
    [
        ({"width": 768}, "body.inputs.prompt"),
        ({"prompt": "x", "width": 770}, "body.inputs.width"),
        ({"prompt": "x", "colour": "red"}, "body.inputs.colour"),
    ],
)
def test_a_built_ins_parameters_are_refused_by_input_name(
    app: MemoryApi, inputs: dict[str, Any], field: str
) -> None:
    refused = app.client(app.account()).post("/v1/deployments/flux/jobs", {"inputs": inputs})

    assert refused.status == 400 and error_of(refused)["code"] == "invalid_request"
    assert [detail["field"] for detail in error_of(refused)["details"]] == [field]


def test_a_run_of_a_name_that_cannot_exist_is_404(app: MemoryApi) -> None:
    client = app.client(app.account())

    for name in ("nope", "Not_Valid", "x" * 300):
        refused = client.post(f"/v1/deployments/{name}/jobs", {"inputs": {}})
        assert refused.status == 404 and error_of(refused)["code"] == "not_found"
