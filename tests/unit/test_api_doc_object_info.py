"""GET /v1/object_info and /v1/object_info/{class_type} in the OpenAPI document: their
ComfyUI-shaped answer, the If-None-Match header, 304, and their refusals in the one error
shape (the whole document is validated in test_api_doc)."""

from __future__ import annotations

from typing import Any

import pytest
from openapi_spec_validator import validate

from comfyfleet.settings import Settings
from tests.api_support import memory_setup


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    response = memory_setup(Settings()).anonymous.get("/doc", query="format=json")
    assert response.status == 200
    spec: dict[str, Any] = response.json()
    return spec


@pytest.mark.parametrize(
    ("path", "errors"),
    [
        ("/v1/object_info", {"401", "403", "500", "503"}),
        ("/v1/object_info/{class_type}", {"401", "403", "404", "500", "503"}),
    ],
)
def test_the_catalogue_routes_are_documented(
    document: dict[str, Any], path: str, errors: set[str]
) -> None:
    validate(document)
    operation = document["paths"][path]["get"]

    responses = operation["responses"]
    assert {status for status in responses if int(status) >= 400} == errors
    assert "content" not in responses["304"]  # not modified: no body
    schema = responses["200"]["content"]["application/json"]["schema"]
    assert schema["type"] == "object" and "input" in schema["additionalProperties"]["properties"]
    headers = [p["name"].lower() for p in operation["parameters"] if p["in"] == "header"]
    assert headers == ["if-none-match"]
    assert "security" not in operation  # a key is required: the document's default
    assert operation["tags"] == ["catalogue"]


def test_the_class_route_names_its_path_parameter(document: dict[str, Any]) -> None:
    operation = document["paths"]["/v1/object_info/{class_type}"]["get"]

    [parameter] = [p for p in operation["parameters"] if p["in"] == "path"]

    assert parameter["name"] == "class_type" and parameter["required"] is True
