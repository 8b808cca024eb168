"""The reaper (DESIGN §2, §4, §5): one pass, every minute, repairs what dead processes left.

In order, each step reading what the ones before it wrote:

1. nodes silent for ``node_stale_seconds`` → offline;
2. running jobs whose lease expired on an offline (or removed) node → queued again as a new
   attempt, or failed ``max_attempts_exceeded`` (``Dispatcher.requeue_expired``);
3. the waiting messages of offline nodes' queues → the shared queue;
4. ring jobs that may have no message (a send failed after admission or promotion, or the
   message was lost with its node) → sent again. Only while SQS still deduplicates by job id
   (5 minutes from the first send): if the first send worked, SQS drops the copy, so a job
   waiting its turn is not doubled. A job back in the ring (released, or requeued from a
   lost node) is stamped anew; its resend may double its message once, which the
   conditional claim makes harmless;
5. messages in the job DLQ → their queued job failed with the reason, its event published;
6. accounts with a backlog and a free ring slot (a promoter died in between) → promoted;
7. events whose publication failed → published.

Idempotent: every change is a conditional write on the state it repairs, so a second pass
(or two reapers at once) finds nothing more to do. A failure on one item is logged and
counted, and the pass goes on with the next.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from comfyfleet.domain import (
    SHARED_ROUTE,
    Job,
    JobState,
    Limits,
    NodeInfo,
    NodeStatus,
    RingMessage,
    RingShare,
)
from comfyfleet.errors import AccountNotFound, ComfyFleetError, JobStateConflict, NotFound
from comfyfleet.queues import DEDUP_WINDOW_SECONDS, Received
from comfyfleet.resources import RING_MAX_RECEIVES
from comfyfleet.scheduling import Dispatcher, ring_has_slot
from comfyfleet.store.ports import LiveJob, exhausted_error

logger = logging.getLogger(__name__)

# A resend later than this after the ring slot was taken might no longer be deduplicated
# (the pass itself takes time, and the reaper's schedule is not exact).
RESEND_MARGIN_SECONDS = 60
DEAD_LETTERS_PER_PASS = 100
DEAD_LETTER_VISIBILITY_SECONDS = 60

T = TypeVar("T")


def dead_letter_error() -> dict[str, Any]:
    """The error of a job whose message SQS gave up on before any run took it."""
    return {
        "code": "message_dead_lettered",
        "message": f"its queue message was received {RING_MAX_RECEIVES} times "
        "without a run taking it",
    }


@dataclass
class ReaperReport:
    """What one pass did."""

    nodes_offline: list[str] = field(default_factory=list)
    jobs_requeued: list[str] = field(default_factory=list)
    jobs_failed: list[str] = field(default_factory=list)
    messages_rerouted: int = 0
    messages_resent: list[str] = field(default_factory=list)
    dead_letters: int = 0
    jobs_promoted: list[str] = field(default_factory=list)
    events_republished: int = 0
    nodes_by_status: dict[str, int] = field(default_factory=dict)
    errors: int = 0

    @property
    def changed(self) -> bool:
        return bool(
            self.nodes_offline
            or self.jobs_requeued
            or self.jobs_failed
            or self.messages_rerouted
            or self.messages_resent
            or self.dead_letters
            or self.jobs_promoted
            or self.events_republished
        )

    def summary(self) -> dict[str, Any]:
        """Counts, for the function's result and its log line."""
        return {
            "nodes_offline": len(self.nodes_offline),
            "jobs_requeued": len(self.jobs_requeued),
            "jobs_failed": len(self.jobs_failed),
            "messages_rerouted": self.messages_rerouted,
            "messages_resent": len(self.messages_resent),
            "dead_letters": self.dead_letters,
            "jobs_promoted": len(self.jobs_promoted),
            "events_republished": self.events_republished,
            "nodes_by_status": dict(self.nodes_by_status),
            "errors": self.errors,
        }


class Reaper:
    """One reaper pass over the stores and queues the Dispatcher holds."""

    def __init__(self, dispatcher: Dispatcher, *, dead_letter_urls: Sequence[str]) -> None:
        self.dispatcher = dispatcher
        self.stores = dispatcher.stores
        self.queues = dispatcher.queues
        self.settings = dispatcher.settings
        self.clock = dispatcher.clock
        self.dead_letter_urls = list(dead_letter_urls)
        self._shares: dict[str, RingShare] = {}  # per pass: an account's limits may change

    def run(self) -> ReaperReport:
        """One pass; see the module's docstring for its steps."""
        report = ReaperReport()
        self._shares = {}
        nodes = self._step(report, self._mark_stale_offline, report) or {}
        live = self._step(report, self.stores.jobs.live_jobs) or []
        self._step(report, self._requeue_lost, live, nodes, report)
        self._step(report, self._drain_offline, report)
        self._step(report, self._resend_unsent, live, nodes, report)
        for url in self.dead_letter_urls:
            self._step(report, self._fail_dead_letters, url, report)
        self._step(report, self._promote_backlogs, report)
        report.events_republished = self._step(report, self.dispatcher.republish_pending) or 0
        report.nodes_by_status = dict(Counter(node.status.value for node in nodes.values()))
        return report

    # -- 1. stale nodes -----------------------------------------------------------------------

    def _mark_stale_offline(self, report: ReaperReport) -> dict[str, NodeInfo]:
        nodes, _ = self.stores.nodes.snapshot()
        now = self.clock.now()
        for node in nodes:
            if node.status is NodeStatus.OFFLINE:
                continue
            if now - node.heartbeat_at <= self.settings.node_stale_seconds:
                continue
            if self._item(report, self._set_offline, node.node_id):
                node.status = NodeStatus.OFFLINE
                report.nodes_offline.append(node.node_id)
                logger.warning(
                    "node offline: no heartbeat",
                    extra={"node_id": node.node_id, "silent": round(now - node.heartbeat_at)},
                )
        return {node.node_id: node for node in nodes}

    def _set_offline(self, node_id: str) -> bool:
        self.stores.nodes.set_status(node_id, NodeStatus.OFFLINE)
        return True

    # -- 2. leases lost with their node -------------------------------------------------------

    def _requeue_lost(
        self, live: list[LiveJob], nodes: dict[str, NodeInfo], report: ReaperReport
    ) -> None:
        now = self.clock.now()
        for job in live:
            if job.state is not JobState.RUNNING or (job.lease_until or 0) >= now:
                continue
            node = nodes.get(job.node_id or "")
            if node is not None and node.status is not NodeStatus.OFFLINE:
                continue  # a live node's expired lease is reclaimed through its message
            share = self._share(job.account_id, job.tier)
            done = self._item(report, self.dispatcher.requeue_expired, job.job_id, share)
            if done is None:
                continue
            if done.state is JobState.FAILED:
                report.jobs_failed.append(done.job_id)
            else:
                report.jobs_requeued.append(done.job_id)
            logger.warning(
                "lease lost with its node",
                extra={"job_id": job.job_id, "node_id": job.node_id, "state": done.state.value},
            )

    # -- 3. offline nodes' queues -------------------------------------------------------------

    def _drain_offline(self, report: ReaperReport) -> None:
        # Read again: step 2 may have put jobs back on their node's route.
        nodes, _ = self.stores.nodes.snapshot()
        for node in nodes:
            if node.status is not NodeStatus.OFFLINE or node.queued <= 0 or not node.queue_url:
                continue
            moved = self._item(
                report, self.dispatcher.drain_node_queue, node.node_id, node.queue_url
            )
            report.messages_rerouted += moved or 0

    # -- 4. ring jobs without a message ----------------------------------------------------

    def _resend_unsent(
        self, live: list[LiveJob], nodes: dict[str, NodeInfo], report: ReaperReport
    ) -> None:
        now = self.clock.now()
        oldest = now - (DEDUP_WINDOW_SECONDS - RESEND_MARGIN_SECONDS)
        newest = now - self.settings.ring_resend_after_seconds
        for seen in live:
            if seen.state is not JobState.QUEUED or not seen.in_ring or seen.ring_at is None:
                continue
            if not oldest <= seen.ring_at <= newest:
                continue
            job = self._item(report, self.stores.jobs.get, seen.job_id)
            if job is None or job.state is not JobState.QUEUED or not job.in_ring:
                continue  # claimed or ended since the scan
            if self._item(report, self._resend, job, nodes):
                report.messages_resent.append(job.job_id)

    def _resend(self, job: Job, nodes: dict[str, NodeInfo]) -> bool:
        share = self._share(job.account_id, job.tier)
        route = job.route or SHARED_ROUTE
        node = nodes.get(route)
        if route != SHARED_ROUTE and node is not None and node.status.takes_jobs:
            if node.queue_url:
                try:
                    self.queues.send(node.queue_url, _message(job, route, share))
                    return True
                except ComfyFleetError:
                    logger.warning("node queue refused a resend", extra={"node_id": route})
        if route != SHARED_ROUTE:
            # Its node left, or its queue is gone: the shared queue takes the job.
            try:
                self.stores.jobs.reroute(job.job_id, from_route=route, to_route=SHARED_ROUTE)
            except (JobStateConflict, NotFound):
                return False
        self.queues.send(self.dispatcher.shared_url, _message(job, SHARED_ROUTE, share))
        return True

    # -- 5. dead letters --------------------------------------------------------------------

    def _fail_dead_letters(self, url: str, report: ReaperReport) -> None:
        for _ in range(DEAD_LETTERS_PER_PASS):
            try:
                received = self.queues.receive(
                    url, wait_seconds=0, visibility_seconds=DEAD_LETTER_VISIBILITY_SECONDS
                )
            except (ValueError, KeyError, TypeError):
                # Not a ring message; it stays for an operator, hidden for a minute.
                logger.exception("unreadable dead letter", extra={"queue_url": url})
                report.errors += 1
                continue
            if received is None:
                return
            if self._item(report, self._dead_letter, received, report):
                self.queues.delete(received)
                report.dead_letters += 1

    def _dead_letter(self, received: Received, report: ReaperReport) -> bool:
        """Fail the message's job if the message was its one way to a run; True: delete it."""
        message = received.message
        try:
            job = self.stores.jobs.get(message.job_id)
        except NotFound:
            return True
        # Only a queued job in the ring depends on this message; anything else holds a copy
        # (a duplicate of a running job, a job since ended or moved on).
        if job.state is not JobState.QUEUED or not job.in_ring:
            return True
        max_attempts = self.settings.max_attempts
        error = (
            exhausted_error(max_attempts) if job.attempt >= max_attempts else dead_letter_error()
        )
        try:
            self.dispatcher.fail_queued(job.job_id, error, self._share(job.account_id, job.tier))
        except JobStateConflict:
            return True  # claimed or ended meanwhile: the message is a copy after all
        report.jobs_failed.append(job.job_id)
        logger.warning(
            "job failed: its message was dead-lettered",
            extra={"job_id": job.job_id, "code": error["code"]},
        )
        return True

    # -- 6. backlogs behind a free slot ----------------------------------------------------

    def _promote_backlogs(self, report: ReaperReport) -> None:
        now = self.clock.now()
        for account_id, counters in self.stores.limits.backlogged(now=now).items():
            share = self._share(account_id, None)
            if not ring_has_slot(counters.ring, counters.running, share):
                continue
            promoted = self._item(report, self.dispatcher.promote, account_id, share)
            report.jobs_promoted.extend(promoted or [])

    # -- plumbing -----------------------------------------------------------------------------

    def _share(self, account_id: str, tier: str | None) -> RingShare:
        share = self._shares.get(account_id)
        if share is None:
            try:
                share = self.stores.accounts.get(account_id).limits(self.settings).share
            except AccountNotFound:
                share = Limits.of(self.settings.tier(tier or self.settings.default_tier)).share
            self._shares[account_id] = share
        return share

    def _step(self, report: ReaperReport, fn: Callable[..., T], *args: Any) -> T | None:
        """Run one step; a storage failure ends the step, not the pass."""
        try:
            return fn(*args)
        except ComfyFleetError:
            logger.exception("reaper step failed", extra={"step": getattr(fn, "__name__", "")})
            report.errors += 1
            return None

    def _item(self, report: ReaperReport, fn: Callable[..., T], *args: Any) -> T | None:
        """Repair one item; one that changed meanwhile (a lost race) or failed is skipped."""
        try:
            return fn(*args)
        except (JobStateConflict, NotFound):
            return None
        except ComfyFleetError:
            logger.warning("reaper could not repair an item", exc_info=True)
            report.errors += 1
            return None


def _message(job: Job, route: str, share: RingShare) -> RingMessage:
    return RingMessage(job.job_id, job.account_id, route, share.concurrency, share.ring_slots)
