"""What the job routes do: submit (with validation and idempotency), read, list, cancel,
preview, usage. HTTP stays in comfyfleet.api.routes; this module speaks the domain."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from comfyfleet.api.context import Caller
from comfyfleet.api.errors import (
    InvalidWorkflow,
    NotCancellable,
    PayloadTooLarge,
    ResourceNotFound,
)
from comfyfleet.api.idempotency import IdempotentSubmits
from comfyfleet.api.inputs import (
    check_idempotency_key,
    check_metadata,
    check_webhook_url,
    is_job_id,
)
from comfyfleet.api.models import (
    JobAccepted,
    JobList,
    JobSubmission,
    JobView,
    PreviewLink,
    Usage,
    UsageCounts,
    UsageLimits,
    WebhookReplayed,
    iso,
)
from comfyfleet.api.node_classes import NodeClasses
from comfyfleet.api.objects import PREVIEW_LINK_SECONDS, ObjectStore, latest_preview
from comfyfleet.api.views import job_links, job_view
from comfyfleet.catalogues import workflow_classes
from comfyfleet.clock import Clock
from comfyfleet.domain import Counters, Job, JobState
from comfyfleet.errors import JobNotFound, JobStateConflict
from comfyfleet.events import job_event
from comfyfleet.scheduling import Admission, Dispatcher, JobRequest, job_of_account
from comfyfleet.settings import Settings
from comfyfleet.store import Stores
from comfyfleet.workflow import ErrorCode, WorkflowError, validate_workflow
from comfyfleet.workflow.validate import ValidationResult


@dataclass(frozen=True)
class JobSpec:
    """What a job is made of, however it was asked for (a workflow, a deployment)."""

    graph: Any
    manifest: Any = None
    webhook_url: str | None = None
    metadata: dict[str, Any] | None = None
    deployment: dict[str, Any] | None = None  # {"name", "version"} it is run from


@dataclass(frozen=True)
class Submitted:
    accepted: JobAccepted
    counters: Counters | None  # the account's after admission; None on a replay
    replayed: bool


class JobsService:
    def __init__(
        self,
        *,
        settings: Settings,
        stores: Stores,
        dispatcher: Dispatcher,
        catalogue: NodeClasses,
        objects: ObjectStore,
        idempotency: IdempotentSubmits,
        clock: Clock,
    ) -> None:
        self.settings = settings
        self.stores = stores
        self.dispatcher = dispatcher
        self.catalogue = catalogue
        self.objects = objects
        self.idempotency = idempotency
        self.clock = clock

    # -- submit -----------------------------------------------------------------------------

    def submit(
        self,
        caller: Caller,
        submission: JobSubmission,
        *,
        base_url: str,
        idempotency_key: str | None = None,
        lambda_context: Any = None,
    ) -> Submitted:
        """Validate a workflow and admit it: 202's body, or an ApiError/LimitExceeded."""

        def admit() -> tuple[Admission, JobAccepted]:
            spec = JobSpec(
                graph=submission.prompt,
                manifest=submission.models,
                webhook_url=submission.webhook_url,
                metadata=submission.metadata,
            )
            admission = self.admit(caller, spec)
            return admission, accepted_body(admission, base_url)

        return self.submit_once(
            caller,
            JobAccepted,
            admit,
            path="/v1/jobs",
            body=submission.model_dump(mode="json", exclude_none=True),
            idempotency_key=idempotency_key,
            lambda_context=lambda_context,
        )

    def submit_once(
        self,
        caller: Caller,
        answer: type[JobAccepted],
        admit: Callable[[], tuple[Admission, JobAccepted]],
        *,
        path: str,
        body: dict[str, Any],
        idempotency_key: str | None,
        lambda_context: Any,
    ) -> Submitted:
        """Run a submit's ``admit`` once per Idempotency-Key; a replay answers as the first
        did (read back as ``answer``), with no counters of its own."""
        admitted: list[Counters] = []

        def run() -> dict[str, Any]:
            admission, accepted = admit()
            admitted.append(admission.counters)
            return accepted.model_dump(mode="json", by_alias=True)

        data, replayed = self.once(caller, idempotency_key, path, body, run, lambda_context)
        return Submitted(answer.model_validate(data), admitted[-1] if admitted else None, replayed)

    def admit(self, caller: Caller, spec: JobSpec) -> Admission:
        """Check a job's fields and workflow and admit it (comfyfleet.scheduling)."""
        check_metadata(spec.metadata)
        if spec.webhook_url is not None:
            check_webhook_url(spec.webhook_url, allow_local=self.settings.allow_local_urls)
        result, environments = self.validate(spec.graph, spec.manifest)
        request = JobRequest(
            workflow=spec.graph,
            models=[ref.to_dict() for ref in result.models],
            webhook_url=spec.webhook_url,
            metadata=spec.metadata,
            environments=environments,
            deployment=spec.deployment,
        )
        return self.dispatcher.submit(caller.account_id, caller.tier, caller.limits, request)

    def validate(
        self, graph: Any, manifest: Any, *, ignore: Collection[tuple[str, str]] = ()
    ) -> tuple[ValidationResult, list[str] | None]:
        """The workflow checked against the catalogues of the environments in service, and
        those of them that have all its classes when not all do (None: any node).

        Errors at the (node id, input) of ``ignore`` are not held against it (a deployment's
        inputs whose values come with each run)."""
        fleet = self.catalogue.fleet()
        result = validate_workflow(
            graph,
            settings=self.settings,
            catalogue=fleet.union if fleet is not None else None,
            manifest=manifest,
        )
        errors = [e for e in result.errors if (e.node_id or "", e.input or "") not in ignore]
        if not errors and fleet is not None:
            _refuse(fleet.placement_errors(graph))
            environments = fleet.environments_for(list(workflow_classes(graph)))
            return result, sorted(environments) if environments is not None else None
        if any(error.code is ErrorCode.TOO_LARGE for error in errors):
            raise PayloadTooLarge(errors[0].message, [e.to_dict() for e in errors])
        _refuse(errors)
        return result, None

    def once(
        self,
        caller: Caller,
        key: str | None,
        path: str,
        body: dict[str, Any],
        admit: Callable[[], dict[str, Any]],
        lambda_context: Any,
    ) -> tuple[dict[str, Any], bool]:
        """Run ``admit`` — once per Idempotency-Key when one is given; (its answer, replayed)."""
        if key is None:
            return admit(), False
        check_idempotency_key(key)
        data, ran = self.idempotency.run(
            account_id=caller.account_id,
            key=key,
            request={"path": path, "body": body},
            submit=admit,
            lambda_context=lambda_context,
        )
        return data, not ran

    # -- reads --------------------------------------------------------------------------------

    def job(self, caller: Caller, job_id: str) -> Job:
        """The caller's job; another account's (or a malformed id) is not found."""
        if not is_job_id(job_id):
            raise JobNotFound(job_id[:64])
        return job_of_account(self.stores, job_id, caller.account_id)

    def view(self, caller: Caller, job_id: str, *, base_url: str) -> JobView:
        job = self.job(caller, job_id)
        return job_view(job, base_url, self._positions(caller, [job]).get(job.job_id))

    def list_jobs(
        self,
        caller: Caller,
        *,
        state: JobState | None,
        limit: int,
        cursor: str | None,
        base_url: str,
    ) -> JobList:
        page = self.stores.jobs.list_for_account(
            caller.account_id, state=state, limit=limit, cursor=cursor
        )
        positions = self._positions(caller, page.jobs)
        return JobList(
            jobs=[job_view(job, base_url, positions.get(job.job_id)) for job in page.jobs],
            next_cursor=page.cursor,
        )

    def _positions(self, caller: Caller, jobs: list[Job]) -> dict[str, int]:
        """Queue positions of queued jobs: 1 + the account's queued jobs ahead of each.

        Jobs holding a ring slot are ahead of the backlog, in an order SQS decides; each
        reports the ring's size (an upper bound). A backlog job's place is exact.
        """
        queued = [job for job in jobs if job.state is JobState.QUEUED]
        if not queued:
            return {}
        counters = self.dispatcher.counters.get(caller.account_id, self.clock.now())
        order: dict[str, int] = {}
        if any(not job.in_ring for job in queued):
            backlog = self.stores.jobs.backlog(caller.account_id, limit=caller.limits.queue_depth)
            order = {entry.job_id: index for index, entry in enumerate(backlog)}
        return {
            job.job_id: (
                max(1, counters.ring)
                if job.in_ring
                else counters.ring + order.get(job.job_id, len(order)) + 1
            )
            for job in queued
        }

    # -- changes ------------------------------------------------------------------------------

    def cancel(self, caller: Caller, job_id: str, *, base_url: str) -> JobView:
        """Cancel a queued job now, a running one by request; 409 once it has ended."""
        job = self.job(caller, job_id)
        try:
            cancelled = self.dispatcher.cancel(job.job_id, caller.limits.share)
        except JobStateConflict as conflict:
            state = conflict.state or job.state
            raise NotCancellable(f"job {job.job_id} is {state} and cannot be cancelled") from None
        return job_view(cancelled, base_url)

    def replay_webhook(self, caller: Caller, job_id: str) -> WebhookReplayed:
        """Publish the ended job's event again, with its first id (receivers deduplicate on
        it); its delivery starts over. 409 while the job has not ended."""
        job = self.job(caller, job_id)
        if not job.state.terminal:
            raise JobStateConflict(job.job_id, job.state, "only an ended job's event is replayed")
        delivery = dict(job.webhook or {})
        replays = delivery.get("replays")
        delivery.update(state="pending", replays=(replays if isinstance(replays, int) else 0) + 1)
        self.stores.jobs.record_delivery(job.job_id, delivery)
        self.dispatcher.events.publish(job)
        event = job_event(job)
        return WebhookReplayed(job_id=job.job_id, event_id=event["id"], type=event["type"])

    def preview(self, caller: Caller, job_id: str, *, missing_ok: bool = False) -> PreviewLink:
        """A short-lived link to the job's latest preview frame; while there is none, 404
        (or, ``missing_ok``, a link of null: a page polling for frames)."""
        job = self.job(caller, job_id)
        bucket = self.settings.output_bucket_name
        latest = latest_preview(self.objects, bucket, job.job_id)
        if latest is None:
            if missing_ok:
                return PreviewLink(url=None, expires_in_seconds=0)
            raise ResourceNotFound(f"job {job.job_id} has no preview (yet)")
        url = self.objects.presign_get(bucket, latest.key, seconds=PREVIEW_LINK_SECONDS)
        return PreviewLink(url=url, expires_in_seconds=PREVIEW_LINK_SECONDS)

    def counters(self, caller: Caller) -> Counters:
        """The caller's usage, read at most once a second per account and process."""
        return self.dispatcher.counters.get(caller.account_id, self.clock.now())

    def usage(self, caller: Caller) -> tuple[Usage, Counters]:
        counters = self.counters(caller)
        usage = Usage(
            account_id=caller.account_id,
            tier=caller.tier,
            limits=UsageLimits(
                requests_per_minute=caller.limits.requests_per_minute,
                concurrency=caller.limits.concurrency,
                queue_depth=caller.limits.queue_depth,
            ),
            current=UsageCounts(
                requests_this_minute=counters.window_requests,
                window_resets_at=iso(counters.window_reset) or "",
                running=counters.running,
                queued=counters.waiting,
            ),
        )
        return usage, counters


def accepted_body(admission: Admission, base_url: str) -> JobAccepted:
    job = admission.job
    return JobAccepted(
        job_id=job.job_id,
        queue_position=admission.queue_position,
        estimated_wait_seconds=admission.estimated_wait_seconds,
        created_at=iso(job.created_at) or "",
        links=job_links(base_url, job.job_id),
    )


def _refuse(errors: list[WorkflowError]) -> None:
    """400 invalid_workflow listing ``errors``, if there are any."""
    if errors:
        details = [error.to_dict() for error in errors]
        plural = "s" if len(details) != 1 else ""
        raise InvalidWorkflow(f"the workflow has {len(details)} error{plural}", details)
