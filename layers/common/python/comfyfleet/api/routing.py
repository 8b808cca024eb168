"""What the routes see of the application: the request's scope and the host they register on.

comfyfleet.api.http builds the application and comfyfleet.api.routes fills it with routes;
both depend on this module, so the import runs one way (http → routes → routing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from comfyfleet.api.admin import AdminService
    from comfyfleet.api.context import Caller
    from comfyfleet.api.jobs import JobsService
    from comfyfleet.api.node_classes import NodeClasses
    from comfyfleet.domain import Counters


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
    def scope(self) -> RequestScope: ...

    @property
    def caller(self) -> Caller: ...

    def route(
        self, method: str, rule: str, *, errors: tuple[int, ...] = (), **options: Any
    ) -> Any: ...
