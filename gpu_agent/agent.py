"""The agent's life: start beside ComfyUI, then receive → claim → run → delete, one job at a
time, with a heartbeat, until told to stop.

First SIGTERM (or a spot interruption notice): take no more jobs, let the current one
finish within the drain grace, then interrupt and release it. Second SIGTERM: interrupt
and release now. ComfyUI not answering: release the job, mark the node unhealthy, take
nothing until it answers again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from comfyfleet.catalogue import NodeCatalogue
from comfyfleet.catalogues import workflow_classes
from comfyfleet.clock import Clock
from comfyfleet.domain import CORE_ENVIRONMENT, Job, NodeInfo, NodeStatus
from comfyfleet.environment import read_lock
from comfyfleet.environment.loaded import unloaded_custom_nodes
from comfyfleet.errors import ComfyFleetError
from comfyfleet.handback import hand_back
from comfyfleet.queues import JobQueues, Received
from comfyfleet.resources import CATALOGUE_KEY, catalogue_key
from comfyfleet.scheduling import Dispatcher
from comfyfleet.store.ports import ClaimOutcome
from gpu_agent.cache import ModelCache
from gpu_agent.comfy import ComfyClient, ComfyUnavailable
from gpu_agent.identity import environment_id
from gpu_agent.metrics import AgentMetrics
from gpu_agent.runner import Ending, JobRunner, StopSignal
from gpu_agent.scale_in import ScaleInProtection
from gpu_agent.settings import AgentSettings

logger = logging.getLogger(__name__)

DEFERRAL_SECONDS = 5  # a message whose account runs all it may is looked at again after this
MAX_VISIBILITY = 12 * 3600  # SQS's limit
EWMA_WEIGHT = 0.3
_BACKOFF_CAP_SECONDS = 30.0
# EC2 gives a spot instance two minutes: leave time to interrupt and release after the grace.
SPOT_GRACE_SECONDS = 90


class Agent:
    def __init__(
        self,
        settings: AgentSettings,
        *,
        node_id: str,
        node_queue_url: str,
        dispatcher: Dispatcher,
        queues: JobQueues,
        comfy: ComfyClient,
        cache: ModelCache,
        runner: JobRunner,
        s3: Any,
        clock: Clock,
        stop: StopSignal,
        spot_notice: Callable[[], bool] | None = None,
        metrics: AgentMetrics | None = None,
        protection: ScaleInProtection | None = None,
    ) -> None:
        self.settings = settings
        self.node_id = node_id
        self.node_queue_url = node_queue_url
        self.dispatcher = dispatcher
        self.registry = dispatcher.stores.nodes
        self.queues = queues
        self.comfy = comfy
        self.cache = cache
        self.runner = runner
        self.s3 = s3
        self.clock = clock
        self.stop = stop
        self.spot_notice = spot_notice
        self.metrics = metrics
        self.protection = protection
        self.status = NodeStatus.IDLE
        self.current_job: str | None = None
        self.current_started: float | None = None
        self.ewma_run_seconds: float | None = None
        self.jobs_done = 0
        self.environment_id = CORE_ENVIRONMENT  # read from the lock file at start
        self.classes: frozenset[str] = frozenset()  # its ComfyUI's node classes
        self._heartbeat_stop = threading.Event()
        self._report_lock = threading.Lock()
        self.held = threading.Event()  # drained from outside: take no jobs, keep beating
        self._wake = threading.Event()  # report now (a status change), not at the next beat
        self._heartbeat: threading.Thread | None = None

    # -- start and stop ---------------------------------------------------------------------

    def start(self) -> None:
        """Wait for ComfyUI, publish its node catalogue, register, start the heartbeat.

        A SIGTERM while ComfyUI is still loading ends the wait (ComfyUnavailable).
        """
        self.environment_id = environment_id(self.settings.comfy_root)
        stats = self.comfy.wait_ready(
            self.settings.comfy_start_timeout_seconds, stop=self.stop.draining
        )
        if self.protection is not None:
            self.protection.reset()
        object_info = self.comfy.object_info()
        self._warn_unloaded(object_info)
        self._publish_catalogue(object_info)
        devices = stats.get("devices") or [{}]
        report = self.cache.report()
        self.registry.register(
            NodeInfo(
                node_id=self.node_id,
                status=NodeStatus.IDLE,
                heartbeat_at=self.clock.now(),
                queue_url=self.node_queue_url,
                cached=dict(report.sizes),
                free_bytes=report.free_bytes,
                gpu=str(devices[0].get("name", "")),
                environment_id=self.environment_id,
            )
        )
        self._heartbeat = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self._heartbeat.start()
        if self.metrics is not None:
            self.metrics.sink.start()
        logger.info(
            "agent started", extra={"node_id": self.node_id, "environment": self.environment_id}
        )

    def _warn_unloaded(self, object_info: bytes) -> None:
        """Say which of the lock's custom nodes ComfyUI did not load (an import error in its
        log, or a server started before node setup): jobs needing them are handed back."""
        lock = read_lock(self.settings.comfy_root)
        if lock is None or not lock.custom_nodes:
            return
        missing = unloaded_custom_nodes(lock, json.loads(object_info))
        if missing:
            logger.error(
                "custom nodes of the lock have no class in ComfyUI: see ComfyUI's log for an "
                "import error, or restart it if it started before node setup",
                extra={"environment": self.environment_id, "custom_nodes": missing},
            )

    def _publish_catalogue(self, object_info: bytes) -> None:
        """Publish ComfyUI's classes as its environment's catalogue, before registering (the
        API finds an environment in service only through its nodes), and as the fleet-wide
        one the API falls back on while no node is in service."""
        self.classes = frozenset(NodeCatalogue.from_json(object_info))
        for key in (catalogue_key(self.environment_id), CATALOGUE_KEY):
            self.s3.put_object(
                Bucket=self.settings.model_bucket_name,
                Key=key,
                Body=object_info,
                ContentType="application/json",
            )

    def request_stop(self, grace_seconds: float | None = None) -> None:
        """First call: drain (finish the current job within the grace, take no more);
        second: stop now (interrupt and release it).

        Safe in a signal handler: it only sets flags; the heartbeat thread reports.
        """
        if self.stop.draining.is_set():
            self.stop.now.set()
            return
        grace = self.settings.drain_grace_seconds if grace_seconds is None else grace_seconds
        self.stop.drain_deadline = self.clock.now() + grace
        self.stop.draining.set()
        self.status = NodeStatus.DRAINING
        self._wake.set()

    def shutdown(self) -> None:
        """Mark the node offline and hand the jobs waiting in its queue to the shared one."""
        self._heartbeat_stop.set()
        self._wake.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=10)
        try:
            self.registry.set_status(self.node_id, NodeStatus.OFFLINE)
        except ComfyFleetError:
            logger.warning("could not mark the node offline", exc_info=True)
        self._hand_off_queue()
        if self.metrics is not None:
            self.metrics.sink.close()

    def _hand_off_queue(self) -> None:
        """Jobs routed to this node's queue would wait for it: give them to the fleet."""
        try:
            moved = self.dispatcher.drain_node_queue(self.node_id, self.node_queue_url)
        except ComfyFleetError:
            logger.warning("could not hand off the node queue", exc_info=True)
            return
        if moved:
            logger.info("node queue handed to the shared queue", extra={"jobs": moved})

    # -- the loop ---------------------------------------------------------------------------

    def run_forever(self, *, max_jobs: int | None = None) -> None:
        """Work until drained or stopped (or ``max_jobs`` jobs, for tests)."""
        backoff = 1.0
        while not self.stop.draining.is_set():
            if max_jobs is not None and self.jobs_done >= max_jobs:
                return
            try:
                if self.held.is_set():
                    self.stop.draining.wait(self.settings.heartbeat_seconds)
                    continue
                if self.status is NodeStatus.UNHEALTHY:
                    self._wait_for_comfy()
                    continue
                received = self._receive()
                if received is not None and (self.stop.draining.is_set() or self.held.is_set()):
                    # The drain began during the long poll: this one is not ours to run.
                    self.queues.change_visibility(received, 0)
                elif received is not None:
                    self.handle(received)
                backoff = 1.0
            except ComfyUnavailable:
                logger.error("ComfyUI does not answer; the node takes no jobs")
                self.status = NodeStatus.UNHEALTHY
                self._report()
                self._hand_off_queue()
            except ComfyFleetError:
                logger.exception("AWS call failed; backing off %.0f s", backoff)
                self.stop.draining.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_CAP_SECONDS)
            except Exception:
                # A bug met by one job must not end the loop: its message comes back when
                # its visibility runs out, its lease lets another node take it over.
                logger.exception("unexpected error; backing off %.0f s", backoff)
                self.stop.draining.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_CAP_SECONDS)

    def _receive(self) -> Received | None:
        """Own queue first (its jobs' models are here), then the shared queue. Fair because
        the router sends a job to a node's queue only for the download it saves, never to
        jump the jobs waiting in the shared queue (comfyfleet.router)."""
        visibility = self.settings.lease_seconds
        received = self.queues.receive(
            self.node_queue_url, wait_seconds=0, visibility_seconds=visibility
        )
        if received is None:
            received = self.queues.receive(
                self.dispatcher.shared_url,
                wait_seconds=self.settings.receive_wait_seconds,
                visibility_seconds=visibility,
            )
        return received

    def handle(self, received: Received) -> Ending | None:
        """Claim the message's job and run it; every message ends deleted or deferred."""
        claim = self.dispatcher.claim(received.message, self.node_id)
        if claim.outcome is ClaimOutcome.DEFERRED:
            self.queues.change_visibility(received, DEFERRAL_SECONDS)
            return None
        if claim.outcome is ClaimOutcome.DUPLICATE:
            # Running elsewhere: if its node died, this copy must come back to take it over.
            remaining = (claim.lease_until or 0) - self.clock.now()
            self.queues.change_visibility(received, min(MAX_VISIBILITY, max(1, int(remaining) + 1)))
            return None
        if claim.outcome is not ClaimOutcome.CLAIMED or claim.job is None:
            if claim.outcome is ClaimOutcome.EXHAUSTED and claim.job and self.metrics:
                self.metrics.ended(claim.job)
            self.queues.delete(received)  # a cancelled or ended job, or out of attempts
            return None
        job = claim.job
        missing = self._missing_classes(job)
        if missing:
            return self._hand_back(received, job, missing)
        if self.metrics is not None:
            self.metrics.claimed(job)
        if self.status is not NodeStatus.DRAINING:
            self.status = NodeStatus.BUSY
        self.current_job, self.current_started = job.job_id, time.monotonic()
        self._wake.set()  # the heartbeat thread reports it: no round trip before the run
        try:
            with self._protected():
                ending = self.runner.run(job, received)
        except ComfyUnavailable:
            self.queues.change_visibility(received, 0)  # released: let another node have it
            raise
        finally:
            elapsed = time.monotonic() - (self.current_started or time.monotonic())
            self.current_job = self.current_started = None
            if self.status is NodeStatus.BUSY:
                self.status = NodeStatus.IDLE
            self._wake.set()  # free again: routing should know now, not at the next beat
        if ending is Ending.RELEASED:
            self.queues.change_visibility(received, 0)
        else:
            self.queues.delete(received)
            self._record_run(elapsed)
        self.jobs_done += 1
        return ending

    def _protected(self) -> contextlib.AbstractContextManager[None]:
        """Scale-in protection for the run, where the instance is in a group."""
        if self.protection is None:
            return contextlib.nullcontext()
        return self.protection.running()

    def _missing_classes(self, job: Job) -> dict[str, list[str]]:
        """The job's node classes this node's ComfyUI lacks, each with its nodes' ids (none
        while its catalogue is unknown: ComfyUI's own validation then decides)."""
        if not self.classes:
            return {}
        used = workflow_classes(job.workflow)
        return {name: ids for name, ids in used.items() if name not in self.classes}

    def _hand_back(self, received: Received, job: Job, missing: dict[str, list[str]]) -> Ending:
        """Never fail a job for a class this node lacks: another node may have it."""
        after = hand_back(
            self.dispatcher,
            received,
            job,
            node_id=self.node_id,
            environment_id=self.environment_id,
            missing=missing,
        )
        if not after.state.terminal:
            return Ending.HANDED_BACK
        if self.metrics is not None:
            self.metrics.ended(after)
        return Ending.FAILED

    def _record_run(self, seconds: float) -> None:
        previous = self.ewma_run_seconds
        self.ewma_run_seconds = (
            seconds if previous is None else (EWMA_WEIGHT * seconds + (1 - EWMA_WEIGHT) * previous)
        )

    def _wait_for_comfy(self) -> None:
        while not self.stop.draining.is_set():
            try:
                self.comfy.system_stats()
            except ComfyUnavailable:
                self.stop.draining.wait(self.settings.heartbeat_seconds)
                continue
            logger.info("ComfyUI answers again")
            self.status = NodeStatus.IDLE
            self._report()
            return

    # -- heartbeat --------------------------------------------------------------------------

    def _beat(self) -> None:
        while not self._heartbeat_stop.is_set():
            self._wake.wait(self.settings.heartbeat_seconds)
            self._wake.clear()
            if self._heartbeat_stop.is_set():
                return
            self._report()
            if self.spot_notice is not None and not self.stop.draining.is_set():
                try:
                    noticed = self.spot_notice()
                except Exception:  # IMDS hiccups: look again at the next beat
                    logger.debug("spot notice check failed", exc_info=True)
                    continue
                if noticed:
                    logger.warning("spot interruption notice: draining")
                    self.request_stop(min(self.settings.drain_grace_seconds, SPOT_GRACE_SECONDS))

    def _report(self) -> None:
        # One report at a time, each reading the state when it writes: the heartbeat thread's
        # "busy" must not land after the loop's "idle" and stand until the next beat.
        with self._report_lock:
            report = self.cache.report()
            started = None
            if self.current_started is not None:
                started = self.clock.now() - (time.monotonic() - self.current_started)
            try:
                recorded = self.registry.heartbeat(
                    self.node_id,
                    now=self.clock.now(),
                    status=self.status,
                    cached=dict(report.sizes),
                    free_bytes=report.free_bytes,
                    current_job=self.current_job,
                    current_started_at=started,
                    ewma_run_seconds=self.ewma_run_seconds,
                    bandwidth_bytes_per_second=report.bandwidth,
                )
            except ComfyFleetError:
                logger.warning("heartbeat failed", exc_info=True)
                return
            if recorded is NodeStatus.DRAINING and not self.held.is_set():
                # Drained by an operator or the lifecycle hook: finish the current job, take
                # no more, stay up (the node is about to be removed or terminated).
                logger.warning("the node was drained: taking no more jobs")
                self.held.set()
                self.status = NodeStatus.DRAINING
