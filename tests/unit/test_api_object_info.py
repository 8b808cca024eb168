"""GET /v1/object_info and validation against the environments in service, on the in-memory
API: the union of their catalogues in ComfyUI's shape, ETag and 304, 404 not_found, the
jobs scope; a workflow refused for a class no environment in service has, and noted with the
environments that can run it while not all can."""

from __future__ import annotations

import json
from typing import Any

import pytest

from comfyfleet.domain import NodeInfo, NodeStatus, Scope
from comfyfleet.errors import StorageError
from comfyfleet.resources import CATALOGUE_KEY, catalogue_key
from comfyfleet.settings import Settings
from tests.api_support import Account, MemoryApi, error_of, memory_setup
from tests.support import basic_graph

OLD = {
    "EmptyImage": {"input": {"required": {}}, "output": ["IMAGE"], "category": "old"},
    "SaveImage": {"input": {"required": {"images": ["IMAGE"]}}, "output_node": True},
}
NEW = {
    **OLD,
    "EmptyImage": {"input": {"required": {}}, "output": ["IMAGE"], "category": "new"},
    "ImageInvert": {"input": {"required": {"image": ["IMAGE"]}}, "output": ["IMAGE"]},
    "Image Resize (rgthree)": {"input": {"required": {}}, "output": ["IMAGE"]},
}


@pytest.fixture
def app() -> MemoryApi:
    return memory_setup(Settings())


def publish(app: MemoryApi, key: str, catalogue: dict[str, Any]) -> None:
    app.world.objects.put(app.world.settings.model_bucket_name, key, json.dumps(catalogue).encode())


def serve(app: MemoryApi, node_id: str, environment: str, *, registered: float = 0.0) -> None:
    """A node of ``environment`` in service, as its agent registers it."""
    now = app.world.clock.now()
    app.world.stores.nodes.register(
        NodeInfo(
            node_id,
            NodeStatus.IDLE,
            now,
            queue_url=f"memory://{node_id}",
            environment_id=environment,
            registered_at=now + registered,
        )
    )
    app.api.jobs.dispatcher.snapshot.invalidate()


def later(app: MemoryApi, seconds: float) -> None:
    """Time passes; the nodes keep beating (they stay in service)."""
    app.world.clock.advance(seconds)
    nodes, _ = app.world.stores.nodes.snapshot()
    for node in nodes:
        app.world.stores.nodes.heartbeat(
            node.node_id,
            now=app.world.clock.now(),
            status=node.status,
            cached={},
            free_bytes=0,
            current_job=None,
            current_started_at=None,
            ewma_run_seconds=None,
            bandwidth_bytes_per_second=None,
        )
    app.api.jobs.dispatcher.snapshot.invalidate()


def rollout(app: MemoryApi) -> Account:
    """Two environments in service: "old" (no ImageInvert) and the newer "new"."""
    publish(app, catalogue_key("old"), OLD)
    publish(app, catalogue_key("new"), NEW)
    serve(app, "old-1", "old")
    serve(app, "new-1", "new", registered=1.0)
    return app.account()


def test_the_catalogue_is_the_union_of_the_environments_in_service(app: MemoryApi) -> None:
    client = app.client(rollout(app))

    response = client.get("/v1/object_info")

    assert response.status == 200
    assert response.header("Content-Type") == "application/json"
    body = response.json()
    assert sorted(body) == sorted(NEW)
    assert body["EmptyImage"]["category"] == "new"  # the newer environment describes it
    assert (response.header("ETag") or "").startswith('"')
    assert response.header("Cache-Control") == "private, no-cache"


def test_a_current_etag_is_answered_304_and_a_changed_catalogue_200(app: MemoryApi) -> None:
    client = app.client(rollout(app))
    etag = client.get("/v1/object_info").header("ETag")
    assert etag is not None

    same = client.get("/v1/object_info", headers={"If-None-Match": etag})
    weak = client.get("/v1/object_info", headers={"If-None-Match": f'"other", W/{etag}'})
    any_tag = client.get("/v1/object_info", headers={"If-None-Match": "*"})
    stale = client.get("/v1/object_info", headers={"If-None-Match": '"not-this-one"'})
    publish(app, catalogue_key("new"), {**NEW, "Extra": {}})
    later(app, 61)
    changed = client.get("/v1/object_info", headers={"If-None-Match": etag})

    assert same.status == weak.status == any_tag.status == 304
    assert same.body == b"" and same.header("ETag") == etag
    assert stale.status == 200 and sorted(stale.json()) == sorted(NEW)
    assert changed.status == 200 and "Extra" in changed.json()
    assert changed.header("ETag") != etag


def test_one_class_is_served_as_comfyui_serves_it_with_its_own_etag(app: MemoryApi) -> None:
    client = app.client(rollout(app))

    response = client.get("/v1/object_info/ImageInvert")
    spaced = client.get("/v1/object_info/Image%20Resize%20%28rgthree%29")
    etag = response.header("ETag") or ""
    again = client.get("/v1/object_info/ImageInvert", headers={"If-None-Match": etag})

    assert response.status == 200
    assert response.json() == {"ImageInvert": NEW["ImageInvert"]}
    assert spaced.status == 200 and list(spaced.json()) == ["Image Resize (rgthree)"]
    assert again.status == 304
    assert response.header("ETag") != client.get("/v1/object_info").header("ETag")


def test_an_unknown_class_is_404_not_found(app: MemoryApi) -> None:
    client = app.client(rollout(app))

    response = client.get("/v1/object_info/NoSuchNode")

    assert response.status == 404
    error = error_of(response)
    assert error["code"] == "not_found" and "NoSuchNode" in error["message"]
    assert error["request_id"]


def test_before_any_catalogue_is_published_the_fleet_has_no_classes(app: MemoryApi) -> None:
    client = app.client(app.account())

    everything = client.get("/v1/object_info")
    one = client.get("/v1/object_info/KSampler")

    assert everything.status == 200 and everything.json() == {}
    assert one.status == 404 and error_of(one)["code"] == "not_found"


@pytest.mark.parametrize("path", ["/v1/object_info", "/v1/object_info/ImageInvert"])
def test_the_catalogue_needs_a_key_with_the_jobs_scope(app: MemoryApi, path: str) -> None:
    account = rollout(app)
    _, admin_only = app.world.stores.keys.create(
        account.account_id, {Scope.ADMIN}, name="ops", now=app.world.clock.now()
    )

    anonymous = app.anonymous.get(path)
    admin = app.anonymous.get(path, headers={"Authorization": f"Bearer {admin_only}"})

    assert anonymous.status == 401 and error_of(anonymous)["code"] == "unauthorized"
    assert admin.status == 403 and error_of(admin)["code"] == "forbidden"


def test_a_job_only_the_new_environment_can_run_is_routed_to_its_nodes(app: MemoryApi) -> None:
    client = app.client(rollout(app))

    accepted = client.post("/v1/jobs", {"prompt": basic_graph()})  # uses ImageInvert

    assert accepted.status == 202
    job = app.world.stores.jobs.get(accepted.json()["job_id"])
    assert job.environments == ["new"] and job.route == "new-1"
    assert app.world.queues.depth("memory://new-1") == 1


def test_a_job_every_environment_can_run_is_not_restricted(app: MemoryApi) -> None:
    client = app.client(rollout(app))
    graph = basic_graph()
    graph["3"]["inputs"]["images"] = ["1", 0]
    del graph["2"]  # EmptyImage → SaveImage: both environments have them

    accepted = client.post("/v1/jobs", {"prompt": graph})

    job = app.world.stores.jobs.get(accepted.json()["job_id"])
    assert accepted.status == 202 and job.environments is None and job.route == "shared"


def test_a_class_no_environment_in_service_has_is_invalid_naming_node_and_class(
    app: MemoryApi,
) -> None:
    account = rollout(app)
    publish(app, CATALOGUE_KEY, {**NEW, "NoSuchNode": {}})  # not an environment in service
    graph = basic_graph()
    graph["4"] = {"class_type": "NoSuchNode", "inputs": {}}

    refused = app.client(account).post("/v1/jobs", {"prompt": graph})

    assert refused.status == 400
    error = error_of(refused)
    assert error["code"] == "invalid_workflow"
    [detail] = error["details"]
    assert detail["code"] == "unknown_class_type" and detail["node_id"] == "4"
    assert "NoSuchNode" in detail["message"]


def test_classes_no_one_environment_has_together_are_invalid(app: MemoryApi) -> None:
    account = rollout(app)
    publish(app, catalogue_key("odd"), {**OLD, "OddNode": {"output": ["IMAGE"]}})
    serve(app, "odd-1", "odd", registered=2.0)
    graph = basic_graph()
    graph["4"] = {"class_type": "OddNode", "inputs": {}}

    refused = app.client(account).post("/v1/jobs", {"prompt": graph})

    assert refused.status == 400 and error_of(refused)["code"] == "invalid_workflow"
    [detail] = error_of(refused)["details"]
    assert detail["code"] == "unknown_class_type" and detail["node_id"] in ("2", "4")
    assert "no environment in service has all" in detail["message"]


def test_a_storage_hiccup_keeps_each_environments_last_catalogue(
    app: MemoryApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = app.client(rollout(app))
    unknown = basic_graph()
    unknown["4"] = {"class_type": "NoSuchNode", "inputs": {}}
    assert client.post("/v1/jobs", {"prompt": unknown}).status == 400

    def unavailable(*_: Any, **__: Any) -> Any:
        raise StorageError("S3 is unreachable")

    monkeypatch.setattr(app.world.objects, "read", unavailable)
    later(app, 61)

    assert client.post("/v1/jobs", {"prompt": unknown}).status == 400  # still deep
    assert client.post("/v1/jobs", {"prompt": basic_graph()}).status == 202
    assert "ImageInvert" in client.get("/v1/object_info").json()
