"""What every in-memory job transition shares: finding a job, its account's counters, and
saving a copy so that no caller holds the stored job."""

from __future__ import annotations

import copy

from comfyfleet.domain import Job, JobState
from comfyfleet.errors import AccountNotFound, JobNotFound, JobStateConflict
from comfyfleet.store.memory.state import Counts, MemoryState


class JobTable:
    """The jobs in the shared state; callers hold its lock around each transition."""

    def __init__(self, memory: MemoryState) -> None:
        self.m = memory
        self.retention = memory.settings.history_retention_days * 86400

    def _job(self, job_id: str) -> Job:
        job = self.m.jobs.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def _counts(self, account_id: str) -> Counts:
        counts = self.m.counts.get(account_id)
        if counts is None:
            raise AccountNotFound(account_id)
        return counts

    def _save(self, job: Job) -> Job:
        self.m.jobs[job.job_id] = job
        return copy.deepcopy(job)

    def get(self, job_id: str) -> Job:
        with self.m.lock:
            return copy.deepcopy(self._job(job_id))

    def _running_here(self, job_id: str, node_id: str, wanted: str) -> Job:
        job = self._job(job_id)
        if job.state is not JobState.RUNNING or job.node_id != node_id:
            raise JobStateConflict(job_id, job.state, wanted)
        return job
