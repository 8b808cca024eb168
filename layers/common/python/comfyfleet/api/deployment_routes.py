"""The deployment routes (docs/deployments.md): create a version, list, read, delete, run.
Registered by comfyfleet.api.routes, in the order of the OpenAPI document's paths."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Body, Query

from comfyfleet.api.deployment_models import (
    DeploymentCreate,
    DeploymentDeleted,
    DeploymentJobAccepted,
    DeploymentList,
    DeploymentRun,
    DeploymentView,
)
from comfyfleet.api.routing import (
    READ_ERRORS,
    SUBMIT_ERRORS,
    IdempotencyKey,
    RouteHost,
    accepted,
)

_TAGS = ["deployments"]


def register_deployment_routes(api: RouteHost) -> None:
    _register_versions(api)
    _register_run(api)


def _register_versions(api: RouteHost) -> None:
    deployments = api.deployments

    @api.route(
        "POST",
        "/v1/deployments",
        status_code=201,
        errors=(400, 401, 403, 413, 503),
        tags=_TAGS,
        summary="Save a workflow with named inputs (the next version of its name)",
    )
    def create_deployment(
        request: Annotated[DeploymentCreate, Body()],
    ) -> Response[DeploymentView]:
        body = deployments.create(api.caller, request)
        return Response(201, content_types.APPLICATION_JSON, body)

    @api.route(
        "GET",
        "/v1/deployments",
        errors=(400, *READ_ERRORS),
        tags=_TAGS,
        summary="The built-in deployments and yours",
    )
    def list_deployments(
        limit: Annotated[int, Query(ge=1, le=100)] = 50,
        cursor: Annotated[str | None, Query(max_length=256)] = None,
    ) -> DeploymentList:
        return deployments.list_deployments(api.caller, limit=limit, cursor=cursor)

    @api.route(
        "GET",
        "/v1/deployments/<name>",
        errors=(400, *READ_ERRORS),
        tags=_TAGS,
        summary="A deployment (the newest version, or ?version=N) with its inputs' JSON Schema",
    )
    def get_deployment(
        name: str,
        version: Annotated[int | None, Query(ge=1, description="A version number.")] = None,
    ) -> DeploymentView:
        return deployments.view(api.caller, name, version)

    @api.route(
        "DELETE",
        "/v1/deployments/<name>",
        errors=(400, *READ_ERRORS),
        tags=_TAGS,
        summary="Delete a deployment, every version",
    )
    def delete_deployment(name: str) -> DeploymentDeleted:
        return deployments.delete(api.caller, name)


def _register_run(api: RouteHost) -> None:
    @api.route(
        "POST",
        "/v1/deployments/<name>/jobs",
        status_code=202,
        errors=(404, *SUBMIT_ERRORS),
        tags=_TAGS,
        summary="Run a deployment with values for its inputs",
    )
    def run_deployment(
        name: str,
        request: Annotated[DeploymentRun, Body()],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[DeploymentJobAccepted]:
        scope = api.scope
        submitted = api.deployments.run(
            api.caller,
            name,
            request,
            base_url=scope.base_url,
            idempotency_key=idempotency_key,
            lambda_context=scope.lambda_context,
        )
        return accepted(api, submitted)
