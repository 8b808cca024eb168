"""The OpenAPI document at /doc?format=json (a valid OpenAPI 3.1 document listing every route
with this API's error shape) and Swagger UI at /doc, which must render with no internet."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from openapi_spec_validator import validate

from comfyfleet.settings import Settings
from tests.api_support import MemoryApi, memory_setup, rest_event

ROUTES = {
    "/v1/health": {"get"},
    "/v1/jobs": {"get", "post"},
    "/v1/jobs/{job_id}": {"get", "delete"},
    "/v1/jobs/{job_id}/cancel": {"post"},
    "/v1/jobs/{job_id}/preview": {"get"},
    "/v1/usage": {"get"},
    "/v1/workflows": {"get"},
    "/v1/workflows/sd15": {"post"},
    "/v1/workflows/sdxl": {"post"},
    "/v1/workflows/flux": {"post"},
    "/v1/admin/accounts": {"post"},
    "/v1/admin/keys": {"get", "post"},
    "/v1/admin/keys/{key_id}": {"delete"},
    "/v1/admin/nodes": {"get"},
    "/v1/admin/nodes/{node_id}/drain": {"post"},
    "/v1/admin/nodes/{node_id}": {"delete"},
    "/v1/admin/queues": {"get"},
}
# What an offline page must not load: scripts, styles, images or fonts from another host.
_EXTERNAL_SOURCE = re.compile(
    r"""<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.I
)
_CSS_IMPORT = re.compile(r"""@import\s+(?:url\()?["']?(?:https?:)?//""", re.I)


@pytest.fixture(scope="module")
def app() -> MemoryApi:
    return memory_setup(Settings())


@pytest.fixture(scope="module")
def document(app: MemoryApi) -> dict[str, Any]:
    response = app.anonymous.get("/doc", query="format=json")
    assert response.status == 200
    assert (response.header("Content-Type") or "").startswith("application/json")
    spec: dict[str, Any] = response.json()
    return spec


@pytest.fixture(scope="module")
def swagger_html(app: MemoryApi) -> str:
    response = app.anonymous.get("/doc")
    assert response.status == 200
    assert (response.header("Content-Type") or "").startswith("text/html")
    return response.body.decode()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in {"get", "post", "put", "patch", "delete"}
    ]


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    validate(document)  # raises on any violation

    assert document["openapi"].startswith("3.1")
    assert document["info"]["title"] == "comfyfleet" and document["info"]["version"]


def test_the_document_lists_every_route_of_the_issue(document: dict[str, Any]) -> None:
    listed = {path: set(item) for path, item in document["paths"].items()}

    missing = {
        path: methods - listed.get(path, set())
        for path, methods in ROUTES.items()
        if methods - listed.get(path, set())
    }
    assert not missing


def test_every_error_response_is_the_one_error_shape(document: dict[str, Any]) -> None:
    for path, method, operation in operations(document):
        responses = operation["responses"]
        assert "422" not in responses, (path, method)  # answered as 400 here
        errors = {status: r for status, r in responses.items() if int(status) >= 400}
        assert "500" in errors, (path, method)
        for status, response in errors.items():
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (path, status)
        for status in ("429", "503"):
            if status in errors:
                assert "Retry-After" in errors[status]["headers"]
    schema = document["components"]["schemas"]["ErrorBody"]
    assert set(schema["required"]) == {"code", "message", "request_id"}


def test_the_submit_documents_its_body_header_and_refusals(document: dict[str, Any]) -> None:
    submit = document["paths"]["/v1/jobs"]["post"]

    assert "202" in submit["responses"]
    assert {"400", "401", "403", "409", "413", "429"} <= set(submit["responses"])
    headers = [p["name"] for p in submit.get("parameters", []) if p["in"] == "header"]
    assert [name.lower() for name in headers] == ["idempotency-key"]
    body = submit["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/JobSubmission"}
    fields = document["components"]["schemas"]["JobSubmission"]["properties"]
    assert {"prompt", "webhook_url", "models", "metadata"} <= set(fields)


def test_keys_are_required_except_on_the_public_routes(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]

    assert schemes["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "sk_live_… API key",
    }
    assert schemes["apiKeyAuth"]["in"] == "header" and schemes["apiKeyAuth"]["name"] == "X-API-Key"
    assert document["security"] == [{"bearerAuth": []}, {"apiKeyAuth": []}]
    for path, _, operation in operations(document):
        if path == "/v1/health":
            assert operation["security"] == []
        else:
            assert "security" not in operation  # the document's default applies


def test_swagger_ui_is_served_whole_with_the_document_inline(swagger_html: str) -> None:
    assert "SwaggerUIBundle" in swagger_html and "swagger-ui" in swagger_html
    assert '"openapi": "3.1.0"' in swagger_html and "/v1/jobs/{job_id}" in swagger_html
    assert len(swagger_html) > 500_000  # the bundle itself, not a link to it


def test_swagger_ui_loads_nothing_from_another_host(swagger_html: str) -> None:
    assert not _EXTERNAL_SOURCE.findall(swagger_html)
    assert not _CSS_IMPORT.findall(swagger_html)
    for cdn in ("unpkg.com", "cdn.jsdelivr.net", "cdnjs.cloudflare.com", "fonts.googleapis"):
        assert cdn not in swagger_html
    # The online validator badge (which fetches validator.swagger.io) belongs to the
    # standalone layout; the base layout has none.
    assert 'layout: "BaseLayout"' in swagger_html


def test_behind_an_execute_api_stage_the_document_names_the_stage(app: MemoryApi) -> None:
    event = rest_event("GET", "/doc", query={"format": "json"})  # requestContext.path /prod/doc

    response = app.api.handle(event)

    assert response["statusCode"] == 200
    assert json.loads(response["body"])["servers"] == [{"url": "/prod"}]
