"""How a job gets into the ring: admission, the backlog, promotion from it, and rerouting."""

from __future__ import annotations

import copy
from dataclasses import replace

from comfyfleet.domain import (
    QUEUE_FULL_RETRY_AFTER,
    SHARED_ROUTE,
    Counters,
    Job,
    JobState,
    Limits,
    RingShare,
    rate_retry_after,
    rate_window,
)
from comfyfleet.errors import JobStateConflict, LimitExceeded
from comfyfleet.store.memory.job_base import JobTable
from comfyfleet.store.ports import BacklogEntry, RingFull, RingHasRoom, RouteGone


class JobAdmission(JobTable):
    """submit → ring or backlog; backlog → ring; one route's ring place → another's."""

    def admit(self, job: Job, limits: Limits, *, now: float, route: str | None) -> None:
        with self.m.lock:
            start, end = rate_window(now)
            window = self.m.windows.get((job.account_id, start), 0)
            if window >= limits.requests_per_minute:
                raise LimitExceeded(
                    "rate_limit_exceeded",
                    rate_retry_after(now),
                    f"over {limits.requests_per_minute} requests per minute",
                    Counters(window, float(end), 0, 0, 0),
                )
            counts = self._counts(job.account_id)
            if counts.waiting >= limits.queue_depth:
                raise LimitExceeded(
                    "queue_full",
                    QUEUE_FULL_RETRY_AFTER,
                    f"{counts.waiting} jobs already queued; the limit is {limits.queue_depth}",
                    Counters(window, float(end), counts.waiting, counts.ring, counts.running),
                )
            room = (
                counts.ring < limits.ring_slots
                and counts.active < limits.concurrency
                and counts.backlog == 0
            )
            if route is not None and not room:
                raise RingFull()
            if route is None and room:
                raise RingHasRoom()
            if route is not None and route != SHARED_ROUTE and route not in self.m.nodes:
                raise RouteGone()
            if job.job_id in self.m.jobs:
                raise JobStateConflict(job.job_id, self.m.jobs[job.job_id].state, "it exists")
            self.m.windows[(job.account_id, start)] = window + 1
            if route is not None:
                counts.move(waiting=1, ring=1, active=1)
                self.m.move_route(route, 1)
            else:
                counts.move(waiting=1, backlog=1)
            self._save(
                replace(
                    copy.deepcopy(job),
                    in_ring=route is not None,
                    route=route,
                    ring_at=now if route is not None else None,
                )
            )

    def backlog(self, account_id: str, *, limit: int) -> list[BacklogEntry]:
        with self.m.lock:
            waiting = sorted(
                (
                    j
                    for j in self.m.jobs.values()
                    if j.account_id == account_id and j.state is JobState.QUEUED and not j.in_ring
                ),
                key=lambda j: j.job_id,
            )
            return [
                BacklogEntry(j.job_id, j.account_id, j.tier, copy.deepcopy(j.models))
                for j in waiting[:limit]
            ]

    def promote(
        self,
        job_id: str,
        account_id: str,
        share: RingShare,
        *,
        route: str,
        now: float | None = None,
    ) -> None:
        with self.m.lock:
            job = self._job(job_id)
            if job.state is not JobState.QUEUED or job.in_ring:
                raise JobStateConflict(job_id, job.state, "it left the backlog")
            counts = self._counts(account_id)
            if counts.ring >= share.ring_slots or counts.active >= share.concurrency:
                raise RingFull()
            if route != SHARED_ROUTE and route not in self.m.nodes:
                raise RouteGone()
            counts.move(backlog=-1, ring=1, active=1)
            self.m.move_route(route, 1)
            job.in_ring, job.route = True, route
            if now is not None:
                job.ring_at = now

    def reroute(self, job_id: str, *, from_route: str, to_route: str) -> None:
        with self.m.lock:
            job = self._job(job_id)
            if job.state is not JobState.QUEUED or not job.in_ring or job.route != from_route:
                raise JobStateConflict(job_id, job.state, f"it is not queued on {from_route}")
            self.m.move_route(from_route, -1)
            self.m.move_route(to_route, 1)
            job.route = to_route
