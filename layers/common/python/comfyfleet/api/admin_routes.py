"""The admin routes (admin scope): accounts, keys, every account's jobs, nodes, queues."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Body, Query

from comfyfleet.api.models import (
    AccountCreate,
    AccountCreated,
    JobList,
    JobView,
    KeyCreate,
    KeyCreated,
    KeyList,
    KeyView,
    NodeDrained,
    NodeList,
    NodeRemoved,
    QueueList,
    WebhookSecretRotated,
)
from comfyfleet.api.routing import RouteHost
from comfyfleet.domain import JobState

_TAGS = ["admin"]
_ERRORS = (400, 401, 403, 404, 503)


def register_admin_routes(api: RouteHost) -> None:
    _register_accounts(api)
    _register_jobs(api)
    _register_fleet(api)


def _register_accounts(api: RouteHost) -> None:
    admin, tags, errors = api.admin, _TAGS, _ERRORS

    @api.route("POST", "/v1/admin/accounts", status_code=201, errors=errors, tags=tags)
    def create_account(request: Annotated[AccountCreate, Body()]) -> Response[AccountCreated]:
        body = admin.create_account(request)
        return Response(201, content_types.APPLICATION_JSON, body)

    @api.route(
        "POST",
        "/v1/admin/accounts/<account_id>/webhook-secret/rotate",
        errors=errors,
        tags=tags,
        summary="New webhook secret; the old one signs too for a grace period",
    )
    def rotate_webhook_secret(account_id: str) -> WebhookSecretRotated:
        return admin.rotate_webhook_secret(account_id)

    @api.route(
        "POST",
        "/v1/admin/keys",
        status_code=201,
        errors=errors,
        tags=tags,
        summary="Create an API key (its value is shown this once)",
    )
    def create_key(request: Annotated[KeyCreate, Body()]) -> Response[KeyCreated]:
        return Response(201, content_types.APPLICATION_JSON, admin.create_key(request))

    @api.route("GET", "/v1/admin/keys", errors=errors, tags=tags, summary="An account's keys")
    def list_keys(account_id: Annotated[str, Query(min_length=1, max_length=64)]) -> KeyList:
        return admin.keys(account_id)

    @api.route("DELETE", "/v1/admin/keys/<key_id>", errors=errors, tags=tags, summary="Revoke")
    def revoke_key(key_id: str) -> KeyView:
        return admin.revoke_key(key_id)


def _register_jobs(api: RouteHost) -> None:
    admin, tags, errors = api.admin, _TAGS, _ERRORS

    @api.route("GET", "/v1/admin/jobs", errors=errors, tags=tags, summary="Every account's jobs")
    def list_all_jobs(
        status: Annotated[JobState | None, Query(description="Only jobs in this state.")] = None,
        account_id: Annotated[str | None, Query(max_length=64, description="One account's.")] = (
            None
        ),
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        cursor: Annotated[str | None, Query(max_length=256)] = None,
    ) -> JobList:
        return admin.jobs(
            state=status,
            account_id=account_id,
            limit=limit,
            cursor=cursor,
            base_url=api.scope.base_url,
        )

    @api.route("GET", "/v1/admin/jobs/<job_id>", errors=errors, tags=tags, summary="Any job")
    def get_any_job(job_id: str) -> JobView:
        return admin.job(job_id, base_url=api.scope.base_url)


def _register_fleet(api: RouteHost) -> None:
    admin, tags, errors = api.admin, _TAGS, _ERRORS

    @api.route("GET", "/v1/admin/nodes", errors=errors, tags=tags, summary="GPU nodes")
    def list_nodes() -> NodeList:
        return admin.nodes()

    @api.route("POST", "/v1/admin/nodes/<node_id>/drain", errors=errors, tags=tags)
    def drain_node(node_id: str) -> NodeDrained:
        return admin.drain(node_id)

    @api.route("DELETE", "/v1/admin/nodes/<node_id>", errors=errors, tags=tags)
    def remove_node(node_id: str) -> NodeRemoved:
        return admin.remove(node_id)

    @api.route("GET", "/v1/admin/queues", errors=errors, tags=tags, summary="Queue depths, ages")
    def list_queues() -> QueueList:
        return admin.queues()
