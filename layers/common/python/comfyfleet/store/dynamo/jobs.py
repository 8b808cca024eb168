"""JobStore on DynamoDB: each transition is one TransactWriteItems with the account counters.

The store is one mixin per transition family over the plumbing in ``job_base``:
``job_admission`` (submit, backlog, promotion, reroute), ``job_claims`` (claim, lease,
progress), ``job_ends`` (finish, release, requeue, cancel, fail) and ``job_reads`` (history,
live jobs, events and deliveries).
"""

from __future__ import annotations

from comfyfleet.store.dynamo.job_admission import JobAdmission
from comfyfleet.store.dynamo.job_base import Cancelled
from comfyfleet.store.dynamo.job_claims import JobClaims
from comfyfleet.store.dynamo.job_ends import JobEnds
from comfyfleet.store.dynamo.job_reads import JobReads


class DynamoJobStore(JobAdmission, JobClaims, JobEnds, JobReads):
    """Every job transition, with the account and route counters kept in step."""


__all__ = ["Cancelled", "DynamoJobStore"]
