"""Submitting jobs through the local gateway on in-memory stores: the 202, every way a submit
is refused (with its status and code), idempotency, limits and their headers, metrics."""

from __future__ import annotations

import base64
import json

import pytest

from comfyfleet.api.auth import KeyAuthorizer
from comfyfleet.catalogue import NodeCatalogue
from comfyfleet.resources import CATALOGUE_KEY
from comfyfleet.settings import Settings
from tests.api_support import RATE_HEADERS, MemoryApi, error_of, memory_setup, rest_event
from tests.support import basic_graph

HTTPS_HOOK = "https://hooks.example.com/comfy"


@pytest.fixture
def app(settings: Settings) -> MemoryApi:
    return memory_setup(settings)


def test_a_valid_workflow_is_accepted_with_its_place_and_links(app: MemoryApi) -> None:
    client = app.client(app.account())

    response = client.post("/v1/jobs", {"prompt": basic_graph(), "metadata": {"order": 7}})

    assert response.status == 202
    body = response.json()
    assert body["status"] == "queued" and body["queue_position"] == 1
    assert body["estimated_wait_seconds"] >= 0
    assert body["created_at"].endswith("Z")
    assert body["links"] == {
        "self": f"http://localhost/v1/jobs/{body['job_id']}",
        "cancel": f"http://localhost/v1/jobs/{body['job_id']}/cancel",
    }
    job = app.world.stores.jobs.get(body["job_id"])
    assert job.workflow == basic_graph() and job.metadata == {"order": 7}
    assert response.header("X-Request-Id")
    assert app.world.metrics.latencies_ms and not app.world.metrics.rejections


def test_the_headers_of_a_submit_count_it(app: MemoryApi) -> None:
    client = app.client(app.account())

    response = client.post("/v1/jobs", {"prompt": basic_graph()})

    assert {name: response.header(name) for name in RATE_HEADERS} == {
        "X-RateLimit-Limit": "60",
        "X-RateLimit-Remaining": "59",
        "X-RateLimit-Reset": str(int(app.world.clock.now() // 60 * 60 + 60)),
        "X-Concurrent-Limit": "2",
        "X-Concurrent-Current": "0",
        "X-Queue-Limit": "100",
        "X-Queue-Current": "1",
    }


def test_malformed_json_is_400_malformed_json(app: MemoryApi) -> None:
    client = app.client(app.account())

    for body in (b'{"prompt": ', b'{"prompt": NaN}', b"\xff\xfe{}", b"[" * 5000):
        response = client.call("POST", "/v1/jobs", body=body)

        assert response.status == 400, body[:20]
        assert error_of(response)["code"] == "malformed_json"
    assert app.world.metrics.rejections == ["malformed_json"] * 4


def test_a_body_nested_too_deeply_is_400(app: MemoryApi) -> None:
    deep: object = {}
    for _ in range(40):
        deep = {"x": deep}

    response = app.client(app.account()).post(
        "/v1/jobs", {"prompt": basic_graph(), "metadata": deep}
    )

    assert response.status == 400 and error_of(response)["code"] == "invalid_request"


def test_a_body_over_the_bound_is_413_before_it_is_parsed(app: MemoryApi) -> None:
    bound = app.api.max_body_bytes

    response = app.client(app.account()).call("POST", "/v1/jobs", body=b"x" * (bound + 1))

    assert response.status == 413
    assert error_of(response)["code"] == "payload_too_large"


def test_a_workflow_over_the_bound_is_413_with_the_error() -> None:
    app = memory_setup(Settings(max_workflow_bytes=1024))
    graph = basic_graph()
    graph["3"]["inputs"]["filename_prefix"] = "p" * 2000

    response = app.client(app.account()).post("/v1/jobs", {"prompt": graph})

    assert response.status == 413
    error = error_of(response)
    assert error["code"] == "payload_too_large"
    assert error["details"][0]["code"] == "too_large"


def test_an_invalid_workflow_is_400_with_each_structured_error(app: MemoryApi) -> None:
    graph = basic_graph()
    graph["2"]["inputs"]["image"] = ["9", 0]
    graph["4"] = {"class_type": "CheckpointSave", "inputs": {}}

    response = app.client(app.account()).post("/v1/jobs", {"prompt": graph})

    assert response.status == 400
    error = error_of(response)
    assert error["code"] == "invalid_workflow"
    assert {(e["code"], e["node_id"], e["input"]) for e in error["details"]} == {
        ("link_to_missing_node", "2", "image"),
        ("denied_class_type", "4", None),
    }
    assert all(e["message"] for e in error["details"])
    assert error["request_id"] == response.header("X-Request-Id")
    assert app.world.metrics.rejections == ["invalid_workflow"]


@pytest.mark.parametrize("prompt", [[], "a graph", {"nodes": [], "links": []}])
def test_a_prompt_that_is_no_api_format_graph_is_an_invalid_workflow(
    app: MemoryApi, prompt: object
) -> None:
    response = app.client(app.account()).post("/v1/jobs", {"prompt": prompt})

    assert response.status == 400 and error_of(response)["code"] == "invalid_workflow"


def test_a_bad_models_manifest_is_an_invalid_workflow(app: MemoryApi) -> None:
    models = [{"url": "http://evil.example/m.safetensors", "folder": "checkpoints"}]

    response = app.client(app.account()).post(
        "/v1/jobs", {"prompt": basic_graph(), "models": models}
    )

    assert error_of(response)["details"][0]["code"] == "url_not_allowed"


def test_fields_are_checked(app: MemoryApi) -> None:
    client = app.client(app.account())
    cases = [
        {"prompt": basic_graph(), "webhook_url": "http://hooks.example.com/x"},
        {"prompt": basic_graph(), "webhook_url": "https://user:pw@hooks.example.com/x"},
        {"prompt": basic_graph(), "webhook_url": "https://10.0.0.8/x"},
        {"prompt": basic_graph(), "webhook_url": "https://localhost:9000/x"},
        {"prompt": basic_graph(), "metadata": {"blob": "x" * 5000}},
        {"prompt": basic_graph(), "metadata": [1]},
        {"prompt": basic_graph(), "priority": 1},
        {"webhook_url": HTTPS_HOOK},
    ]
    for body in cases:
        response = client.post("/v1/jobs", body)

        assert response.status == 400, body
        error = error_of(response)
        assert error["code"] == "invalid_request" and error["details"], body


def test_an_https_webhook_is_kept_and_loopback_http_is_allowed_in_development() -> None:
    app = memory_setup(Settings(allow_local_urls=True))
    client = app.client(app.account())

    remote = client.post("/v1/jobs", {"prompt": basic_graph(), "webhook_url": HTTPS_HOOK})
    local = client.post(
        "/v1/jobs", {"prompt": basic_graph(), "webhook_url": "http://127.0.0.1:8080/hook"}
    )

    assert remote.status == 202 and local.status == 202
    assert app.world.stores.jobs.get(remote.json()["job_id"]).webhook_url == HTTPS_HOOK


def test_a_body_is_json_whatever_its_content_type_says(app: MemoryApi) -> None:
    client = app.client(app.account())
    body = json.dumps({"prompt": basic_graph()}).encode()

    form = client.call(
        "POST", "/v1/jobs", body=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )

    assert form.status == 202


def test_a_base64_body_is_decoded(app: MemoryApi) -> None:
    account = app.account()
    authorizer = KeyAuthorizer(app.world.stores.keys, app.world.stores.accounts, app.world.settings)
    event = rest_event("POST", "/v1/jobs", caller=authorizer.caller(account.key))
    body = json.dumps({"prompt": basic_graph()}).encode()
    event.update(body=base64.b64encode(body).decode(), isBase64Encoded=True)

    response = app.api.handle(event)

    assert response["statusCode"] == 202


def test_the_catalogue_deepens_validation_and_is_read_once_a_minute(
    app: MemoryApi, catalogue: NodeCatalogue
) -> None:
    client = app.client(app.account())
    unknown = basic_graph()
    unknown["4"] = {"class_type": "NoSuchNode", "inputs": {}}
    assert client.post("/v1/jobs", {"prompt": unknown}).status == 202  # structural only

    bucket = app.world.settings.model_bucket_name
    app.world.objects.put(bucket, CATALOGUE_KEY, catalogue.to_json().encode())
    app.world.clock.advance(61)
    refused = client.post("/v1/jobs", {"prompt": unknown})
    client.post("/v1/jobs", {"prompt": basic_graph()})
    app.world.clock.advance(61)
    client.post("/v1/jobs", {"prompt": basic_graph()})

    assert refused.status == 400
    assert error_of(refused)["details"][0]["code"] == "unknown_class_type"
    assert app.world.objects.reads == 1  # then "not modified" for the ETag it holds


def test_the_same_idempotency_key_and_body_return_the_same_job(app: MemoryApi) -> None:
    client = app.client(app.account())
    key = {"Idempotency-Key": "order-42"}

    first = client.post("/v1/jobs", {"prompt": basic_graph()}, headers=key)
    again = client.post("/v1/jobs", {"prompt": basic_graph()}, headers=key)

    assert first.status == again.status == 202
    assert again.json() == first.json()
    assert again.header("Idempotent-Replayed") == "true"
    assert first.header("Idempotent-Replayed") is None
    assert len(app.world.metrics.latencies_ms) == 1
    page = app.world.stores.jobs.list_for_account(
        app.world.stores.jobs.get(first.json()["job_id"]).account_id,
        state=None,
        limit=10,
        cursor=None,
    )
    assert len(page.jobs) == 1


def test_the_same_idempotency_key_with_another_body_is_409(app: MemoryApi) -> None:
    client = app.client(app.account())
    key = {"Idempotency-Key": "order-42"}
    client.post("/v1/jobs", {"prompt": basic_graph()}, headers=key)

    other = client.post("/v1/jobs", {"prompt": basic_graph(), "metadata": {"a": 1}}, headers=key)

    assert other.status == 409
    assert error_of(other)["code"] == "idempotency_conflict"


def test_idempotency_keys_are_per_account(app: MemoryApi) -> None:
    key = {"Idempotency-Key": "same"}
    body = {"prompt": basic_graph()}

    first = app.client(app.account()).post("/v1/jobs", body, headers=key)
    second = app.client(app.account()).post("/v1/jobs", body, headers=key)

    assert first.json()["job_id"] != second.json()["job_id"]


def test_a_refused_submit_leaves_its_idempotency_key_free(app: MemoryApi) -> None:
    client = app.client(app.account())
    key = {"Idempotency-Key": "retry-me"}
    bad = basic_graph()
    bad["2"]["inputs"]["image"] = ["9", 0]

    refused = client.post("/v1/jobs", {"prompt": bad}, headers=key)
    accepted = client.post("/v1/jobs", {"prompt": bad}, headers=key)

    assert refused.status == accepted.status == 400  # validated again, not replayed
    assert client.post("/v1/jobs", {"prompt": basic_graph()}, headers=key).status == 202


def test_an_unusable_idempotency_key_is_400(app: MemoryApi) -> None:
    response = app.client(app.account()).post(
        "/v1/jobs", {"prompt": basic_graph()}, headers={"Idempotency-Key": "k" * 300}
    )

    assert response.status == 400 and error_of(response)["code"] == "invalid_request"


def test_over_the_rate_is_429_rate_limit_exceeded_with_retry_after(app: MemoryApi) -> None:
    client = app.client(app.account(requests_per_minute=2))
    for _ in range(2):
        assert client.post("/v1/jobs", {"prompt": basic_graph()}).status == 202

    refused = client.post("/v1/jobs", {"prompt": basic_graph()})

    assert refused.status == 429
    assert error_of(refused)["code"] == "rate_limit_exceeded"
    assert refused.header("Retry-After") == "60"  # the fake clock sits on a minute boundary
    assert refused.header("X-RateLimit-Limit") == "2"
    assert refused.header("X-RateLimit-Remaining") == "0"
    assert app.world.metrics.rejections == ["rate_limit_exceeded"]


def test_a_full_queue_is_429_queue_full_with_retry_after(app: MemoryApi) -> None:
    client = app.client(app.account(queue_depth=1))
    client.post("/v1/jobs", {"prompt": basic_graph()})

    refused = client.post("/v1/jobs", {"prompt": basic_graph()})

    assert refused.status == 429
    assert error_of(refused)["code"] == "queue_full"
    assert refused.header("Retry-After") == "15"
    assert refused.header("X-Queue-Limit") == "1" and refused.header("X-Queue-Current") == "1"
    assert all(refused.header(name) is not None for name in RATE_HEADERS)


def test_a_template_is_rendered_submitted_and_its_seed_returned(app: MemoryApi) -> None:
    client = app.client(app.account())

    response = client.post("/v1/workflows/sdxl", {"prompt": "a lighthouse", "steps": 4})

    assert response.status == 202
    body = response.json()
    assert isinstance(body["seed"], int) and body["status"] == "queued"
    job = app.world.stores.jobs.get(body["job_id"])
    sampler = next(n for n in job.workflow.values() if n["class_type"] == "KSampler")
    assert sampler["inputs"]["seed"] == body["seed"] and sampler["inputs"]["steps"] == 4
    assert {m["folder"] for m in job.models} == {"checkpoints"}


def test_a_template_replay_returns_the_seed_it_drew(app: MemoryApi) -> None:
    client = app.client(app.account())
    key = {"Idempotency-Key": "t-1"}

    first = client.post("/v1/workflows/flux", {"prompt": "a fox"}, headers=key)
    again = client.post("/v1/workflows/flux", {"prompt": "a fox"}, headers=key)

    assert again.json()["seed"] == first.json()["seed"]
    assert again.json()["job_id"] == first.json()["job_id"]


def test_bad_template_parameters_are_400_and_an_unknown_template_404(app: MemoryApi) -> None:
    client = app.client(app.account())

    bad = client.post("/v1/workflows/sd15", {"prompt": "x", "steps": 0, "colour": "red"})
    unknown = client.post("/v1/workflows/sd3", {"prompt": "x"})

    assert bad.status == 400 and error_of(bad)["code"] == "invalid_request"
    assert {d["field"] for d in error_of(bad)["details"]} == {"body.steps", "body.colour"}
    assert unknown.status == 404 and error_of(unknown)["code"] == "not_found"


def test_templates_are_listed_with_their_parameter_schemas(app: MemoryApi) -> None:
    response = app.client(app.account()).get("/v1/workflows")

    assert response.status == 200
    listed = {t["name"]: t for t in response.json()["workflows"]}
    assert set(listed) == {"sd15", "sdxl", "flux"}
    assert "prompt" in listed["flux"]["parameters"]["properties"]
    assert listed["sd15"]["parameters"]["required"] == ["prompt"]
