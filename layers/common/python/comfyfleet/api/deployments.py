"""What the deployment routes do: create a version, read, list, delete, and run one — an
account's own or a built-in template — through the same admission as ``POST /v1/jobs``.
HTTP stays in comfyfleet.api.deployment_routes; this module speaks the domain."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from comfyfleet.api.context import Caller
from comfyfleet.api.deployment_models import (
    DeploymentCreate,
    DeploymentDeleted,
    DeploymentInfo,
    DeploymentJobAccepted,
    DeploymentList,
    DeploymentRun,
    DeploymentView,
)
from comfyfleet.api.errors import InvalidRequest, InvalidWorkflow
from comfyfleet.api.jobs import JobSpec, JobsService, Submitted, accepted_body
from comfyfleet.api.models import JobAccepted, TemplateJobAccepted, iso
from comfyfleet.catalogue import NodeCatalogue, core_catalogue
from comfyfleet.clock import Clock
from comfyfleet.deployments import (
    Deployment,
    DeploymentInput,
    declaration_problems,
    input_schema,
    is_deployment_name,
    place,
    run_problems,
)
from comfyfleet.deployments.builtin import BUILTINS, BuiltinDeployment
from comfyfleet.errors import DeploymentNotFound
from comfyfleet.scheduling import Admission
from comfyfleet.store import Stores
from comfyfleet.templates import InvalidTemplateParams, TemplateParams


class DeploymentsService:
    def __init__(self, *, stores: Stores, jobs: JobsService, clock: Clock) -> None:
        self.stores = stores
        self.jobs = jobs
        self.clock = clock

    # -- versions ---------------------------------------------------------------------------

    def create(self, caller: Caller, request: DeploymentCreate) -> DeploymentView:
        """Check the workflow and every declaration now, then store the next version."""
        if request.name in BUILTINS:
            raise InvalidRequest(
                f"{request.name!r} is the name of a built-in deployment",
                [{"field": "body.name", "message": "is taken by a built-in deployment"}],
            )
        if request.output is not None:
            raise InvalidRequest(
                "output formats are not available yet",
                [{"field": "body.output", "message": "is not supported yet; leave it out"}],
            )
        workflow = request.workflow
        if not isinstance(workflow, dict) or isinstance(workflow.get("nodes"), list):
            self.jobs.validate(workflow, request.models)  # refuses it, saying why
        inputs = {
            name: DeploymentInput.from_dict(name, declared.model_dump(exclude_unset=True))
            for name, declared in request.inputs.items()
        }
        problems = declaration_problems(workflow, inputs, self._catalogue())
        if problems:
            raise InvalidRequest("the inputs do not fit the workflow", problems)
        # The workflow as a run without values would send it: values still to come are not
        # held against it, and a default that ComfyUI would refuse is named as the default.
        required = {spec.target for spec in inputs.values() if not spec.has_default}
        with _errors_by_input(inputs, at="default"):
            self.jobs.validate(place(workflow, inputs, {}), request.models, ignore=required)
        draft = Deployment(
            account_id=caller.account_id,
            name=request.name,
            version=0,
            workflow=workflow,
            inputs=inputs,
            created_at=self.clock.now(),
            models=request.models,
            description=request.description,
        )
        return _stored_view(self.stores.deployments.create(draft))

    def _catalogue(self) -> NodeCatalogue:
        fleet = self.jobs.catalogue.fleet()
        return fleet.union if fleet is not None else core_catalogue()

    def view(self, caller: Caller, name: str, version: int | None = None) -> DeploymentView:
        builtin = BUILTINS.get(name)
        if builtin is not None:
            if version not in (None, builtin.version):
                raise DeploymentNotFound(name, version)
            return _builtin_view(builtin)
        return _stored_view(self._stored(caller, name, version))

    def _stored(self, caller: Caller, name: str, version: int | None) -> Deployment:
        if not is_deployment_name(name):
            raise DeploymentNotFound(name[:64])
        return self.stores.deployments.get(caller.account_id, name, version)

    def list_deployments(self, caller: Caller, *, limit: int, cursor: str | None) -> DeploymentList:
        page = self.stores.deployments.list_for_account(
            caller.account_id, limit=limit, cursor=cursor
        )
        listed = [] if cursor is not None else [_builtin_info(b) for b in BUILTINS.values()]
        listed += [
            DeploymentInfo(
                name=summary.name,
                version=summary.version,
                builtin=False,
                description=summary.description,
                created_at=iso(summary.created_at),
                updated_at=iso(summary.updated_at),
            )
            for summary in page.deployments
        ]
        return DeploymentList(deployments=listed, next_cursor=page.cursor)

    def delete(self, caller: Caller, name: str) -> DeploymentDeleted:
        if name in BUILTINS:
            raise InvalidRequest(f"built-in deployment {name!r} cannot be deleted")
        if not is_deployment_name(name):
            raise DeploymentNotFound(name[:64])
        versions = self.stores.deployments.delete(caller.account_id, name)
        return DeploymentDeleted(name=name, versions=versions)

    # -- runs ---------------------------------------------------------------------------------

    def run(
        self,
        caller: Caller,
        name: str,
        request: DeploymentRun,
        *,
        base_url: str,
        idempotency_key: str | None = None,
        lambda_context: Any = None,
    ) -> Submitted:
        """Check the values, place them into the graph and submit it as POST /v1/jobs does."""

        def admit() -> tuple[Admission, JobAccepted]:
            admission, ref, seed = self._admit_run(caller, name, request)
            base = accepted_body(admission, base_url).model_dump()
            return admission, DeploymentJobAccepted(**base, deployment=ref, seed=seed)

        return self.jobs.submit_once(
            caller,
            DeploymentJobAccepted,
            admit,
            path=f"/v1/deployments/{name}/jobs",
            body=request.model_dump(mode="json", exclude_none=True),
            idempotency_key=idempotency_key,
            lambda_context=lambda_context,
        )

    def _admit_run(
        self, caller: Caller, name: str, request: DeploymentRun
    ) -> tuple[Admission, dict[str, Any], int | None]:
        hook, metadata = request.webhook_url, request.metadata
        builtin = BUILTINS.get(name)
        if builtin is not None:
            if request.version not in (None, builtin.version):
                raise DeploymentNotFound(name, request.version)
            try:
                rendered = builtin.render(request.inputs)
            except InvalidTemplateParams as wrong:
                raise InvalidRequest(
                    f"the inputs do not fit deployment {name!r}",
                    [{**e, "field": f"body.inputs.{e['field']}"} for e in wrong.errors],
                ) from None
            ref = _ref(builtin.name, builtin.version)
            spec = JobSpec(rendered.graph, None, hook, metadata, deployment=ref)
            return self.jobs.admit(caller, spec), ref, rendered.seed
        deployment = self._stored(caller, name, request.version)
        problems = run_problems(deployment.inputs, request.inputs)
        if problems:
            raise InvalidRequest(f"the inputs do not fit deployment {name!r}", problems)
        ref = _ref(deployment.name, deployment.version)
        graph = place(deployment.workflow, deployment.inputs, request.inputs)
        with _errors_by_input(deployment.inputs):
            admission = self.jobs.admit(
                caller, JobSpec(graph, deployment.models, hook, metadata, deployment=ref)
            )
        return admission, ref, None

    def run_template(
        self,
        caller: Caller,
        name: str,
        params: TemplateParams,
        *,
        base_url: str,
        idempotency_key: str | None = None,
        lambda_context: Any = None,
    ) -> Submitted:
        """POST /v1/workflows/{name}: a built-in run with its parameters as the body."""
        builtin = BUILTINS[name]

        def admit() -> tuple[Admission, JobAccepted]:
            rendered = builtin.render(params)
            ref = _ref(builtin.name, builtin.version)
            admission = self.jobs.admit(caller, JobSpec(rendered.graph, deployment=ref))
            base = accepted_body(admission, base_url).model_dump()
            return admission, TemplateJobAccepted(**base, seed=rendered.seed)

        return self.jobs.submit_once(
            caller,
            TemplateJobAccepted,
            admit,
            path=f"/v1/workflows/{name}",
            body=params.model_dump(mode="json", exclude_unset=True),
            idempotency_key=idempotency_key,
            lambda_context=lambda_context,
        )


def _ref(name: str, version: int) -> dict[str, Any]:
    return {"name": name, "version": version}


@contextmanager
def _errors_by_input(
    inputs: Mapping[str, DeploymentInput], *, at: str | None = None
) -> Iterator[None]:
    """Workflow errors at an input's target become that input's field errors: a caller of a
    deployment names inputs, not node ids. Errors elsewhere keep invalid_workflow, with the
    input named on those that hit one."""
    try:
        yield
    except InvalidWorkflow as refused:
        raise _by_input(refused, inputs, ("." + at) if at else "") from None


def _by_input(
    refused: InvalidWorkflow, inputs: Mapping[str, DeploymentInput], suffix: str
) -> InvalidRequest | InvalidWorkflow:
    by_target = {spec.target: name for name, spec in inputs.items()}
    details = [dict(detail) for detail in refused.details or []]
    for detail in details:
        name = by_target.get((detail.get("node_id") or "", detail.get("input") or ""))
        if name is not None:
            detail["field"] = f"body.inputs.{name}{suffix}"
    if not details or not all("field" in detail for detail in details):
        return InvalidWorkflow(refused.message, details)
    fields = [{"field": d["field"], "code": d["code"], "message": d["message"]} for d in details]
    return InvalidRequest("the inputs do not fit the workflow", fields)


def _builtin_info(builtin: BuiltinDeployment) -> DeploymentInfo:
    return DeploymentInfo(
        name=builtin.name, version=builtin.version, builtin=True, description=builtin.description
    )


def _builtin_view(builtin: BuiltinDeployment) -> DeploymentView:
    return DeploymentView(
        name=builtin.name,
        version=builtin.version,
        builtin=True,
        description=builtin.description,
        input_schema=builtin.input_schema(),
    )


def _stored_view(deployment: Deployment) -> DeploymentView:
    return DeploymentView(
        name=deployment.name,
        version=deployment.version,
        builtin=False,
        description=deployment.description,
        created_at=iso(deployment.created_at),
        input_schema=input_schema(deployment.inputs),
        inputs=deployment.inputs_dict(),
        workflow=deployment.workflow,
        models=deployment.models,
    )
