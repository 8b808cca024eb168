"""The in-memory JobStore, one mixin per transition family as on DynamoDB (``job_admission``,
``job_claims``, ``job_ends``, ``job_reads``) over the shared helpers in ``job_base``."""

from __future__ import annotations

from comfyfleet.store.memory.job_admission import JobAdmission
from comfyfleet.store.memory.job_claims import JobClaims
from comfyfleet.store.memory.job_ends import JobEnds
from comfyfleet.store.memory.job_reads import JobReads


class MemoryJobStore(JobAdmission, JobClaims, JobEnds, JobReads):
    """Every job transition, atomic under the shared lock as a transaction is on DynamoDB."""


__all__ = ["MemoryJobStore"]
