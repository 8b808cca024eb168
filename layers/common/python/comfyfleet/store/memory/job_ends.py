"""How a job leaves the running or the queued state: finished, released, handed back,
requeued after its lease ran out, cancelled or failed; each with the counters it frees."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

from comfyfleet.domain import Job, JobState
from comfyfleet.errors import JobStateConflict
from comfyfleet.store.memory.job_base import JobTable
from comfyfleet.store.ports import exhausted_error


class JobEnds(JobTable):
    """running → terminal or back to queued; queued → cancelled or failed."""

    def finish(
        self,
        job_id: str,
        node_id: str,
        state: JobState,
        *,
        now: float,
        outputs: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> Job:
        if not state.terminal:
            raise ValueError(f"{state} is not a terminal state")
        with self.m.lock:
            job = self._running_here(job_id, node_id, "it is not running on this node")
            self._counts(job.account_id).move(running=-1, active=-1)
            return self._save(
                replace(
                    job,
                    state=state,
                    completed_at=now,
                    outputs=outputs,
                    error=error,
                    lease_until=None,
                    expires_at=int(now) + self.retention,
                    event_pending=True,
                )
            )

    def release(self, job_id: str, node_id: str, *, now: float) -> Job:
        with self.m.lock:
            job = self._running_here(job_id, node_id, "it is not running here")
            return self._requeue(job, ring_at=now)

    def hand_back(
        self, job_id: str, node_id: str, *, now: float, route: str, environment_id: str
    ) -> Job:
        with self.m.lock:
            job = self._running_here(job_id, node_id, "it is not running on this node")
            handed = replace(
                job,
                route=route,
                attempt=max(0, job.attempt - 1),
                handed_back_by=[*job.handed_back_by, environment_id],
            )
            return self._requeue(handed, ring_at=now)

    def _requeue(self, job: Job, *, ring_at: float | None = None) -> Job:
        self._counts(job.account_id).move(running=-1, waiting=1, ring=1)
        self.m.move_route(job.route, 1)
        return self._save(
            replace(
                job,
                state=JobState.QUEUED,
                in_ring=True,
                node_id=None,
                lease_until=None,
                progress=None,
                ring_at=job.ring_at if ring_at is None else ring_at,
            )
        )

    def requeue_expired(self, job_id: str, *, now: float, max_attempts: int) -> Job:
        with self.m.lock:
            job = self._job(job_id)
            if job.state is not JobState.RUNNING or (job.lease_until or 0) >= now:
                raise JobStateConflict(job_id, job.state, "its lease has not expired")
            if job.attempt < max_attempts:
                return self._requeue(job, ring_at=now)
            self._counts(job.account_id).move(running=-1, active=-1)
            return self._save(
                replace(
                    job,
                    state=JobState.FAILED,
                    completed_at=now,
                    error=exhausted_error(max_attempts),
                    lease_until=None,
                    progress=None,
                    expires_at=int(now) + self.retention,
                    event_pending=True,
                )
            )

    def cancel(self, job_id: str, *, now: float) -> Job:
        with self.m.lock:
            job = self._job(job_id)
            if job.state.terminal:
                raise JobStateConflict(job_id, job.state, "it has already ended")
            if job.state is JobState.RUNNING:
                job.cancel_requested = True
                return copy.deepcopy(job)
            return self._drop_queued(job, JobState.CANCELLED, None, now)

    def fail_queued(self, job_id: str, error: dict[str, Any], *, now: float) -> Job:
        with self.m.lock:
            job = self._job(job_id)
            if job.state is not JobState.QUEUED:
                raise JobStateConflict(job_id, job.state, "it is not queued")
            return self._drop_queued(job, JobState.FAILED, error, now)

    def _drop_queued(
        self, job: Job, state: JobState, error: dict[str, Any] | None, now: float
    ) -> Job:
        counts = self._counts(job.account_id)
        if job.in_ring:
            counts.move(waiting=-1, ring=-1, active=-1)
            self.m.move_route(job.route, -1)
        else:
            counts.move(waiting=-1, backlog=-1)
        return self._save(
            replace(
                job,
                state=state,
                completed_at=now,
                error=error,
                expires_at=int(now) + self.retention,
                event_pending=True,
            )
        )
