"""The dev stack's HTTP front answers every method on every path as API Gateway does: never a
5xx, never http.server's HTML page. A fuzz over the OpenAPI document's paths (and a few
unknown ones) with every HTTP method, WebDAV's and a made-up one, through a running front
(real HTTP on loopback) on the in-memory API."""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from comfyfleet.api.local import GATEWAY_METHODS
from comfyfleet.dev.front import HttpFront
from comfyfleet.settings import Settings
from tests.api_support import Account, MemoryApi, memory_setup

METHODS = (
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "PATCH",
    "DELETE",
    "OPTIONS",
    "TRACE",
    "CONNECT",
    "PROPFIND",
    "FROBNICATE",
)
UNKNOWN_PATHS = ("/", "/v1", "/v2/jobs", "/v1/jobz", "/v1/jobs/a/b/c", "/nope", "/console/x.js")
# Pages: HTML, scripts or a redirect when they succeed; their errors are JSON like the rest.
PAGES = ("/doc", "/console", "/admin")


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Front:
    app: MemoryApi
    front: HttpFront
    account: Account

    def call(self, method: str, path: str, key: str | None = None) -> Answer:
        connection = http.client.HTTPConnection(self.front.host, self.front.port, timeout=10)
        try:
            headers = {"Content-Type": "application/json"}
            if key is not None:
                headers["Authorization"] = f"Bearer {key}"
            body = b"{}" if method in ("POST", "PUT", "PATCH") else None
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return Answer(
                response.status, response.getheader("Content-Type") or "", response.read()
            )
        finally:
            connection.close()


@pytest.fixture(scope="module")
def running() -> Iterator[Front]:
    app = memory_setup(Settings())
    front = HttpFront(app.gateway).start()
    try:
        yield Front(app, front, app.account("pro"))
    finally:
        front.stop()


def document_paths(running: Front) -> list[str]:
    """Every path of the OpenAPI document, its parameters filled, as a client would call it."""
    answer = running.call("GET", "/doc?format=json")
    assert answer.status == 200
    paths = sorted(answer.json()["paths"])
    assert "/v1/jobs" in paths and "/v1/health" in paths
    return [re.sub(r"\{\w+\}", "01JZZZZZZZZZZZZZZZZZZZZZZZ", path) for path in paths]


def test_every_method_on_every_path_gets_a_json_answer_never_a_5xx(running: Front) -> None:
    keys = [None, running.account.key, running.account.admin_key]
    paths = [*document_paths(running), *PAGES, *UNKNOWN_PATHS]

    problems = []
    for path in paths:
        for method in METHODS:
            for key in keys:
                answer = running.call(method, path, key)
                where = (method, path, "key" if key else "no key", answer.status)
                if answer.status >= 500:
                    problems.append((*where, answer.body[:120]))
                elif method != "HEAD" and not (
                    answer.status < 400 and path.startswith(PAGES)  # a page, its script, a redirect
                ):
                    try:
                        answer.json()
                    except ValueError:
                        problems.append((*where, answer.body[:120]))

    assert problems == []


@pytest.mark.parametrize("method", sorted(set(METHODS) - GATEWAY_METHODS))
def test_a_method_api_gateway_lacks_is_refused_as_api_gateway_refuses_it(
    running: Front, method: str
) -> None:
    for path in ("/v1/jobs", "/v1/health", "/"):
        answer = running.call(method, path, running.account.key)

        # API Gateway has no method for it: 403 "Missing Authentication Token", in the
        # deployment's DEFAULT_4XX shape, before any authorizer runs.
        assert answer.status == 403, (method, path, answer.body)
        assert answer.content_type.startswith("application/json")
        error = answer.json()["error"]
        assert error["code"] == "invalid_request"
        assert error["message"] == "Missing Authentication Token"


def test_a_refusal_of_the_front_itself_is_json_too(running: Front) -> None:
    connection = http.client.HTTPConnection(running.front.host, running.front.port, timeout=10)
    try:
        connection.putrequest("POST", "/v1/jobs")
        connection.putheader("Content-Length", "not a number")
        connection.endheaders()
        response = connection.getresponse()
        status, body = response.status, response.read()
    finally:
        connection.close()

    assert status == 400
    assert json.loads(body)["error"]["code"] == "invalid_request"
