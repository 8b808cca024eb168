"""Admission and fairness (DESIGN §3, §5): jobs in, ring slots kept filled, per account.

Each account holds at most ``ring_slots`` messages in the SQS queues (2, 3, 4 by tier
weight) and only for jobs it could run now; its other queued jobs wait in its backlog in
DynamoDB. Whoever frees a slot — a claim, a job's end, a cancel — promotes the account's
oldest backlog job to the back of the queue, so free GPUs serve accounts in weighted round
robin however many jobs one of them queues.

On the submit path this costs one transaction and (when a slot is free) one SendMessage;
the account's counters are read at most once a second per process to choose the ring or
the backlog first and to fill the rate-limit headers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from comfyfleet.catalogues import environments_in_service
from comfyfleet.clock import Clock
from comfyfleet.domain import (
    SHARED_ROUTE,
    Counters,
    Job,
    JobState,
    Limits,
    RingMessage,
    RingShare,
)
from comfyfleet.errors import JobNotFound, JobStateConflict, LimitExceeded, StorageError
from comfyfleet.events import REPUBLISH_AFTER_SECONDS, EventOutbox, JobEvents
from comfyfleet.ids import new_job_id
from comfyfleet.queues import JobQueues
from comfyfleet.router import ModelNeed, NodeSnapshot, Route, route_job
from comfyfleet.settings import Settings
from comfyfleet.store import Stores
from comfyfleet.store.ports import Claim, ClaimOutcome, RingFull, RingHasRoom, RouteGone

logger = logging.getLogger(__name__)

COUNTERS_TTL_SECONDS = 1.0
_ADMIT_TRIES = 4


@dataclass(frozen=True, slots=True)
class Admission:
    """An admitted job and what the response reports about it."""

    job: Job
    queue_position: int  # 1 = next of the account's own queued jobs
    estimated_wait_seconds: int
    counters: Counters  # the account's usage after this admission


@dataclass(frozen=True, slots=True)
class JobRequest:
    workflow: dict[str, Any]
    models: list[dict[str, Any]]
    webhook_url: str | None = None
    metadata: dict[str, Any] | None = None
    environments: list[str] | None = None  # only these have its classes (a rollout)
    deployment: dict[str, Any] | None = None  # {"name", "version"} it was run from


class CountersView:
    """Accounts' counters as of at most a second ago, plus what this process did since."""

    def __init__(self, read: Callable[[str, float], Counters], *, ttl: float) -> None:
        self._read = read
        self._ttl = ttl
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, Counters]] = {}

    def get(self, account_id: str, now: float) -> Counters:
        with self._lock:
            cached = self._cache.get(account_id)
        if cached is not None and now - cached[0] < self._ttl and now < cached[1].window_reset:
            return cached[1]
        counters = self._read(account_id, now)
        with self._lock:
            self._cache[account_id] = (now, counters)
        return counters

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    def forget(self, account_id: str) -> None:
        """Drop what is known of the account (a change this process cannot count itself)."""
        with self._lock:
            self._cache.pop(account_id, None)

    def note(self, account_id: str, counters: Counters, now: float, *, fresh: bool) -> None:
        """Record counters this process learned (``fresh``: read now, else adjusted)."""
        with self._lock:
            cached = self._cache.get(account_id)
            read_at = now if fresh or cached is None else cached[0]
            self._cache[account_id] = (read_at, counters)


class Dispatcher:
    """Admits jobs and keeps each account's ring slots filled from its backlog."""

    def __init__(
        self,
        stores: Stores,
        queues: JobQueues,
        settings: Settings,
        clock: Clock,
        *,
        shared_url: str,
        events: JobEvents,
        snapshot: NodeSnapshot | None = None,
    ) -> None:
        self.stores = stores
        # Every terminal transition below publishes its job's event exactly once through this.
        self.events = events
        self.outbox = EventOutbox(stores.jobs, events)
        self.queues = queues
        self.settings = settings
        self.clock = clock
        self.shared_url = shared_url
        self.snapshot = snapshot or NodeSnapshot(stores.nodes.snapshot)
        self.counters = CountersView(
            lambda account, now: stores.limits.counters(account, now=now),
            ttl=COUNTERS_TTL_SECONDS,
        )

    # -- admission --------------------------------------------------------------------------

    def submit(self, account_id: str, tier: str, limits: Limits, request: JobRequest) -> Admission:
        """Admit a job for the account: into the ring when it has room, else its backlog.

        Raises LimitExceeded (rate_limit_exceeded, queue_full) with the counters it saw.
        """
        now = self.clock.now()
        job = Job(
            job_id=new_job_id(now),
            account_id=account_id,
            state=JobState.QUEUED,
            created_at=now,
            workflow=request.workflow,
            models=request.models,
            tier=tier,
            webhook_url=request.webhook_url,
            metadata=request.metadata,
            environments=request.environments,
            deployment=request.deployment,
        )
        seen = self.counters.get(account_id, now)
        to_ring = _has_room(seen, limits)
        route = self._route(job.models, now, job.environments)
        for _ in range(_ADMIT_TRIES):
            try:
                self.stores.jobs.admit(
                    job, limits, now=now, route=route.target if to_ring else None
                )
                break
            except LimitExceeded as refused:
                refused.counters = _refused(seen, refused.counters)
                self.counters.note(account_id, refused.counters, now, fresh=True)
                raise
            except RingFull:
                to_ring = False
            except RingHasRoom:
                to_ring = True
            except RouteGone:
                self.snapshot.invalidate()
                route = self._route(job.models, now, job.environments)
        else:
            raise StorageError("admission kept racing other writers; try again")
        after = _admitted(seen, to_ring, now)
        self.counters.note(account_id, after, now, fresh=False)
        if to_ring:
            job = replace(job, in_ring=True, route=route.target)
            self._send(route, job.job_id, account_id, limits.share)
            wait = route.estimated_start
        else:
            run = self.settings.default_run_seconds
            wait = route.estimated_start + (seen.waiting - seen.ring + 1) * run / limits.concurrency
        return Admission(
            job=job,
            queue_position=after.waiting,
            estimated_wait_seconds=round(wait),
            counters=after,
        )

    def _route(
        self, models: list[dict[str, Any]], now: float, environments: list[str] | None = None
    ) -> Route:
        nodes, shared_queued = self.snapshot.get()
        return route_job(
            [ModelNeed.from_ref(ref) for ref in models],
            nodes,
            shared_queued,
            shared_url=self.shared_url,
            settings=self.settings,
            now=now,
            environments=environments,
        )

    def _backlog_environments(self, job_id: str, now: float) -> list[str] | None:
        """A backlog job's environments. The backlog index does not carry them, so the job is
        read, but only while several environments are in service (a rollout): otherwise
        every node has its classes and no read is spent."""
        nodes, _ = self.snapshot.get()
        if len(environments_in_service(nodes, now, self.settings.node_stale_seconds)) < 2:
            return None
        return self.stores.jobs.get(job_id).environments

    def _send(self, route: Route, job_id: str, account_id: str, share: RingShare) -> None:
        message = RingMessage(
            job_id=job_id,
            account_id=account_id,
            route=route.target,
            concurrency=share.concurrency,
            ring_slots=share.ring_slots,
        )
        try:
            self.queues.send(route.queue_url, message)
        except StorageError:
            # The job holds its slot without a message; the reaper sends it again.
            logger.exception("send failed; the reaper will resend", extra={"job_id": job_id})

    # -- promotion --------------------------------------------------------------------------

    def promote(self, account_id: str, share: RingShare) -> list[str]:
        """Fill the account's free ring slots from its backlog, oldest first.

        Safe to call from anywhere at any time: each promotion is a conditional write, so
        two promoters never send one job, and a full ring simply stops it.
        """
        promoted: list[str] = []
        while True:
            entries = self.stores.jobs.backlog(account_id, limit=share.ring_slots)
            progressed = False
            for entry in entries:
                now = self.clock.now()
                environments = self._backlog_environments(entry.job_id, now)
                route = self._route(entry.models, now, environments)
                try:
                    self._promote_one(entry.job_id, account_id, share, route)
                except RingFull:
                    return promoted
                except JobStateConflict:
                    continue  # another promoter took it, or it was cancelled
                promoted.append(entry.job_id)
                progressed = True
            if not progressed:
                return promoted

    def _promote_one(self, job_id: str, account_id: str, share: RingShare, route: Route) -> None:
        try:
            self.stores.jobs.promote(
                job_id, account_id, share, route=route.target, now=self.clock.now()
            )
        except RouteGone:
            self.snapshot.invalidate()
            route = Route(SHARED_ROUTE, self.shared_url, route.estimated_start)
            self.stores.jobs.promote(
                job_id, account_id, share, route=route.target, now=self.clock.now()
            )
        self._send(route, job_id, account_id, share)

    def drain_node_queue(self, node_id: str, queue_url: str) -> int:
        """Move the waiting messages of a node's queue to the shared queue (the node is
        leaving); returns how many moved. Messages in flight stay with their runs."""
        moved = 0
        while (
            received := self.queues.receive(queue_url, wait_seconds=0, visibility_seconds=60)
        ) is not None:
            message = received.message
            try:
                self.stores.jobs.reroute(message.job_id, from_route=node_id, to_route=SHARED_ROUTE)
            except (JobStateConflict, JobNotFound):
                self.queues.delete(received)  # a stale copy: the job moved on
                continue
            self.queues.send(self.shared_url, replace(message, route=SHARED_ROUTE))
            self.queues.delete(received)
            moved += 1
        return moved

    # -- what frees a slot: a claim, a job's end, a cancel ---------------------------------

    def claim(self, message: RingMessage, node_id: str) -> Claim:
        """Claim a received message's job; a claim frees the account's ring slot."""
        claim = self.stores.jobs.claim(
            message,
            node_id,
            now=self.clock.now(),
            lease_seconds=self.settings.lease_seconds,
            max_attempts=self.settings.max_attempts,
        )
        if claim.outcome is ClaimOutcome.EXHAUSTED and claim.job and claim.job.state.terminal:
            self.outbox.ended(claim.job)  # it failed max_attempts_exceeded just now
        if claim.outcome in (ClaimOutcome.CLAIMED, ClaimOutcome.EXHAUSTED):
            self.promote(message.account_id, message.share)
        return claim

    def finish(
        self,
        job: Job,
        node_id: str,
        state: JobState,
        share: RingShare,
        *,
        outputs: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> Job:
        """End a running job (completed, failed, cancelled) and refill the account's ring."""
        done = self.stores.jobs.finish(
            job.job_id, node_id, state, now=self.clock.now(), outputs=outputs, error=error
        )
        done = self.outbox.ended(done)
        self.promote(job.account_id, share)
        return done

    def cancel(self, job_id: str, share: RingShare) -> Job:
        """Cancel a job: a queued one at once (its slot goes to the next backlog job),
        a running one by request (its agent interrupts ComfyUI)."""
        job = self.stores.jobs.cancel(job_id, now=self.clock.now())
        if job.state is JobState.CANCELLED:
            job = self.outbox.ended(job)
            self.promote(job.account_id, share)
            # Its queued count fell (and a promotion may have refilled the ring).
            self.counters.forget(job.account_id)
        return job

    # -- the reaper's transitions ------------------------------------------------------------

    def fail_queued(self, job_id: str, error: dict[str, Any], share: RingShare) -> Job:
        """Fail a queued job (its message dead-lettered), publish its event, refill the
        ring. JobStateConflict if it is no longer queued (running it twice changes nothing)."""
        job = self.stores.jobs.fail_queued(job_id, error, now=self.clock.now())
        job = self.outbox.ended(job)
        self.promote(job.account_id, share)
        self.counters.forget(job.account_id)
        return job

    def requeue_expired(self, job_id: str, share: RingShare) -> Job:
        """A running job whose lease expired: queued again for a new attempt, or failed
        ``max_attempts_exceeded`` (then its event is published and the ring refilled)."""
        job = self.stores.jobs.requeue_expired(
            job_id, now=self.clock.now(), max_attempts=self.settings.max_attempts
        )
        if job.state is JobState.FAILED:
            job = self.outbox.ended(job)
            self.promote(job.account_id, share)
        return job

    def republish_pending(
        self, *, older_than: float = REPUBLISH_AFTER_SECONDS, limit: int = 100
    ) -> int:
        """Publish the events a process failed to publish after ending their jobs (jobs
        ended over ``older_than`` seconds ago with event_pending set); returns the count."""
        return self.outbox.republish(ended_before=self.clock.now() - older_than, limit=limit)


def _has_room(counters: Counters, limits: Limits) -> bool:
    backlog = counters.waiting - counters.ring
    return ring_has_slot(counters.ring, counters.running, limits.share) and backlog <= 0


def ring_has_slot(ring: int, running: int, share: RingShare) -> bool:
    """Whether an account may hold one more ring message: a free slot, and a job it could
    run now (the rule of admission and of the stores' promote; the simulation shares it)."""
    return ring < share.ring_slots and ring + running < share.concurrency


def _admitted(seen: Counters, to_ring: bool, now: float) -> Counters:
    """The counters after this admission, as far as this process knows."""
    return replace(
        seen,
        window_requests=seen.window_requests + 1,
        waiting=seen.waiting + 1,
        ring=seen.ring + (1 if to_ring else 0),
    )


def _refused(seen: Counters, learned: Counters | None) -> Counters:
    """What a refusal taught us (the failed condition's values) over what we had seen."""
    if learned is None:
        return seen
    if learned.waiting or learned.ring or learned.running:
        return replace(learned, window_requests=max(learned.window_requests, seen.window_requests))
    return replace(seen, window_requests=learned.window_requests, window_reset=learned.window_reset)


def job_of_account(stores: Stores, job_id: str, account_id: str) -> Job:
    """The account's job; another account's job is not found, never forbidden."""
    job = stores.jobs.get(job_id)
    if job.account_id != account_id:
        raise JobNotFound(job_id)
    return job
