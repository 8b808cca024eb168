"""The routes: each parses its parameters (Powertools validates them against the models), calls
a service and shapes the response. Authentication, scopes and errors are handled around them
(comfyfleet.api.http, which hands itself to register_routes as a RouteHost: this module never
imports it back).

The registration order is the order of the OpenAPI document's paths: keep it."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import unquote

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Query

import comfyfleet
from comfyfleet.api.admin_routes import register_admin_routes
from comfyfleet.api.console_routes import register_console_routes
from comfyfleet.api.deployment_routes import register_deployment_routes
from comfyfleet.api.models import (
    Health,
    JobAccepted,
    JobList,
    JobSubmission,
    JobView,
    Me,
    PreviewLink,
    TemplateInfo,
    TemplateJobAccepted,
    TemplateList,
    Usage,
    WebhookReplayed,
    iso,
)
from comfyfleet.api.node_classes import CACHE_CONTROL, etag_matches
from comfyfleet.api.routing import (
    READ_ERRORS,
    SUBMIT_ERRORS,
    IdempotencyKey,
    RouteHost,
    accepted,
)
from comfyfleet.catalogues import CatalogueDocument
from comfyfleet.domain import JobState
from comfyfleet.templates import TEMPLATES, Template

IfNoneMatch = Annotated[
    str | None,
    Header(
        alias="If-None-Match",
        description="An ETag from an earlier answer: 304 Not Modified while it is current.",
    ),
]
# ComfyUI's own description of a class, as its GET /object_info lists it.
_NODE_CLASS_SCHEMA = {
    "type": "object",
    "properties": {
        "input": {"type": "object", "description": "required, optional and hidden inputs"},
        "input_order": {"type": "object"},
        "output": {"type": "array"},
        "output_is_list": {"type": "array", "items": {"type": "boolean"}},
        "output_name": {"type": "array", "items": {"type": "string"}},
        "name": {"type": "string"},
        "display_name": {"type": "string"},
        "description": {"type": "string"},
        "python_module": {"type": "string"},
        "category": {"type": "string"},
        "output_node": {"type": "boolean"},
    },
    "additionalProperties": True,
}
CATALOGUE_RESPONSES: dict[int, Any] = {
    200: {
        "description": "Node classes by name, in ComfyUI's GET /object_info shape. ETag: "
        "the answer's version, for If-None-Match.",
        "content": {
            "application/json": {
                "schema": {"type": "object", "additionalProperties": _NODE_CLASS_SCHEMA}
            }
        },
    },
    304: {"description": "Not modified: the If-None-Match ETag is still current."},
}


def register_routes(api: RouteHost) -> None:
    _register_public(api)
    _register_jobs(api)
    _register_node_classes(api)
    for template in TEMPLATES.values():
        _register_template(api, template)
    register_deployment_routes(api)
    register_admin_routes(api)
    register_console_routes(api)


def _register_public(api: RouteHost) -> None:
    @api.route("GET", "/v1/health", tags=["meta"], summary="Liveness, version and time (no key)")
    def health() -> Health:
        return Health(version=comfyfleet.__version__, time=iso(api.jobs.clock.now()) or "")

    @api.route(
        "GET",
        "/v1/me",
        errors=(401, 503),
        tags=["meta"],
        summary="The calling key: its account, tier and scopes (any scope may ask)",
    )
    def me() -> Me:
        caller = api.caller
        return Me(
            account_id=caller.account_id,
            tier=caller.tier,
            scopes=sorted(caller.scopes),
            key_id=caller.key_id,
        )


def _register_jobs(api: RouteHost) -> None:
    _register_submit(api)
    _register_job_reads(api)
    _register_cancel(api)
    _register_preview(api)
    _register_webhook_replay(api)
    _register_account(api)


def _register_submit(api: RouteHost) -> None:
    @api.route(
        "POST",
        "/v1/jobs",
        status_code=202,
        errors=SUBMIT_ERRORS,
        tags=["jobs"],
        summary="Submit a workflow (ComfyUI API format)",
    )
    def submit_job(
        submission: Annotated[JobSubmission, Body()],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[JobAccepted]:
        scope = api.scope
        submitted = api.jobs.submit(
            api.caller,
            submission,
            base_url=scope.base_url,
            idempotency_key=idempotency_key,
            lambda_context=scope.lambda_context,
        )
        return accepted(api, submitted)


def _register_job_reads(api: RouteHost) -> None:
    jobs = api.jobs

    @api.route("GET", "/v1/jobs", errors=(400, *READ_ERRORS), tags=["jobs"], summary="Your jobs")
    def list_jobs(
        status: Annotated[JobState | None, Query(description="Only jobs in this state.")] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        cursor: Annotated[str | None, Query(max_length=256)] = None,
    ) -> JobList:
        return jobs.list_jobs(
            api.caller, state=status, limit=limit, cursor=cursor, base_url=api.scope.base_url
        )

    @api.route("GET", "/v1/jobs/<job_id>", errors=READ_ERRORS, tags=["jobs"], summary="A job")
    def get_job(job_id: str) -> JobView:
        return jobs.view(api.caller, job_id, base_url=api.scope.base_url)


def _register_cancel(api: RouteHost) -> None:
    """Two routes, one action: POST …/cancel and DELETE on the job."""

    def cancel(job_id: str) -> JobView:
        return api.jobs.cancel(api.caller, job_id, base_url=api.scope.base_url)

    options: dict[str, Any] = {"errors": (409, *READ_ERRORS), "tags": ["jobs"]}

    @api.route("POST", "/v1/jobs/<job_id>/cancel", summary="Cancel a job", **options)
    def cancel_job(job_id: str) -> JobView:
        return cancel(job_id)

    @api.route("DELETE", "/v1/jobs/<job_id>", summary="Cancel a job (as POST …/cancel)", **options)
    def delete_job(job_id: str) -> JobView:
        return cancel(job_id)


def _register_preview(api: RouteHost) -> None:
    @api.route(
        "GET",
        "/v1/jobs/<job_id>/preview",
        status_code=302,
        errors=READ_ERRORS,
        tags=["jobs"],
        summary="Redirect to the latest preview frame (a link valid for 60 s)",
    )
    def job_preview(
        job_id: str,
        redirect: Annotated[
            bool, Query(description="false: 200 with the link as JSON (for a page's <img>).")
        ] = True,
    ) -> Response[PreviewLink]:
        link = api.jobs.preview(api.caller, job_id, missing_ok=not redirect)
        if not redirect:
            return Response(
                200, content_types.APPLICATION_JSON, link, {"Cache-Control": "no-store"}
            )
        return Response(
            status_code=302,
            content_type=content_types.APPLICATION_JSON,
            body=link,
            headers={"Location": link.url or "", "Cache-Control": "no-store"},
        )


def _register_webhook_replay(api: RouteHost) -> None:
    @api.route(
        "POST",
        "/v1/jobs/<job_id>/webhook/replay",
        status_code=202,
        errors=(409, *READ_ERRORS),
        tags=["jobs"],
        summary="Send an ended job's webhook again (same event id)",
    )
    def replay_webhook(job_id: str) -> Response[WebhookReplayed]:
        body = api.jobs.replay_webhook(api.caller, job_id)
        return Response(202, content_types.APPLICATION_JSON, body)


def _register_account(api: RouteHost) -> None:
    """The caller's limits and the templates on offer: reads outside any one job."""

    @api.route("GET", "/v1/usage", errors=READ_ERRORS, tags=["account"], summary="Limits and use")
    def usage() -> Usage:
        body, counters = api.jobs.usage(api.caller)
        api.scope.counters = counters
        return body

    @api.route("GET", "/v1/workflows", errors=READ_ERRORS, tags=["workflows"], summary="Templates")
    def list_templates() -> TemplateList:
        return TemplateList(
            workflows=[
                TemplateInfo(name=t.name, description=t.description, parameters=t.schema())
                for t in TEMPLATES.values()
            ]
        )


def _register_node_classes(api: RouteHost) -> None:
    """The fleet's node catalogue (every environment in service), as ComfyUI serves its own:
    tools that read a ComfyUI server's /object_info work against the fleet."""
    options: dict[str, Any] = {"tags": ["catalogue"], "responses": CATALOGUE_RESPONSES}

    @api.route(
        "GET",
        "/v1/object_info",
        errors=(401, 403, 503),
        summary="Every node class on the fleet (ComfyUI's /object_info)",
        **options,
    )
    def object_info(if_none_match: IfNoneMatch = None) -> Response[Any]:
        return _catalogue(api.node_classes.object_info(), if_none_match)

    @api.route(
        "GET",
        "/v1/object_info/<class_type>",
        errors=READ_ERRORS,
        summary="One node class (ComfyUI's /object_info/{class}); 404 if no node has it",
        **options,
    )
    def node_class(class_type: str, if_none_match: IfNoneMatch = None) -> Response[Any]:
        # API Gateway passes the path as the client encoded it ("KSampler%20(Efficient)").
        return _catalogue(api.node_classes.node_class(unquote(class_type)), if_none_match)


def _catalogue(document: CatalogueDocument, if_none_match: str | None) -> Response[Any]:
    headers = {"ETag": document.etag, "Cache-Control": CACHE_CONTROL}
    if etag_matches(if_none_match, document.etag):
        return Response(status_code=304, headers=headers)
    return Response(200, content_types.APPLICATION_JSON, document.body, headers)


def _register_template(api: RouteHost, template: Template) -> None:
    name = template.name

    def submit_template(params: Any, idempotency_key: str | None = None) -> Any:
        scope = api.scope
        submitted = api.deployments.run_template(
            api.caller,
            name,
            params,
            base_url=scope.base_url,
            idempotency_key=idempotency_key,
            lambda_context=scope.lambda_context,
        )
        return accepted(api, submitted)

    # The body's model differs per template; Powertools reads it from the annotations.
    submit_template.__annotations__ = {
        "params": Annotated[template.params, Body()],
        "idempotency_key": IdempotencyKey,
        "return": Response[TemplateJobAccepted],
    }
    submit_template.__name__ = submit_template.__qualname__ = f"submit_{name}"
    api.route(
        "POST",
        f"/v1/workflows/{name}",
        status_code=202,
        errors=SUBMIT_ERRORS,
        tags=["workflows"],
        summary=f"Submit {template.description}",
        operation_id=f"submit_{name}",
    )(submit_template)
