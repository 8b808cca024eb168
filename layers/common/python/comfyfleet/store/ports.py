"""The stores' interfaces. DynamoDB adapters live in ``store.dynamo``, in-memory fakes in
``store.memory``; both pass the same contract tests (tests/integration/test_store_contract.py).

Every job transition is one atomic, conditional write that also moves the account's counters
(DESIGN §3–§5): duplicates and races lose cleanly, and counters never drift from the states.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from comfyfleet.deployments.spec import Deployment, DeploymentSummary, is_deployment_name
from comfyfleet.domain import (
    Account,
    ApiKey,
    Counters,
    Job,
    JobState,
    Limits,
    NodeInfo,
    NodeStatus,
    RingMessage,
    RingShare,
    Scope,
)
from comfyfleet.errors import InvalidCursor


class RingFull(Exception):
    """No ring slot: the ring holds all the account may send, or its backlog goes first."""


class RingHasRoom(Exception):
    """The job may not wait in the backlog: the account has a free slot and no backlog."""


class RouteGone(Exception):
    """The node chosen for the job is no longer registered."""


class ClaimOutcome(StrEnum):
    CLAIMED = "claimed"  # the job is ours: run it
    # Another node holds it: look again when its lease runs out (the holder may be dead).
    DUPLICATE = "duplicate"
    GONE = "gone"  # cancelled, finished or unknown: delete the message
    DEFERRED = "deferred"  # its account runs all it may: leave the message for later
    EXHAUSTED = "exhausted"  # out of attempts: fail it


@dataclass(frozen=True, slots=True)
class Claim:
    outcome: ClaimOutcome
    job: Job | None = None
    reclaimed: bool = False  # taken over from a node whose lease expired
    lease_until: float | None = None  # DUPLICATE: when the holder's lease runs out


@dataclass(frozen=True, slots=True)
class BacklogEntry:
    job_id: str
    account_id: str
    tier: str
    models: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class LiveJob:
    """A job in the ring or running, as the reaper looks it over."""

    job_id: str
    account_id: str
    state: JobState
    in_ring: bool
    route: str | None
    node_id: str | None
    lease_until: float | None
    ring_at: float | None
    tier: str


@dataclass(frozen=True, slots=True)
class Page:
    jobs: list[Job]
    cursor: str | None  # opaque; None on the last page


@dataclass(frozen=True, slots=True)
class ModelRecord:
    model_key: str
    url: str
    size: int
    sha256: str | None = None
    folder: str = ""
    mirror_key: str | None = None


class JobStore(Protocol):
    def admit(self, job: Job, limits: Limits, *, now: float, route: str | None) -> None:
        """Create a queued job and count it, in one write.

        ``route`` given: the job takes a ring slot and that route's queued count rises
        (RingFull when the account has no free slot or a backlog); None: it waits in the
        backlog (RingHasRoom when it should not). LimitExceeded for the rate window
        (rate_limit_exceeded) or the queue depth (queue_full); RouteGone for a lost node.
        """
        ...

    def get(self, job_id: str) -> Job: ...

    def list_for_account(
        self, account_id: str, *, state: JobState | None, limit: int, cursor: str | None
    ) -> Page: ...

    def list_all(
        self, *, state: JobState | None, limit: int, cursor: str | None, now: float
    ) -> Page:
        """Every account's jobs, newest first (the operator's view), back to the history's
        retention."""
        ...

    def claim(
        self,
        message: RingMessage,
        node_id: str,
        *,
        now: float,
        lease_seconds: float,
        max_attempts: int,
    ) -> Claim:
        """Take the job of a received message: queued → running, or running with an
        expired lease → running here (a new attempt)."""
        ...

    def extend_lease(self, job_id: str, node_id: str, *, until: float) -> bool:
        """Renew a running job's lease; returns whether a cancel was requested."""
        ...

    def cancel_requested(self, job_id: str) -> bool:
        """Whether the job's owner asked to cancel it (a light read, once a second)."""
        ...

    def record_progress(self, job_id: str, node_id: str, progress: dict[str, Any]) -> None: ...

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
        """running → completed, failed or cancelled; frees the account's running count."""
        ...

    def release(self, job_id: str, node_id: str, *, now: float) -> Job:
        """running → queued again for another node (its message becomes visible again).

        Back in the ring, ring_at = now: if its message was lost (its node queue deleted
        with the node), the reaper's resend gives it one.
        """
        ...

    def hand_back(
        self, job_id: str, node_id: str, *, now: float, route: str, environment_id: str
    ) -> Job:
        """running here → queued again as though this node had never claimed it (it lacks a
        class the job uses, comfyfleet.handback): the attempt is given back, the node's
        ``environment_id`` is added to handed_back_by, and the job is back in the ring
        (ring_at = now) with its next message bound for ``route``, whose count rises."""
        ...

    def cancel(self, job_id: str, *, now: float) -> Job:
        """A queued job is cancelled at once; a running one gets cancel_requested."""
        ...

    def fail_queued(self, job_id: str, error: dict[str, Any], *, now: float) -> Job:
        """queued → failed (a dead-lettered message, or out of attempts before a claim)."""
        ...

    def requeue_expired(self, job_id: str, *, now: float, max_attempts: int) -> Job:
        """running with an expired lease → queued again (ring_at = now, as for release), or
        failed when out of attempts."""
        ...

    def backlog(self, account_id: str, *, limit: int) -> list[BacklogEntry]:
        """The account's jobs waiting for a ring slot, oldest first."""
        ...

    def reroute(self, job_id: str, *, from_route: str, to_route: str) -> None:
        """Move a queued job's message from one queue to another (a node leaving): its
        route and both queues' counts change; JobStateConflict if it is not queued there."""
        ...

    def promote(
        self,
        job_id: str,
        account_id: str,
        share: RingShare,
        *,
        route: str,
        now: float | None = None,
    ) -> None:
        """Give a backlog job a ring slot (RingFull if none is free; JobStateConflict if it
        left the backlog meanwhile: another promoter took it, or it was cancelled). ``now``
        is recorded as its ring_at."""
        ...

    def live_jobs(self) -> list[LiveJob]:
        """Every job in the ring or running (a sparse index: bounded by the accounts' ring
        slots and concurrency, not by history)."""
        ...

    # Every terminal write above also sets the job's event_pending (comfyfleet.events).
    def clear_event_pending(self, job_id: str) -> None:
        """The job's terminal event is published (idempotent)."""
        ...

    def pending_events(self, *, ended_before: float, limit: int) -> list[str]:
        """Ids of jobs that ended before ``ended_before`` and whose event is unpublished."""
        ...

    def record_delivery(self, job_id: str, delivery: dict[str, Any]) -> None:
        """Replace the job's webhook delivery state (JobNotFound if it is gone)."""
        ...


class LimitStore(Protocol):
    def counters(self, account_id: str, *, now: float) -> Counters: ...

    def backlogged(self, *, now: float) -> dict[str, Counters]:
        """The counters of every account with jobs in its backlog (waiting > ring)."""
        ...


class AccountStore(Protocol):
    def create(
        self, *, tier: str, name: str, now: float, webhook_url: str | None = None
    ) -> Account: ...

    def get(self, account_id: str) -> Account: ...

    def update(self, account: Account) -> None: ...


class KeyStore(Protocol):
    def create(
        self, account_id: str, scopes: Iterable[Scope], *, name: str, now: float
    ) -> tuple[ApiKey, str]:
        """A new key and its plaintext, which is returned this once and never stored."""
        ...

    def find(self, plaintext: str) -> ApiKey | None:
        """The key with this plaintext (revoked ones too), or None."""
        ...

    def get(self, key_id: str) -> ApiKey: ...

    def revoke(self, key_id: str, *, now: float) -> ApiKey: ...

    def list_for_account(self, account_id: str) -> list[ApiKey]: ...


class NodeRegistry(Protocol):
    def register(self, node: NodeInfo) -> None: ...

    def heartbeat(
        self,
        node_id: str,
        *,
        now: float,
        status: NodeStatus,
        cached: dict[str, int],
        free_bytes: int,
        current_job: str | None,
        current_started_at: float | None,
        ewma_run_seconds: float | None,
        bandwidth_bytes_per_second: float | None,
    ) -> NodeStatus:
        """Record the node's state; returns its status as recorded. ``draining``, once set
        (by an operator or the lifecycle hook), is kept whatever the node reports, so the
        node learns it should take no more jobs."""
        ...

    def set_status(self, node_id: str, status: NodeStatus) -> None: ...

    def remove(self, node_id: str) -> None: ...

    def get(self, node_id: str) -> NodeInfo: ...

    def snapshot(self) -> tuple[list[NodeInfo], int]:
        """Every registered node, and the shared queue's queued count."""
        ...


class ModelCatalog(Protocol):
    def get_many(self, keys: Iterable[str]) -> dict[str, ModelRecord]: ...

    def put(self, record: ModelRecord) -> None: ...


@dataclass(frozen=True, slots=True)
class DeploymentPage:
    deployments: list[DeploymentSummary]
    cursor: str | None  # opaque; None on the last page


class DeploymentStore(Protocol):
    """An account's deployments: immutable versions under a name, numbered from 1.

    A deleted name's numbers are never given again: posting it anew continues after its last
    version, so a job's (name, version) always names the graph it ran."""

    def create(self, draft: Deployment) -> Deployment:
        """Store ``draft`` as the next version of its name (its ``version`` is ignored)."""
        ...

    def get(self, account_id: str, name: str, version: int | None = None) -> Deployment:
        """The newest version, or ``version``; DeploymentNotFound if there is none."""
        ...

    def list_for_account(
        self, account_id: str, *, limit: int, cursor: str | None
    ) -> DeploymentPage: ...

    def delete(self, account_id: str, name: str) -> int:
        """Delete every version (DeploymentNotFound if none); how many there were."""
        ...


def exhausted_error(max_attempts: int) -> dict[str, Any]:
    """The error of a job that failed on infrastructure more times than allowed."""
    return {
        "code": "max_attempts_exceeded",
        "message": f"the job failed on infrastructure {max_attempts} times",
    }


def encode_cursor(job_id: str) -> str:
    """The opaque cursor after ``job_id`` (the caller's account is added back on use)."""
    return base64.urlsafe_b64encode(job_id.encode()).decode().rstrip("=")


def encode_name_cursor(name: str) -> str:
    """The opaque cursor after the deployment ``name``."""
    return base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


def decode_name_cursor(cursor: str) -> str:
    try:
        name = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise InvalidCursor("the cursor is not one this API returned") from None
    if not is_deployment_name(name):
        raise InvalidCursor("the cursor is not one this API returned")
    return name


def decode_cursor(cursor: str) -> str:
    try:
        job_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise InvalidCursor("the cursor is not one this API returned") from None
    if not job_id.isalnum() or len(job_id) != 26:
        raise InvalidCursor("the cursor is not one this API returned")
    return job_id
