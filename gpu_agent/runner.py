"""One claimed job, end to end: sync models → rewrite → run on ComfyUI → upload → finish.

What is the workflow's fault (ComfyUI refused it, a node raised, a model URL was refused)
fails the job at once; what is the platform's (a download, ComfyUI gone, a drain) releases
it for another attempt, up to max_attempts (DESIGN §4).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from comfyfleet.clock import Clock
from comfyfleet.domain import Job, JobState, RingMessage
from comfyfleet.errors import ComfyFleetError
from comfyfleet.queues import JobQueues, Received
from comfyfleet.scheduling import Dispatcher
from comfyfleet.workflow import ModelRef, rewrite_workflow
from gpu_agent.cache import CacheError, ModelCache
from gpu_agent.comfy import ComfyClient, ComfyRejected, ComfyUnavailable, Preview, RunResult
from gpu_agent.lease import LeaseKeeper
from gpu_agent.metrics import AgentMetrics
from gpu_agent.outputs import OutputPublisher, PreviewPublisher, output_files
from gpu_agent.settings import AgentSettings
from gpu_agent.source_protocol import SourceError

logger = logging.getLogger(__name__)

CANCEL_CHECK_SECONDS = 1.0


class Ending(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RELEASED = "released"  # given back to the queue for another attempt
    HANDED_BACK = "handed_back"  # not run: this node lacks a class (comfyfleet.handback)


@dataclass
class StopSignal:
    """The agent's wish to stop: drain (finish, take no more) or stop now."""

    draining: threading.Event = field(default_factory=threading.Event)
    now: threading.Event = field(default_factory=threading.Event)
    drain_deadline: float = float("inf")


def with_job_prefixes(graph: dict[str, Any], job_id: str) -> dict[str, Any]:
    """Save each job's files under its own subfolder: no name clashes between tenants, easy
    clean-up, and an output node always runs (ComfyUI would serve an identical graph from
    cache, pointing at a previous job's files)."""
    rewritten = dict(graph)
    for node_id, node in graph.items():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if not isinstance(inputs, dict):
            continue
        prefix = inputs.get("filename_prefix")
        if isinstance(prefix, str):
            rewritten[node_id] = {
                **node,
                "inputs": {**inputs, "filename_prefix": f"{job_id}/{prefix or 'ComfyUI'}"},
            }
    return rewritten


class JobRunner:
    def __init__(
        self,
        settings: AgentSettings,
        dispatcher: Dispatcher,
        queues: JobQueues,
        comfy: ComfyClient,
        cache: ModelCache,
        outputs: OutputPublisher,
        s3: Any,
        node_id: str,
        clock: Clock,
        stop: StopSignal,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.dispatcher = dispatcher
        self.jobs = dispatcher.stores.jobs
        self.queues = queues
        self.comfy = comfy
        self.cache = cache
        self.outputs = outputs
        self.s3 = s3
        self.node_id = node_id
        self.clock = clock
        self.stop = stop
        self.metrics = metrics

    def run(self, job: Job, received: Received) -> Ending:
        """Run a claimed job to its end; raises ComfyUnavailable after releasing the job.

        Its lease is renewed throughout, from the model downloads to the finish."""
        with LeaseKeeper(
            self.jobs,
            self.queues,
            self.clock,
            job_id=job.job_id,
            node_id=self.node_id,
            received=received,
            lease_seconds=self.settings.lease_seconds,
            every=self.settings.lease_renewal_seconds,
        ):
            return self._run(job, received)

    def _run(self, job: Job, received: Received) -> Ending:
        message = received.message
        try:
            try:
                local = self.cache.ensure([ModelRef(**ref) for ref in job.models], pin=job.job_id)
            except SourceError as exc:
                if exc.permanent:
                    return self._fail(job, message, "model_download_failed", str(exc))
                logger.warning("model sync failed; releasing", extra={"job_id": job.job_id})
                return self._release(job)
            except CacheError as exc:
                logger.warning("model cache failed: %s", exc, extra={"job_id": job.job_id})
                return self._release(job)
            graph = rewrite_workflow(job.workflow, local, manifest=job.models)
            graph = with_job_prefixes(graph, job.job_id)
            watch = _Watch(self, job)
            try:
                result = self.comfy.run(job.job_id, graph, watch)
            except ComfyRejected as rejected:
                return self._fail(
                    job,
                    message,
                    "comfy_validation_error",
                    str(rejected),
                    details=rejected.body.get("node_errors") or rejected.body,
                )
            except ComfyUnavailable:
                self._release(job)
                raise
            return self._conclude(job, message, result, watch)
        finally:
            self.cache.release(job.job_id)
            if self.metrics is not None:  # after the run: nothing extra before /prompt
                self.metrics.cache(self.cache.report())

    def _conclude(self, job: Job, message: RingMessage, result: RunResult, watch: _Watch) -> Ending:
        if result.status == "interrupted":
            if watch.cancelled:
                self._finish(job, message, JobState.CANCELLED)
                return Ending.CANCELLED
            if watch.timed_out:
                return self._fail(
                    job,
                    message,
                    "timeout",
                    f"ran longer than {watch.timeout:.0f} s and was interrupted",
                )
            return self._release(job)  # interrupted for a drain
        if result.status == "error":
            error = result.error or {}
            return self._fail(
                job,
                message,
                "execution_error",
                str(error.get("exception_message") or "ComfyUI failed the workflow").strip(),
                node_id=error.get("node_id"),
                node_type=error.get("node_type"),
                details={"exception_type": error.get("exception_type")},
            )
        files = output_files(result.outputs, include_temp=self.settings.include_temp_outputs)
        try:
            outputs = self.outputs.publish(job.account_id, job.job_id, files)
        except Exception:
            logger.exception("output upload failed; releasing", extra={"job_id": job.job_id})
            return self._release(job)
        self._finish(job, message, JobState.COMPLETED, outputs=outputs)
        return Ending.COMPLETED

    def _fail(
        self,
        job: Job,
        message: RingMessage,
        code: str,
        text: str,
        *,
        node_id: str | None = None,
        node_type: str | None = None,
        details: Any = None,
    ) -> Ending:
        error: dict[str, Any] = {"code": code, "message": text}
        if node_id is not None:
            error["node_id"] = str(node_id)
        if node_type is not None:
            error["node_type"] = node_type
        if details is not None:
            error["details"] = details
        self._finish(job, message, JobState.FAILED, error=error)
        return Ending.FAILED

    def _finish(
        self,
        job: Job,
        message: RingMessage,
        state: JobState,
        *,
        outputs: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        try:
            done = self.dispatcher.finish(
                job, self.node_id, state, message.share, outputs=outputs, error=error
            )
        except ComfyFleetError:
            # The lease expired and another node took the job over: its result wins.
            logger.warning(
                "could not finish the job; another node holds it", extra={"job_id": job.job_id}
            )
            return
        if self.metrics is not None:
            self.metrics.ended(done)

    def _release(self, job: Job) -> Ending:
        try:
            self.jobs.release(job.job_id, self.node_id, now=self.clock.now())
        except ComfyFleetError:
            logger.warning("could not release the job", extra={"job_id": job.job_id})
        return Ending.RELEASED


class _Watch:
    """Follows a running prompt: progress, previews, cancel requests, timeout, drain."""

    def __init__(self, runner: JobRunner, job: Job) -> None:
        self.runner = runner
        self.job = job
        settings = runner.settings
        self.timeout = float(settings.tier(job.tier).job_timeout_seconds)
        self.started = time.monotonic()
        self.previews = PreviewPublisher(
            runner.s3, runner.outputs.bucket, job.job_id, interval=settings.preview_interval_seconds
        )
        self.cancelled = self.timed_out = self.interrupted = False
        self._progress: dict[str, Any] | None = None
        self._progress_dirty = False  # changed since written: an unchanged record is not rewritten
        self._progress_written = float("-inf")
        self._nodes_total = len(job.workflow)
        self._cancel_checked = float("-inf")

    def progress(self, value: float, maximum: float, node: str | None) -> None:
        percent = round(100 * value / maximum, 1) if maximum else 0.0
        self._update({"value": value, "max": maximum, "node": node, "percent": percent})

    def progress_state(self, nodes: dict[str, Any]) -> None:
        # How far the graph is: nodes finished of the workflow's nodes (cached ones included).
        done = sum(1 for state in nodes.values() if (state or {}).get("state") == "finished")
        self._update({"nodes_done": done, "nodes_total": self._nodes_total})

    def executing(self, node: str) -> None:
        self._update({"node": node})

    def _update(self, fields: dict[str, Any]) -> None:
        base = self._progress or {"value": 0, "max": 0, "node": None, "percent": 0.0}
        updated = {**base, **fields}
        if updated != self._progress:
            self._progress, self._progress_dirty = updated, True
        self._write_progress()

    def preview(self, preview: Preview) -> None:
        self.previews.offer(preview)

    def _write_progress(self) -> None:
        now = time.monotonic()
        due = now - self._progress_written >= self.runner.settings.progress_interval_seconds
        if self._progress is None or not self._progress_dirty or not due:
            return
        self._progress_written, self._progress_dirty = now, False
        try:
            self.runner.jobs.record_progress(self.job.job_id, self.runner.node_id, self._progress)
        except ComfyFleetError:
            logger.debug("progress not recorded", extra={"job_id": self.job.job_id})

    def tick(self) -> None:
        now = time.monotonic()
        runner = self.runner
        if now - self._cancel_checked >= CANCEL_CHECK_SECONDS:
            self._cancel_checked = now
            if runner.jobs.cancel_requested(self.job.job_id):
                self.cancelled = True
                self._interrupt("cancel requested")
        if now - self.started > self.timeout:
            self.timed_out = True
            self._interrupt("timeout")
        if runner.stop.now.is_set() or (
            runner.stop.draining.is_set() and runner.clock.now() > runner.stop.drain_deadline
        ):
            self._interrupt("agent stopping")
        self._write_progress()

    def _interrupt(self, reason: str) -> None:
        if self.interrupted:
            return
        self.interrupted = True
        logger.info("interrupting ComfyUI: %s", reason, extra={"job_id": self.job.job_id})
        self.runner.comfy.interrupt(self.job.job_id)
