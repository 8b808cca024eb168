"""The agent's side of a running job: the claim (and taking over a stale one), its lease,
its progress and the cancel flag it polls."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from comfyfleet.domain import JobState, RingMessage
from comfyfleet.store.memory.job_ends import JobEnds
from comfyfleet.store.ports import Claim, ClaimOutcome, exhausted_error


class JobClaims(JobEnds):
    """queued → running, and running on one node → running on another.

    A claim past the job's attempts ends it instead, so claims build on the ends family;
    the ends never call back.
    """

    def claim(
        self,
        message: RingMessage,
        node_id: str,
        *,
        now: float,
        lease_seconds: float,
        max_attempts: int,
    ) -> Claim:
        with self.m.lock:
            job = self.m.jobs.get(message.job_id)
            if job is None:
                return Claim(ClaimOutcome.GONE)
            if job.state is JobState.QUEUED:
                if job.attempt >= max_attempts:
                    failed = self._drop_queued(
                        job, JobState.FAILED, exhausted_error(max_attempts), now
                    )
                    return Claim(ClaimOutcome.EXHAUSTED, failed)
                if not job.in_ring:
                    return Claim(ClaimOutcome.GONE)
                counts = self._counts(job.account_id)
                if counts.running >= message.concurrency:
                    return Claim(ClaimOutcome.DEFERRED)
                counts.move(ring=-1, waiting=-1, running=1)
                self.m.move_route(message.route, -1)
                claimed = replace(
                    job,
                    state=JobState.RUNNING,
                    node_id=node_id,
                    lease_until=now + lease_seconds,
                    in_ring=False,
                    started_at=job.started_at or now,
                    progress=None,
                    attempt=job.attempt + 1,
                )
                return Claim(ClaimOutcome.CLAIMED, self._save(claimed))
            if job.state is JobState.RUNNING and (job.lease_until or 0) < now:
                if job.attempt >= max_attempts:
                    return Claim(
                        ClaimOutcome.EXHAUSTED,
                        self.requeue_expired(job.job_id, now=now, max_attempts=max_attempts),
                    )
                taken = replace(
                    job,
                    node_id=node_id,
                    lease_until=now + lease_seconds,
                    progress=None,
                    attempt=job.attempt + 1,
                )
                return Claim(ClaimOutcome.CLAIMED, self._save(taken), reclaimed=True)
            if job.state is JobState.RUNNING:
                return Claim(ClaimOutcome.DUPLICATE, lease_until=job.lease_until)
            return Claim(ClaimOutcome.GONE)

    def extend_lease(self, job_id: str, node_id: str, *, until: float) -> bool:
        with self.m.lock:
            job = self._running_here(job_id, node_id, "its lease is not ours")
            job.lease_until = until
            return job.cancel_requested

    def cancel_requested(self, job_id: str) -> bool:
        with self.m.lock:
            return self._job(job_id).cancel_requested

    def record_progress(self, job_id: str, node_id: str, progress: dict[str, Any]) -> None:
        with self.m.lock:
            self._running_here(job_id, node_id, "it is not running here").progress = dict(progress)
