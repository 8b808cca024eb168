"""The api function's application: API Gateway REST proxy events (v1) in, responses out.

Before Powertools routes a request, ``HttpApi`` checks what holds for every route: the caller
(the authorizer's context; 401 without one), the path's scope (403), the body's size (413)
and JSON (400 malformed_json) — parsed once, strictly (no NaN, bounded nesting), whatever the
Content-Type says. After, it adds the request id and the caller's usage headers to every
response and records the submit metrics. Every exception becomes a response in one handler
(comfyfleet.api.errors).

One request at a time per instance: Powertools keeps the current event on the resolver.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.models import APIKey, APIKeyIn, HTTPBearer

import comfyfleet
from comfyfleet.api.admin import AdminService
from comfyfleet.api.context import Caller, rate_headers, required_scope
from comfyfleet.api.deployments import DeploymentsService
from comfyfleet.api.errors import (
    ApiError,
    Forbidden,
    InvalidRequest,
    MalformedJson,
    MethodNotAllowed,
    PayloadTooLarge,
    Problem,
    ResourceNotFound,
    Unauthorized,
    problem_for,
)
from comfyfleet.api.jobs import JobsService
from comfyfleet.api.node_classes import NodeClasses
from comfyfleet.api.openapi import DocumentedResolver
from comfyfleet.api.routes import register_routes
from comfyfleet.api.routing import RequestScope
from comfyfleet.api.telemetry import SubmitMetrics
from comfyfleet.domain import Counters
from comfyfleet.errors import LimitExceeded
from comfyfleet.settings import Settings

logger = logging.getLogger(__name__)

DOC_PATH = "/doc"
# Room for the fields around the workflow (metadata ≤ 4 KB, the models manifest, URLs).
BODY_ALLOWANCE_BYTES = 64 * 1024
MAX_JSON_DEPTH = 32
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_SUBMIT_PATH = re.compile(r"^/v1/(jobs|workflows/[^/]+|deployments/[^/]+/jobs)/*$")
UNAUTHORIZED_MESSAGE = "a valid API key is required: Authorization: Bearer sk_live_…"
MALFORMED_MESSAGE = "the request body is not valid JSON"


class _Rejected(Exception):
    """A request refused before routing."""

    def __init__(self, error: ApiError) -> None:
        self.problem = problem_for(error)


class HttpApi:
    def __init__(
        self,
        *,
        settings: Settings,
        jobs: JobsService,
        admin: AdminService,
        node_classes: NodeClasses,
        deployments: DeploymentsService,
        metrics: SubmitMetrics,
    ) -> None:
        self.settings = settings
        self.jobs = jobs
        self.deployments = deployments
        self.admin = admin
        self.node_classes = node_classes
        self.metrics = metrics
        self.max_body_bytes = settings.max_workflow_bytes + BODY_ALLOWANCE_BYTES
        self.resolver = DocumentedResolver(
            enable_validation=True,
            response_validation_error_http_code=500,
            json_body_deserializer=self._parsed_body,
        )
        self._patterns: list[tuple[str, re.Pattern[str]]] = []
        self._scope: RequestScope | None = None
        self.resolver.exception_handler(Exception)(self._on_exception)
        register_routes(self)
        self.resolver.enable_swagger(
            path=DOC_PATH,
            title="comfyfleet",
            version=comfyfleet.__version__,
            description="Run ComfyUI workflows on a GPU fleet. Authenticate with "
            "`Authorization: Bearer sk_live_…` (or `X-API-Key`). Every authenticated response "
            "carries X-RateLimit-Limit/Remaining/Reset, X-Concurrent-Limit/Current, "
            "X-Queue-Limit/Current and X-Request-Id.",
            security_schemes={
                "bearerAuth": HTTPBearer(description="sk_live_… API key"),
                "apiKeyAuth": APIKey(name="X-API-Key", in_=APIKeyIn.header),
            },
            security=[{"bearerAuth": []}, {"apiKeyAuth": []}],
        )
        self._patterns.append(("GET", _pattern(DOC_PATH)))

    # -- routing helpers for comfyfleet.api.routes --------------------------------------------

    def route(self, method: str, rule: str, *, errors: tuple[int, ...] = (), **options: Any) -> Any:
        """Register a route (and remember it, to tell 405 from 404)."""
        self._patterns.append((method, _pattern(rule)))
        self.resolver.document_errors(method, rule, errors)
        return self.resolver.route(rule, method, **options)

    @property
    def scope(self) -> RequestScope:
        if self._scope is None:
            raise RuntimeError("no request is being handled")
        return self._scope

    @property
    def caller(self) -> Caller:
        """The authenticated caller (handle() has refused requests without one)."""
        caller = self.scope.caller
        if caller is None:
            raise RuntimeError("route needs a caller but the path is public")
        return caller

    # -- the request ------------------------------------------------------------------------------

    def handle(self, event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
        """One proxy event → one proxy response."""
        started = time.perf_counter()
        event = dict(event) if isinstance(event, Mapping) else {}
        scope = self._open(event, context)
        self._scope = scope
        try:
            event = self._admit_request(event, scope)
            response = self.resolver.resolve(event, context)
        except _Rejected as rejected:
            response = self._proxy_response(rejected.problem, scope)
        finally:
            self._scope = None
        self._finish(response, scope, started)
        return response

    def _open(self, event: dict[str, Any], context: Any) -> RequestScope:
        request_context = event.get("requestContext")
        if not isinstance(request_context, dict):
            request_context = {}
        request_id = str(request_context.get("requestId") or uuid.uuid4())
        path = str(event.get("path") or "/")
        return RequestScope(
            request_id=request_id,
            method=str(event.get("httpMethod") or "GET").upper(),
            path=path,
            base_url=self._base_url(event, request_context),
            caller=Caller.from_context(request_context.get("authorizer"), self.settings),
            lambda_context=context,
        )

    def _base_url(self, event: dict[str, Any], request_context: dict[str, Any]) -> str:
        """Where clients reach this API: the configured URL, else the request's own."""
        if self.settings.public_base_url:
            return self.settings.public_base_url.rstrip("/")
        headers = event.get("headers") if isinstance(event.get("headers"), dict) else {}
        lowered = {str(k).lower(): v for k, v in (headers or {}).items() if isinstance(v, str)}
        host = lowered.get("host") or str(request_context.get("domainName") or "")
        if not host or not re.fullmatch(r"[A-Za-z0-9.:\[\]-]{1,255}", host):
            return ""
        proto = lowered.get("x-forwarded-proto", "https")
        proto = proto if proto in ("http", "https") else "https"
        stage = str(request_context.get("stage") or "")
        # execute-api URLs carry the stage; a custom domain's base path mapping does not.
        prefix = f"/{stage}" if stage and ".execute-api." in host else ""
        return f"{proto}://{host}{prefix}"

    def _admit_request(self, event: dict[str, Any], scope: RequestScope) -> dict[str, Any]:
        """Caller, scope, body: checked once here for every route."""
        needed = required_scope(scope.path)
        if needed is not None:
            if scope.caller is None:
                raise _Rejected(Unauthorized(UNAUTHORIZED_MESSAGE))
            if needed.isdisjoint(scope.caller.scopes):
                names = " or ".join(repr(each.value) for each in sorted(needed))
                raise _Rejected(Forbidden(f"this API key lacks the {names} scope"))
        body = event.get("body")
        if scope.method not in _BODY_METHODS or body is None or body == "":
            return event
        text = self._body_text(body, bool(event.get("isBase64Encoded")))
        scope.body = self._parse(text)
        headers = dict(event.get("headers") or {})
        for name in [name for name in headers if str(name).lower() == "content-type"]:
            del headers[name]
        # JSON whatever the client said: curl -d sends form encoding unless told otherwise.
        headers["content-type"] = content_types.APPLICATION_JSON
        return {
            **event,
            "headers": headers,
            "multiValueHeaders": {k: [v] for k, v in headers.items() if isinstance(v, str)},
            "body": text,
            "isBase64Encoded": False,
        }

    def _body_text(self, body: Any, encoded: bool) -> str:
        if not isinstance(body, str):
            raise _Rejected(MalformedJson(MALFORMED_MESSAGE))
        try:
            raw = base64.b64decode(body, validate=True) if encoded else None
        except (binascii.Error, ValueError):
            raise _Rejected(MalformedJson(MALFORMED_MESSAGE)) from None
        size = len(raw) if raw is not None else len(body.encode("utf-8", "surrogatepass"))
        if size > self.max_body_bytes:
            raise _Rejected(
                PayloadTooLarge(f"the body is {size} bytes; at most {self.max_body_bytes} allowed")
            )
        if raw is None:
            return body
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _Rejected(MalformedJson(MALFORMED_MESSAGE)) from None

    def _parse(self, text: str) -> Any:
        try:
            value = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            raise _Rejected(MalformedJson(MALFORMED_MESSAGE)) from None
        if _depth_exceeds(value, MAX_JSON_DEPTH):
            raise _Rejected(InvalidRequest(f"the body nests deeper than {MAX_JSON_DEPTH} levels"))
        return value

    def _parsed_body(self, text: str) -> Any:
        """Powertools' JSON deserializer: the body parsed in _admit_request."""
        scope = self._scope
        if scope is not None and scope.body is not None:
            return scope.body
        return self._parse(text)

    # -- errors ----------------------------------------------------------------------------------

    def _on_exception(self, exc: Exception) -> Response[Any]:
        scope = self.scope
        if isinstance(exc, NotFoundError):
            exc = self._no_route(scope.method, scope.path)
        elif isinstance(exc, _Rejected):
            return self._response(exc.problem, scope)
        if isinstance(exc, LimitExceeded) and isinstance(exc.counters, Counters):
            scope.counters = exc.counters
        return self._response(problem_for(exc), scope)

    def _no_route(self, method: str, path: str) -> ApiError:
        allowed = sorted({verb for verb, pattern in self._patterns if pattern.match(path)})
        # A method the path allows yet no route took: a parameter holds characters that
        # Powertools' route patterns refuse (control characters, quotes): no such resource.
        if allowed and method not in allowed:
            return MethodNotAllowed(
                f"{method} is not allowed here; use {', '.join(allowed)}",
                headers={"Allow": ", ".join(allowed)},
            )
        return ResourceNotFound(f"no route {path[:200]}")

    def _response(self, problem: Problem, scope: RequestScope) -> Response[Any]:
        scope.error_code = problem.code
        return Response(
            status_code=problem.status,
            content_type=content_types.APPLICATION_JSON,
            body=problem.body(scope.request_id),
            headers=dict(problem.headers),
        )

    def _proxy_response(self, problem: Problem, scope: RequestScope) -> dict[str, Any]:
        scope.error_code = problem.code
        headers = {"Content-Type": content_types.APPLICATION_JSON, **problem.headers}
        return {
            "statusCode": problem.status,
            "multiValueHeaders": {name: [value] for name, value in headers.items()},
            "body": json.dumps(problem.body(scope.request_id), separators=(",", ":")),
            "isBase64Encoded": False,
        }

    # -- after -----------------------------------------------------------------------------------

    def _finish(self, response: dict[str, Any], scope: RequestScope, started: float) -> None:
        _set_header(response, "X-Request-Id", scope.request_id)
        if scope.replayed:
            _set_header(response, "Idempotent-Replayed", "true")
        if scope.caller is not None:
            counters = scope.counters or self._counters(scope.caller)
            if counters is not None:
                for name, value in rate_headers(scope.caller.limits, counters).items():
                    _set_header(response, name, value)
        if scope.method == "POST" and _SUBMIT_PATH.match(scope.path):
            status = int(response.get("statusCode", 500))
            if status == 202 and not scope.replayed:
                self.metrics.submitted((time.perf_counter() - started) * 1000)
            elif status >= 400:
                self.metrics.rejected(scope.error_code or str(status))

    def _counters(self, caller: Caller) -> Counters | None:
        try:
            return self.jobs.counters(caller)
        except Exception:
            # The headers are a courtesy: never fail a response over them.
            logger.warning("usage headers unavailable", exc_info=True)
            return None


def _pattern(rule: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"<\w+>", "[^/]+", rule.rstrip("/")) + "/*$")


def _set_header(response: dict[str, Any], name: str, value: str) -> None:
    if isinstance(response.get("multiValueHeaders"), dict):
        response["multiValueHeaders"][name] = [value]
    else:
        response.setdefault("headers", {})[name] = value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False
