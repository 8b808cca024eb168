"""The agent's life: start beside ComfyUI, then receive → claim → run → delete, one job at a
time, with a heartbeat, until told to stop.

First SIGTERM (or a spot interruption notice): take no more jobs, let the current one
finish within the drain grace, then interrupt and release it. Second SIGTERM: interrupt
and release now. ComfyUI not answering: release the job, mark the node unhealthy, take
nothing until it answers again.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from comfyfleet.clock import Clock
from comfyfleet.domain import NodeInfo, NodeStatus
from comfyfleet.errors import ComfyFleetError
from comfyfleet.queues import JobQueues, Received
from comfyfleet.resources import CATALOGUE_KEY
from comfyfleet.scheduling import Dispatcher
from comfyfleet.store.ports import ClaimOutcome
from gpu_agent.cache import ModelCache
from gpu_agent.comfy import ComfyClient, ComfyUnavailable
from gpu_agent.runner import Ending, JobRunner, StopSignal
from gpu_agent.settings import AgentSettings

logger = logging.getLogger(__name__)

DEFERRAL_SECONDS = 5  # a message whose account runs all it may is looked at again after this
MAX_VISIBILITY = 12 * 3600  # SQS's limit
EWMA_WEIGHT = 0.3
_BACKOFF_CAP_SECONDS = 30.0


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
        spot_notice: Any = None,
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
        self.status = NodeStatus.IDLE
        self.current_job: str | None = None
        self.current_started: float | None = None
        self.ewma_run_seconds: float | None = None
        self.jobs_done = 0
        self._heartbeat_stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    # -- start and stop ---------------------------------------------------------------------

    def start(self) -> None:
        """Wait for ComfyUI, publish its node catalogue, register, start the heartbeat."""
        stats = self.comfy.wait_ready(self.settings.comfy_start_timeout_seconds)
        self.s3.put_object(
            Bucket=self.settings.model_bucket_name,
            Key=CATALOGUE_KEY,
            Body=self.comfy.object_info(),
            ContentType="application/json",
        )
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
            )
        )
        self._heartbeat = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self._heartbeat.start()
        logger.info("agent started", extra={"node_id": self.node_id})

    def request_stop(self) -> None:
        """First call: drain; second: stop now."""
        if self.stop.draining.is_set():
            self.stop.now.set()
            return
        self.stop.drain_deadline = self.clock.now() + self.settings.drain_grace_seconds
        self.stop.draining.set()
        self.status = NodeStatus.DRAINING
        self._report()

    def shutdown(self) -> None:
        self._heartbeat_stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=10)
        try:
            self.registry.set_status(self.node_id, NodeStatus.OFFLINE)
        except ComfyFleetError:
            logger.warning("could not mark the node offline", exc_info=True)

    # -- the loop ---------------------------------------------------------------------------

    def run_forever(self, *, max_jobs: int | None = None) -> None:
        """Work until drained or stopped (or ``max_jobs`` jobs, for tests)."""
        backoff = 1.0
        while not self.stop.draining.is_set():
            if max_jobs is not None and self.jobs_done >= max_jobs:
                return
            try:
                if self.status is NodeStatus.UNHEALTHY:
                    self._wait_for_comfy()
                received = self._receive()
                if received is not None:
                    self.handle(received)
                backoff = 1.0
            except ComfyUnavailable:
                logger.error("ComfyUI does not answer; the node takes no jobs")
                self.status = NodeStatus.UNHEALTHY
                self._report()
            except ComfyFleetError:
                logger.exception("AWS call failed; backing off %.0f s", backoff)
                self.stop.draining.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_CAP_SECONDS)

    def _receive(self) -> Received | None:
        """Own queue first (its jobs' models are here), then the shared queue."""
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
            self.queues.delete(received)  # a cancelled or ended job, or out of attempts
            return None
        job = claim.job
        self.status, self.current_job, self.current_started = (
            NodeStatus.BUSY,
            job.job_id,
            time.monotonic(),
        )
        self._report()
        try:
            ending = self.runner.run(job, received)
        except ComfyUnavailable:
            self.queues.change_visibility(received, 0)  # released: let another node have it
            raise
        finally:
            elapsed = time.monotonic() - (self.current_started or time.monotonic())
            self.current_job = self.current_started = None
            if self.status is NodeStatus.BUSY:
                self.status = NodeStatus.IDLE
            self._report()  # free again: routing should know now, not at the next beat
        if ending is Ending.RELEASED:
            self.queues.change_visibility(received, 0)
        else:
            self.queues.delete(received)
            self._record_run(elapsed)
        self.jobs_done += 1
        return ending

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
                self.stop.draining.wait(5)
                continue
            logger.info("ComfyUI answers again")
            self.status = NodeStatus.IDLE
            self._report()
            return

    # -- heartbeat --------------------------------------------------------------------------

    def _beat(self) -> None:
        while not self._heartbeat_stop.wait(self.settings.heartbeat_seconds):
            self._report()
            if self.spot_notice is not None and not self.stop.draining.is_set():
                try:
                    if self.spot_notice():
                        logger.warning("spot interruption notice: draining")
                        self.request_stop()
                except Exception:
                    logger.debug("spot notice check failed", exc_info=True)

    def _report(self) -> None:
        report = self.cache.report()
        started = None
        if self.current_started is not None:
            started = self.clock.now() - (time.monotonic() - self.current_started)
        try:
            self.registry.heartbeat(
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
