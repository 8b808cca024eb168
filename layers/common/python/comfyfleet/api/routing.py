"""What the routes see of the application: the request's scope and the host they register on.

comfyfleet.api.http builds the application and comfyfleet.api.routes fills it with routes;
both depend on this module, so the import runs one way (http → routes → routing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Protocol

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Header

if TYPE_CHECKING:
    from comfyfleet.api.admin import AdminService
    from comfyfleet.api.context import Caller
    from comfyfleet.api.deployments import DeploymentsService
    from comfyfleet.api.jobs import JobsService, Submitted
    from comfyfleet.api.node_classes import NodeClasses
    from comfyfleet.domain import Counters
    from comfyfleet.settings import Settings


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Repeat a submit safely: the same key and body within 24 hours return the "
        "same job; the same key with another body is 409 idempotency_conflict.",
    ),
]
SUBMIT_ERRORS = (400, 401, 403, 409, 413, 429, 503)
READ_ERRORS = (401, 403, 404, 503)


@dataclass
class RequestScope:
    """What one request has established so far."""

    request_id: str
    method: str
    path: str
    base_url: str
    caller: Caller | None = None
    body: Any = None
    counters: Counters | None = None
    error_code: str | None = None
    replayed: bool = False
    lambda_context: Any = None


class RouteHost(Protocol):
    """The application as the routes use it (comfyfleet.api.http.HttpApi is one)."""

    @property
    def jobs(self) -> JobsService: ...

    @property
    def admin(self) -> AdminService: ...

    @property
    def node_classes(self) -> NodeClasses: ...

    @property
    def deployments(self) -> DeploymentsService: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def scope(self) -> RequestScope: ...

    @property
    def caller(self) -> Caller: ...

    def route(
        self, method: str, rule: str, *, errors: tuple[int, ...] = (), **options: Any
    ) -> Any: ...


def accepted(api: RouteHost, submitted: Submitted) -> Response[Any]:
    """The 202 of a submit; its counters make the usage headers without another read."""
    scope = api.scope
    scope.counters = submitted.counters
    scope.replayed = submitted.replayed
    return Response(
        status_code=202,
        content_type=content_types.APPLICATION_JSON,
        body=submitted.accepted,
    )
