"""API Gateway (REST API, Lambda proxy integration) on one machine: a plain HTTP request in,
the handlers' answer out, with the authorizer in front as the deployment has it.

``LocalGateway.request(method, path, query, headers, body)`` builds the proxy event v1 a
REST API would send (base64 for a body that is not UTF-8), runs the REQUEST authorizer
for every path but the public ones, fills ``requestContext.authorizer`` from its answer and
returns ``(status, headers, body)``. The authorizer's refusals get the gateway responses
the deployment configures (functions/authorizer/README.md): 401 ``unauthorized`` and 403
``forbidden`` in this API's error shape. A method the REST API's ``ANY`` does not cover
(TRACE, CONNECT, PROPFIND, any other) has no method in API Gateway, which answers 403
``Missing Authentication Token`` before any authorizer, in the DEFAULT_4XX shape; a handler
that raises is a 502 in the DEFAULT_5XX one. The fuzz tests use it, and the dev stack's HTTP
front (``comfyfleet dev``).

Like API Gateway, the gateway can cache the authorizer's answers for ``authorizer_ttl``
seconds per identity source (the key headers), so a revoked key keeps working until its
answer expires; refusals are not cached. The default, 0, calls the authorizer every time.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from comfyfleet.api.context import is_public

Handler = Callable[[dict[str, Any], Any], Any]
Pairs = Mapping[str, str] | Iterable[tuple[str, str]]

# Powertools keeps the current event on a class attribute, so requests into the handlers
# of one process must not overlap.
_HANDLER_LOCK = threading.Lock()
LAMBDA_TIMEOUT_MILLIS = 29_000
_IDENTITY_HEADERS = ("authorization", "x-api-key")
# What a REST API's ANY method stands for: API Gateway has no method for anything else.
GATEWAY_METHODS = frozenset({"DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"})
_MAX_CACHED_ANSWERS = 10_000


@dataclass(frozen=True)
class LocalResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), None)


@dataclass
class LocalLambdaContext:
    """The attributes of Lambda's context object that Powertools and the handlers read."""

    function_name: str = "comfyfleet-local"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:000000000000:function:comfyfleet-local"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/comfyfleet-local"
    log_stream_name: str = "local"
    deadline: float = field(default_factory=lambda: time.monotonic() + LAMBDA_TIMEOUT_MILLIS / 1000)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


class LocalGateway:
    def __init__(
        self,
        api: Handler,
        authorizer: Handler,
        *,
        stage: str = "local",
        api_id: str = "local",
        account: str = "000000000000",
        region: str = "us-east-1",
        public: Callable[[str], bool] = is_public,
        authorizer_ttl: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.authorizer = authorizer
        self.stage = stage
        self.api_id = api_id
        self.account = account
        self.region = region
        self.public = public
        self.authorizer_ttl = authorizer_ttl
        self._monotonic = monotonic
        self._answers: dict[tuple[str, ...], tuple[float, Any]] = {}
        self._answers_lock = threading.Lock()

    def request(
        self,
        method: str,
        path: str,
        query: str | Pairs | None = None,
        headers: Pairs | None = None,
        body: bytes | None = None,
        *,
        source_ip: str = "127.0.0.1",
    ) -> LocalResponse:
        """One HTTP request through the gateway and the handlers."""
        method = method.upper()
        path = "/" + path.lstrip("/") if path else "/"
        header_pairs = _pairs(headers)
        if not any(name.lower() == "host" for name, _ in header_pairs):
            header_pairs.append(("Host", "localhost"))
        header_pairs += [("X-Forwarded-For", source_ip), ("X-Forwarded-Proto", "http")]
        query_pairs = (
            parse_qsl(query, keep_blank_values=True) if isinstance(query, str) else _pairs(query)
        )
        request_id = str(uuid.uuid4())
        if method not in GATEWAY_METHODS:
            return gateway_response(403, "Missing Authentication Token", request_id)
        context = self._request_context(method, path, request_id, source_ip, header_pairs)
        event: dict[str, Any] = {
            "resource": "/{proxy+}",
            "path": path,
            "httpMethod": method,
            **_single_and_multi("headers", "multiValueHeaders", header_pairs),
            **_single_and_multi(
                "queryStringParameters", "multiValueQueryStringParameters", query_pairs
            ),
            "pathParameters": {"proxy": path.lstrip("/")} if path != "/" else None,
            "stageVariables": None,
            "requestContext": context,
            **_body(body),
        }
        if not self.public(path):
            refused = self._authorize(event, context)
            if refused is not None:
                return refused
        with _HANDLER_LOCK:
            try:
                result = self.api(event, LocalLambdaContext(aws_request_id=request_id))
            except Exception:
                return gateway_response(502, "Internal server error", request_id)
        return _response(result, request_id)

    def _request_context(
        self,
        method: str,
        path: str,
        request_id: str,
        source_ip: str,
        headers: list[tuple[str, str]],
    ) -> dict[str, Any]:
        user_agent = next((v for k, v in headers if k.lower() == "user-agent"), None)
        host = next((v for k, v in headers if k.lower() == "host"), "localhost")
        return {
            "accountId": self.account,
            "apiId": self.api_id,
            "domainName": host,
            "httpMethod": method,
            "path": path,  # a custom domain's form: links carry no stage
            "protocol": "HTTP/1.1",
            "requestId": request_id,
            "requestTimeEpoch": int(time.time() * 1000),
            "resourcePath": "/{proxy+}",
            "stage": self.stage,
            "identity": {"sourceIp": source_ip, "userAgent": user_agent},
        }

    def _authorize(self, event: dict[str, Any], context: dict[str, Any]) -> LocalResponse | None:
        """Run the REQUEST authorizer; None when allowed (its context is added to ``event``)."""
        method_arn = (
            f"arn:aws:execute-api:{self.region}:{self.account}:{self.api_id}/{self.stage}/"
            f"{event['httpMethod']}{event['path']}"
        )
        authorizer_event = {
            "type": "REQUEST",
            "methodArn": method_arn,
            **{k: event[k] for k in ("resource", "path", "httpMethod", "headers")},
            **{k: event[k] for k in ("multiValueHeaders", "queryStringParameters")},
            "multiValueQueryStringParameters": event["multiValueQueryStringParameters"],
            "pathParameters": event["pathParameters"],
            "stageVariables": None,
            "requestContext": context,
        }
        request_id = context["requestId"]
        identity = _identity(event["headers"])
        answer = self._cached_answer(identity)
        if answer is None:
            with _HANDLER_LOCK:
                try:
                    answer = self.authorizer(authorizer_event, LocalLambdaContext())
                except Exception as exc:
                    if str(exc) == "Unauthorized":
                        return unauthorized_response(request_id)
                    return _error_response(  # AUTHORIZER_FAILURE
                        503,
                        "storage_unavailable",
                        "authorization is unavailable; retry shortly",
                        request_id,
                    )
            self._remember_answer(identity, answer)
        if not _allows(answer, method_arn):
            return forbidden_response(request_id)
        authorizer = dict(answer.get("context") or {})
        authorizer["principalId"] = answer.get("principalId")
        authorizer["integrationLatency"] = 0
        context["authorizer"] = authorizer
        return None

    def _cached_answer(self, identity: tuple[str, ...]) -> Any:
        if self.authorizer_ttl <= 0:
            return None
        with self._answers_lock:
            found = self._answers.get(identity)
        if found is None or found[0] <= self._monotonic():
            return None
        return found[1]

    def _remember_answer(self, identity: tuple[str, ...], answer: Any) -> None:
        if self.authorizer_ttl <= 0 or not isinstance(answer, Mapping):
            return
        now = self._monotonic()
        with self._answers_lock:
            if len(self._answers) >= _MAX_CACHED_ANSWERS:  # keep the cache bounded
                self._answers = {k: v for k, v in self._answers.items() if v[0] > now}
                if len(self._answers) >= _MAX_CACHED_ANSWERS:
                    self._answers.clear()
            self._answers[identity] = (now + self.authorizer_ttl, answer)


def _identity(headers: Mapping[str, str] | None) -> tuple[str, ...]:
    """The identity source the answer is cached under: the key headers' values."""
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    return tuple(lowered.get(name, "") for name in _IDENTITY_HEADERS)


def unauthorized_response(request_id: str) -> LocalResponse:
    """The UNAUTHORIZED gateway response the deployment configures."""
    return _error_response(401, "unauthorized", "a valid API key is required", request_id)


def forbidden_response(request_id: str) -> LocalResponse:
    """The ACCESS_DENIED gateway response the deployment configures."""
    return _error_response(403, "forbidden", "this API key may not call this route", request_id)


def _error_response(status: int, code: str, message: str, request_id: str) -> LocalResponse:
    body = {"error": {"code": code, "message": message, "request_id": request_id}}
    return LocalResponse(
        status,
        {"Content-Type": "application/json", "X-Request-Id": request_id},
        json.dumps(body, separators=(",", ":")).encode(),
    )


def gateway_response(status: int, message: str, request_id: str | None = None) -> LocalResponse:
    """A refusal by the gateway itself, as the deployment's DEFAULT_4XX and DEFAULT_5XX
    gateway responses shape it (cdk/comfyfleet_cdk/api.py)."""
    code = "invalid_request" if status < 500 else "internal_error"
    return _error_response(status, code, message, request_id or str(uuid.uuid4()))


def _allows(answer: Any, method_arn: str) -> bool:
    if not isinstance(answer, Mapping):
        return False
    statements = (answer.get("policyDocument") or {}).get("Statement") or []
    allowed = False
    for statement in statements:
        resources = statement.get("Resource")
        resources = [resources] if isinstance(resources, str) else resources or []
        if any(fnmatch.fnmatchcase(method_arn, pattern) for pattern in resources):
            if statement.get("Effect") == "Deny":
                return False
            allowed = allowed or statement.get("Effect") == "Allow"
    return allowed


def _pairs(items: Pairs | None) -> list[tuple[str, str]]:
    if items is None:
        return []
    if isinstance(items, Mapping):
        return [(str(k), str(v)) for k, v in items.items()]
    return [(str(k), str(v)) for k, v in items]


def _single_and_multi(single: str, multi: str, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """API Gateway's two views of repeated names: the last value, and all of them."""
    if not pairs:
        return {single: None, multi: None}
    last: dict[str, str] = {}
    every: dict[str, list[str]] = {}
    for name, value in pairs:
        last[name] = value
        every.setdefault(name, []).append(value)
    return {single: last, multi: every}


def _body(body: bytes | None) -> dict[str, Any]:
    if body is None or body == b"":
        return {"body": None, "isBase64Encoded": False}
    try:
        return {"body": body.decode("utf-8"), "isBase64Encoded": False}
    except UnicodeDecodeError:
        return {"body": base64.b64encode(body).decode(), "isBase64Encoded": True}


def _response(result: Any, request_id: str) -> LocalResponse:
    if not isinstance(result, Mapping) or not isinstance(result.get("statusCode"), int):
        return gateway_response(502, "Internal server error", request_id)
    headers: dict[str, str] = {}
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers[name] = ", ".join(str(value) for value in values)
    for name, value in (result.get("headers") or {}).items():
        headers[name] = str(value)
    raw = result.get("body") or ""
    body = base64.b64decode(raw) if result.get("isBase64Encoded") else str(raw).encode()
    return LocalResponse(result["statusCode"], headers, body)
