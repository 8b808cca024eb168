"""The fleet's node catalogue over HTTP on the dev stack: its agent publishes fakecomfy's
``/object_info`` for its environment and the API serves it in ComfyUI's shape."""

from __future__ import annotations

import pytest
import requests

from comfyfleet.dev.launch import RunningStack
from tests.support import basic_graph

pytestmark = pytest.mark.slow


def get(stack: RunningStack, path: str, **headers: str) -> requests.Response:
    headers["Authorization"] = f"Bearer {stack.user_key}"
    return requests.get(f"{stack.api_url}{path}", headers=headers, timeout=30)


def test_the_catalogue_is_comfyuis_object_info_with_an_etag(stack: RunningStack) -> None:
    everything = get(stack, "/v1/object_info")
    etag = everything.headers["ETag"]
    unchanged = get(stack, "/v1/object_info", **{"If-None-Match": etag})
    one = get(stack, "/v1/object_info/SaveImage")
    unknown = get(stack, "/v1/object_info/NoSuchNode")
    anonymous = requests.get(f"{stack.api_url}/v1/object_info", timeout=30)

    assert everything.status_code == 200
    assert everything.json()["SaveImage"]["output_node"] is True
    assert unchanged.status_code == 304 and unchanged.content == b""
    assert one.status_code == 200 and list(one.json()) == ["SaveImage"]
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    assert anonymous.status_code == 401


def test_a_class_the_fleet_lacks_is_refused_at_submit(stack: RunningStack) -> None:
    graph = basic_graph()
    graph["4"] = {"class_type": "NoSuchNode", "inputs": {}}

    refused = requests.post(
        f"{stack.api_url}/v1/jobs",
        json={"prompt": graph},
        headers={"Authorization": f"Bearer {stack.user_key}"},
        timeout=30,
    )

    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "invalid_workflow" and error["details"][0]["node_id"] == "4"


def test_the_sdk_reads_the_catalogue(stack: RunningStack) -> None:
    from comfyfleet.client import Client, NotFound

    with Client(stack.api_url, stack.user_key) as user:
        everything = user.object_info()
        one = user.object_info("SaveImage")
        with pytest.raises(NotFound) as unknown:
            user.object_info("No/Such Node")

    assert everything["SaveImage"] == one["SaveImage"] and list(one) == ["SaveImage"]
    assert unknown.value.code == "not_found"
