"""Deployments through the local gateway on in-memory stores: versions, reads, lists,
deletes, and every way a declaration is refused (each with its status, code and field)."""

from __future__ import annotations

from typing import Any

import pytest

from comfyfleet.catalogue import NodeCatalogue
from comfyfleet.resources import CATALOGUE_KEY
from comfyfleet.settings import Settings
from comfyfleet.templates import TEMPLATES
from tests.api_support import MemoryApi, error_of, memory_setup
from tests.deployment_support import deployment_body, scale_graph, with_input
from tests.support import basic_graph


@pytest.fixture
def app(settings: Settings) -> MemoryApi:
    return memory_setup(settings)


def fields_of(response: Any) -> list[str]:
    return [detail["field"] for detail in error_of(response)["details"]]


def test_a_deployment_is_stored_as_version_1_with_its_inputs_as_json_schema(
    app: MemoryApi,
) -> None:
    client = app.client(app.account())

    created = client.post("/v1/deployments", deployment_body())

    assert created.status == 201
    body = created.json()
    assert (body["name"], body["version"], body["builtin"]) == ("invert", 1, False)
    assert body["workflow"] == basic_graph()
    assert body["input_schema"] == {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "width": {
                "type": "integer",
                "description": "Canvas width.",
                "minimum": 8,
                "maximum": 1024,
                "default": 64,
            },
            "color": {"type": "integer", "default": 0},
            "prefix": {"type": "string"},
        },
        "required": ["prefix"],
    }
    assert client.get("/v1/deployments/invert").json() == body


def test_posting_the_same_name_again_stores_the_next_version_and_keeps_the_old(
    app: MemoryApi,
) -> None:
    client = app.client(app.account())
    client.post("/v1/deployments", deployment_body())
    changed = deployment_body(description="Second.")
    changed["workflow"]["1"]["inputs"]["height"] = 128

    second = client.post("/v1/deployments", changed)

    assert second.status == 201 and second.json()["version"] == 2
    newest = client.get("/v1/deployments/invert").json()
    first = client.get("/v1/deployments/invert", query="version=1").json()
    assert (newest["version"], newest["workflow"]["1"]["inputs"]["height"]) == (2, 128)
    assert (first["version"], first["workflow"]["1"]["inputs"]["height"]) == (1, 64)
    missing = client.get("/v1/deployments/invert", query="version=3")
    assert missing.status == 404 and error_of(missing)["code"] == "not_found"


def test_another_accounts_deployment_is_not_found(app: MemoryApi) -> None:
    owner, other = app.client(app.account()), app.client(app.account())
    owner.post("/v1/deployments", deployment_body())

    for response in (
        other.get("/v1/deployments/invert"),
        other.post("/v1/deployments/invert/jobs", {"inputs": {"prefix": "x"}}),
        other.delete("/v1/deployments/invert"),
    ):
        assert response.status == 404 and error_of(response)["code"] == "not_found"
    listed = other.get("/v1/deployments").json()["deployments"]
    assert [entry["name"] for entry in listed] == list(TEMPLATES)
    assert owner.get("/v1/deployments/invert").status == 200


def test_a_deleted_deployment_is_gone_and_its_name_continues_its_numbering(
    app: MemoryApi,
) -> None:
    client = app.client(app.account())
    client.post("/v1/deployments", deployment_body())
    client.post("/v1/deployments", deployment_body())

    deleted = client.delete("/v1/deployments/invert")

    assert deleted.status == 200
    assert deleted.json() == {"name": "invert", "deleted": True, "versions": 2}
    assert client.get("/v1/deployments/invert").status == 404
    assert client.delete("/v1/deployments/invert").status == 404
    again = client.post("/v1/deployments", deployment_body())
    assert again.json()["version"] == 3  # a job's (name, version) never names two graphs
    assert client.get("/v1/deployments/invert", query="version=1").status == 404


def test_the_list_has_the_built_ins_first_then_the_accounts_by_name_in_pages(
    app: MemoryApi,
) -> None:
    client = app.client(app.account())
    for name in ("c-3", "a-1", "b-2"):
        client.post("/v1/deployments", deployment_body(name))

    first = client.get("/v1/deployments", query="limit=2").json()
    rest = client.get("/v1/deployments", query=f"limit=2&cursor={first['next_cursor']}").json()

    assert [(d["name"], d["builtin"]) for d in first["deployments"]] == [
        ("sd15", True),
        ("sdxl", True),
        ("flux", True),
        ("a-1", False),
        ("b-2", False),
    ]
    assert [d["name"] for d in rest["deployments"]] == ["c-3"] and rest["next_cursor"] is None
    bad = client.get("/v1/deployments", query="cursor=not-a-cursor!")
    assert bad.status == 400 and error_of(bad)["code"] == "invalid_cursor"


def test_a_built_in_is_a_read_only_deployment_with_its_templates_schema(
    app: MemoryApi,
) -> None:
    client = app.client(app.account())

    shown = client.get("/v1/deployments/sd15")

    assert shown.status == 200
    assert shown.json()["builtin"] is True and shown.json()["version"] == 1
    assert shown.json()["input_schema"] == TEMPLATES["sd15"].schema()
    assert client.get("/v1/deployments/sd15", query="version=2").status == 404
    refused = client.delete("/v1/deployments/sd15")
    assert refused.status == 400 and error_of(refused)["code"] == "invalid_request"
    taken = client.post("/v1/deployments", deployment_body("sd15"))
    assert taken.status == 400 and fields_of(taken) == ["body.name"]


@pytest.mark.parametrize(
    ("name", "declaration", "field"),
    [
        ("w", {"node": "9", "input": "width", "type": "integer"}, "body.inputs.w.node"),
        ("w", {"node": "1", "input": "depth", "type": "integer"}, "body.inputs.w.input"),
        ("w", {"node": "2", "input": "image", "type": "string"}, "body.inputs.w.input"),
        ("w", {"node": "1", "input": "width", "type": "string"}, "body.inputs.w.type"),
        ("w", {"node": "1", "input": "width", "type": "number"}, "body.inputs.w.type"),
        ("w", {"node": "1", "input": "width", "type": "boolean"}, "body.inputs.w.type"),
        ("w", {"node": "1", "input": "width", "type": "image"}, "body.inputs.w.type"),
        ("w", {"node": "3", "input": "filename_prefix", "type": "model"}, "body.inputs.w.type"),
        (
            "w",
            {"node": "1", "input": "width", "type": "integer", "maximum": 99_999},
            "body.inputs.w.maximum",
        ),
        (
            "w",
            {"node": "1", "input": "width", "type": "integer", "minimum": 9, "maximum": 8},
            "body.inputs.w.minimum",
        ),
        (
            "w",
            {"node": "3", "input": "filename_prefix", "type": "string", "minimum": 1},
            "body.inputs.w.minimum",
        ),
        (
            "w",
            {"node": "1", "input": "width", "type": "integer", "maximum": 512, "default": 600},
            "body.inputs.w.default",
        ),
        (
            "w",
            {"node": "1", "input": "width", "type": "integer", "default": "64"},
            "body.inputs.w.default",
        ),
        (
            "w",
            {"node": "1", "input": "width", "type": "integer", "enum": [64, 12.5]},
            "body.inputs.w.enum.1",
        ),
        ("w", {"node": "1", "input": "width", "type": "integer", "step": 8}, "body.inputs.w.step"),
        ("width2", {"node": "1", "input": "width", "type": "integer"}, "body.inputs.width2.input"),
        ("9lives", {"node": "1", "input": "width", "type": "integer"}, "body.inputs.9lives.[key]"),
    ],
)
def test_a_declaration_that_does_not_fit_is_400_naming_the_input(
    app: MemoryApi, name: str, declaration: dict[str, Any], field: str
) -> None:
    client = app.client(app.account())

    refused = client.post("/v1/deployments", with_input(name, declaration))

    assert refused.status == 400
    assert error_of(refused)["code"] == "invalid_request"
    assert field in fields_of(refused), error_of(refused)
    assert client.get("/v1/deployments/invert").status == 404


@pytest.mark.parametrize(
    ("declaration", "field"),
    [
        ({"node": "4", "input": "crop", "type": "integer"}, "body.inputs.c.type"),
        (
            {"node": "4", "input": "crop", "type": "string", "enum": ["center", "edges"]},
            "body.inputs.c.enum.1",
        ),
    ],
)
def test_a_list_input_takes_strings_from_its_options(
    app: MemoryApi, declaration: dict[str, Any], field: str
) -> None:
    client = app.client(app.account())
    fits = with_input("c", {"node": "4", "input": "crop", "type": "string", "enum": ["center"]})
    fits["workflow"] = scale_graph()
    assert client.post("/v1/deployments", fits).status == 201

    body = with_input("c", declaration, name="scaled")
    body["workflow"] = scale_graph()
    refused = client.post("/v1/deployments", body)

    assert refused.status == 400 and fields_of(refused) == [field]


def test_file_inputs_must_name_a_loaders_file_and_loader_files_must_be_file_inputs(
    app: MemoryApi,
) -> None:
    client = app.client(app.account())
    graph = basic_graph()
    graph["5"] = {"class_type": "LoadImage", "inputs": {"image": "https://huggingface.co/a.png"}}
    graph["2"]["inputs"]["image"] = ["5", 0]

    fits = with_input("picture", {"node": "5", "input": "image", "type": "image"}, workflow=graph)
    as_model = with_input(
        "picture", {"node": "5", "input": "image", "type": "model"}, workflow=graph
    )
    as_text = with_input(
        "picture", {"node": "5", "input": "image", "type": "string"}, workflow=graph
    )

    assert client.post("/v1/deployments", fits).status == 201
    for body in (as_model, as_text):
        refused = client.post("/v1/deployments", body)
        assert refused.status == 400 and fields_of(refused) == ["body.inputs.picture.type"]


def test_a_broken_workflow_is_400_invalid_workflow_as_at_submit(app: MemoryApi) -> None:
    client = app.client(app.account())
    no_output = basic_graph()
    del no_output["3"]

    for workflow in ([1, 2], {"nodes": [], "links": []}, no_output):
        refused = client.post("/v1/deployments", deployment_body(workflow=workflow, inputs={}))

        assert refused.status == 400 and error_of(refused)["code"] == "invalid_workflow"


def test_a_default_the_catalogue_refuses_is_named_as_the_default(
    app: MemoryApi, catalogue: NodeCatalogue
) -> None:
    bucket = app.world.settings.model_bucket_name
    app.world.objects.put(bucket, CATALOGUE_KEY, catalogue.to_json().encode())
    client = app.client(app.account())

    refused = client.post(
        "/v1/deployments",
        with_input("width", {"node": "1", "input": "width", "type": "integer", "default": 0}),
    )

    assert refused.status == 400 and error_of(refused)["code"] == "invalid_request"
    assert error_of(refused)["details"] == [
        {
            "field": "body.inputs.width.default",
            "code": "value_out_of_range",
            "message": "value 0 is smaller than the minimum 1",
        }
    ]


def test_a_required_input_may_be_missing_from_the_stored_workflow(app: MemoryApi) -> None:
    client = app.client(app.account())
    body = deployment_body()
    del body["workflow"]["3"]["inputs"]["filename_prefix"]

    assert client.post("/v1/deployments", body).status == 201


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": "Not_A_Name"}, "body.name"),
        ({"name": "x" * 65}, "body.name"),
        ({"output": {"format": "webp"}}, "body.output"),
        ({"colour": "red"}, "body.colour"),
    ],
)
def test_a_bad_name_or_field_is_400_invalid_request(
    app: MemoryApi, changes: dict[str, Any], field: str
) -> None:
    refused = app.client(app.account()).post("/v1/deployments", deployment_body(**changes))

    assert refused.status == 400 and error_of(refused)["code"] == "invalid_request"
    assert fields_of(refused) == [field]


def test_deployments_need_the_jobs_scope(app: MemoryApi) -> None:
    account = app.account()
    admin_only = app.client(account, admin=True)

    for response in (
        app.anonymous.get("/v1/deployments"),
        admin_only.post("/v1/deployments", deployment_body()),
    ):
        assert response.status in (401, 403)
