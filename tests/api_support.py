"""Helpers for the API's tests: a client over the local gateway, accounts with keys, events."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from comfyfleet.api.context import Caller
from comfyfleet.api.http import HttpApi
from comfyfleet.api.local import LocalGateway, LocalResponse
from comfyfleet.api.wiring import MemoryWorld, memory_api
from comfyfleet.domain import Limits, Scope
from comfyfleet.settings import Settings
from comfyfleet.store import Stores

ROOT = Path(__file__).parents[1]
FUNCTIONS = ROOT / "functions"
RATE_HEADERS = (
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "X-Concurrent-Limit",
    "X-Concurrent-Current",
    "X-Queue-Limit",
    "X-Queue-Current",
)

# An API Gateway REST proxy event (v1) as AWS documents it, with an authorizer's context.
REST_EVENT: dict[str, Any] = {
    "resource": "/{proxy+}",
    "path": "/v1/health",
    "httpMethod": "GET",
    "headers": {
        "Accept": "application/json",
        "Host": "abc123.execute-api.us-east-1.amazonaws.com",
        "User-Agent": "curl/8.5.0",
        "X-Amzn-Trace-Id": "Root=1-65f0a1b2-0123456789abcdef01234567",
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
    },
    "multiValueHeaders": {},
    "queryStringParameters": None,
    "multiValueQueryStringParameters": None,
    "pathParameters": {"proxy": "v1/health"},
    "stageVariables": None,
    "requestContext": {
        "resourceId": "2gxmpl",
        "resourcePath": "/{proxy+}",
        "httpMethod": "GET",
        "extendedRequestId": "JJbxmHc3IAMFoRA=",
        "requestTime": "10/Mar/2026:13:40:52 +0000",
        "path": "/prod/v1/health",
        "accountId": "123456789012",
        "protocol": "HTTP/1.1",
        "stage": "prod",
        "domainPrefix": "abc123",
        "requestTimeEpoch": 1773150052000,
        "requestId": "e6a5a1b8-7c4d-4d0f-9c41-2f5e8d6b7a10",
        "identity": {"sourceIp": "203.0.113.7", "userAgent": "curl/8.5.0"},
        "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
        "apiId": "abc123",
    },
    "body": None,
    "isBase64Encoded": False,
}


def rest_event(
    method: str,
    path: str,
    *,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    query: Mapping[str, str] | None = None,
    caller: Caller | None = None,
    request_id: str = "e6a5a1b8-7c4d-4d0f-9c41-2f5e8d6b7a10",
) -> dict[str, Any]:
    """REST_EVENT for another request: ``body`` is JSON-encoded unless bytes or str."""
    event = copy.deepcopy(REST_EVENT)
    all_headers = {**event["headers"], **(headers or {})}
    if body is not None and not isinstance(body, str | bytes):
        body = json.dumps(body)
        all_headers.setdefault("Content-Type", "application/json")
    if isinstance(body, bytes):
        body = body.decode()
    event.update(
        path=path,
        httpMethod=method,
        headers=all_headers,
        multiValueHeaders={k: [v] for k, v in all_headers.items()},
        queryStringParameters=dict(query) if query else None,
        multiValueQueryStringParameters={k: [v] for k, v in query.items()} if query else None,
        pathParameters={"proxy": path.lstrip("/")},
        body=body,
    )
    context = event["requestContext"]
    context.update(httpMethod=method, path=f"/prod{path}", requestId=request_id)
    if caller is not None:
        context["authorizer"] = {
            **caller.to_context(),
            "principalId": caller.account_id,
            "integrationLatency": 12,
        }
    return event


@dataclass
class LambdaContext:
    function_name: str = "comfyfleet-api"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:comfyfleet-api"
    aws_request_id: str = "52fdfc07-2182-454f-963f-5f0f9a621d72"

    def get_remaining_time_in_millis(self) -> int:
        return 25_000


def load_function(name: str) -> ModuleType:
    """functions/<name>/app.py as a fresh module (each Lambda function is its own asset)."""
    module_name = f"comfyfleet_function_{name}"
    sys.modules.pop(module_name, None)
    spec = importlib.util.spec_from_file_location(module_name, FUNCTIONS / name / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Account:
    account_id: str
    key: str  # the plaintext API key (jobs scope)
    admin_key: str  # a key with the admin scope only

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"X-API-Key": self.admin_key}


def new_account(stores: Stores, now: float, tier: str = "free", **overrides: Any) -> Account:
    account = stores.accounts.create(tier=tier, name="test", now=now)
    if overrides:
        account.limit_overrides = dict(overrides)
        stores.accounts.update(account)
    _, key = stores.keys.create(account.account_id, {Scope.JOBS}, name="jobs", now=now)
    _, admin = stores.keys.create(account.account_id, {Scope.ADMIN}, name="admin", now=now)
    return Account(account.account_id, key, admin)


def caller_of(account_id: str, *scopes: Scope, limits: Limits | None = None) -> Caller:
    return Caller(
        account_id=account_id,
        tier="free",
        scopes=frozenset(scopes or (Scope.JOBS,)),
        key_id="sk_live_abcdefgh",
        limits=limits or Limits(60, 2, 100, 2),
    )


@dataclass
class ApiClient:
    """HTTP-shaped calls through the local gateway."""

    gateway: LocalGateway
    default_headers: dict[str, str] = field(default_factory=dict)

    def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        query: str | None = None,
    ) -> LocalResponse:
        if json_body is not None:
            body = json.dumps(json_body).encode()
        return self.gateway.request(
            method, path, query, {**self.default_headers, **(headers or {})}, body
        )

    def get(self, path: str, **kwargs: Any) -> LocalResponse:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, json_body: Any = None, **kwargs: Any) -> LocalResponse:
        return self.call("POST", path, json_body=json_body, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> LocalResponse:
        return self.call("DELETE", path, **kwargs)


def error_of(response: LocalResponse) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


@dataclass
class MemoryApi:
    """The API, the authorizer and the gateway on in-memory stores."""

    api: HttpApi
    world: MemoryWorld
    gateway: LocalGateway
    anonymous: ApiClient

    def account(self, tier: str = "free", **overrides: Any) -> Account:
        return new_account(self.world.stores, self.world.clock.now(), tier, **overrides)

    def client(self, account: Account, *, admin: bool = False) -> ApiClient:
        headers = account.admin_headers if admin else account.headers
        return ApiClient(self.gateway, headers)

    def claim(self, job_id: str, node_id: str = "i-node1") -> None:
        """Take the job's ring message as an agent would, and claim it."""
        received = self.world.queues.receive(self.world.shared_url, visibility_seconds=600)
        assert received is not None and received.message.job_id == job_id
        self.api.jobs.dispatcher.claim(received.message, node_id)


def memory_setup(settings: Settings) -> MemoryApi:
    api, authorizer, world = memory_api(settings)
    gateway = LocalGateway(api.handle, lambda event, _context: authorizer.authorize(event))
    return MemoryApi(api, world, gateway, ApiClient(gateway))


def authorizer_event(
    headers: Mapping[str, str] | None = None, *, method: str = "GET", path: str = "/v1/jobs"
) -> dict[str, Any]:
    """The event API Gateway sends a REQUEST authorizer (AWS's documented shape)."""
    all_headers = {**REST_EVENT["headers"], **(headers or {})}
    context = copy.deepcopy(REST_EVENT["requestContext"])
    context.update(httpMethod=method, path=f"/prod{path}")
    return {
        "type": "REQUEST",
        "methodArn": f"arn:aws:execute-api:us-east-1:123456789012:abc123/prod/{method}{path}",
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": {k: [v] for k, v in all_headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": context,
    }
