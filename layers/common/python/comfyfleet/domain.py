"""The domain's records: accounts, keys, jobs and their states, nodes, counters."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from comfyfleet.settings import Settings, Tier


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})


class Scope(StrEnum):
    JOBS = "jobs"
    ADMIN = "admin"


class NodeStatus(StrEnum):
    IDLE = "idle"
    BUSY = "busy"
    DRAINING = "draining"
    UNHEALTHY = "unhealthy"  # its ComfyUI does not answer
    OFFLINE = "offline"

    @property
    def takes_jobs(self) -> bool:
        return self in (NodeStatus.IDLE, NodeStatus.BUSY)


SHARED_ROUTE = "shared"  # the route of a job sent to the shared queue (late binding)
# The environment of a node whose ComfyUI folder has no lock file: ComfyUI's core nodes only
# (node setup never wrote one there). Node setup's ids are short hashes, never this word.
CORE_ENVIRONMENT = "core"


@dataclass(frozen=True, slots=True)
class RingShare:
    """What promotion needs of an account's limits: its share of the ring."""

    concurrency: int
    ring_slots: int


@dataclass(frozen=True, slots=True)
class Limits:
    """An account's effective limits: its tier's, with the account's overrides."""

    requests_per_minute: int
    concurrency: int
    queue_depth: int
    ring_slots: int

    @classmethod
    def of(cls, tier: Tier, overrides: dict[str, Any] | None = None) -> Limits:
        merged = Tier(**{**tier.model_dump(), **(overrides or {})})
        return cls(
            requests_per_minute=merged.requests_per_minute,
            concurrency=merged.concurrency,
            queue_depth=merged.queue_depth,
            ring_slots=merged.ring_slots,
        )

    @property
    def share(self) -> RingShare:
        return RingShare(self.concurrency, self.ring_slots)


@dataclass(slots=True)
class Account:
    account_id: str
    tier: str
    created_at: float
    name: str = ""
    limit_overrides: dict[str, Any] = field(default_factory=dict)
    webhook_url: str | None = None
    webhook_secret: str = ""
    # After a rotation the old secret still signs until then (comfyfleet.webhooks).
    previous_webhook_secret: str | None = None
    previous_secret_expires_at: float | None = None

    def limits(self, settings: Settings) -> Limits:
        return Limits.of(settings.tier(self.tier), self.limit_overrides)


@dataclass(slots=True)
class ApiKey:
    key_id: str  # the key's public prefix, safe to show and log
    key_hash: str  # SHA-256 of the whole key; the key itself is never stored
    account_id: str
    scopes: frozenset[Scope]
    created_at: float
    name: str = ""
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(slots=True)
class Job:
    job_id: str
    account_id: str
    state: JobState
    created_at: float
    workflow: dict[str, Any]
    models: list[dict[str, Any]] = field(default_factory=list)  # ModelRef.to_dict() each
    tier: str = "free"
    webhook_url: str | None = None
    metadata: dict[str, Any] | None = None
    in_ring: bool = False  # holds one of the account's ring slots (a message was sent)
    route: str | None = None  # SHARED_ROUTE or the node id whose queue has its message
    node_id: str | None = None  # the node running it
    attempt: int = 0
    lease_until: float | None = None
    cancel_requested: bool = False
    started_at: float | None = None
    completed_at: float | None = None
    progress: dict[str, Any] | None = None
    outputs: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    expires_at: int | None = None
    # Delivery of its terminal event, {state, attempts}, as the webhooks function records it.
    webhook: dict[str, Any] | None = None
    # Set by the terminal write, cleared once its event is published: a process that died in
    # between leaves it set, and the reaper publishes the event (comfyfleet.events).
    event_pending: bool = False
    # When it last took a ring slot (admitted to the ring, or promoted): the reaper resends
    # a message its sender may have failed to send while SQS still deduplicates it.
    ring_at: float | None = None
    # The environments whose nodes have every class it uses, when not every environment in
    # service has them (a rollout); None: any node (comfyfleet.catalogues).
    environments: list[str] | None = None
    # The environment of each node that handed it back for lacking one of its classes, in
    # order (comfyfleet.handback): their number is bounded, those environments are skipped.
    handed_back_by: list[str] = field(default_factory=list)
    # The deployment (and version) it was run from, {"name", "version"}; None: a workflow.
    deployment: dict[str, Any] | None = None

    @property
    def execution_time_ms(self) -> int | None:
        if self.started_at is None or self.completed_at is None:
            return None
        return round((self.completed_at - self.started_at) * 1000)


@dataclass(frozen=True, slots=True)
class Counters:
    """An account's usage at one moment, for the X-RateLimit/Concurrent/Queue headers."""

    window_requests: int  # requests counted in the current rate window
    window_reset: float  # when the window ends (epoch seconds)
    waiting: int  # queued jobs: in the ring plus the backlog
    ring: int  # queued jobs holding a ring slot
    running: int


@dataclass(slots=True)
class NodeInfo:
    """A GPU node as the registry knows it (one row of the router's snapshot)."""

    node_id: str
    status: NodeStatus
    heartbeat_at: float
    queue_url: str = ""
    cached: dict[str, int] = field(default_factory=dict)  # model key → bytes
    free_bytes: int = 0
    gpu: str = ""
    current_job: str | None = None
    current_started_at: float | None = None
    ewma_run_seconds: float | None = None
    bandwidth_bytes_per_second: float | None = None
    queued: int = 0  # messages routed to its node queue and not yet claimed
    registered_at: float = 0.0
    # Its software (node setup's lock file; CORE_ENVIRONMENT without one). "" on a record
    # from an agent older than environments: its catalogue is the fleet-wide one.
    environment_id: str = ""

    def live(self, now: float, stale_after: float) -> bool:
        return self.status.takes_jobs and now - self.heartbeat_at <= stale_after


@dataclass(frozen=True, slots=True)
class RingMessage:
    """The small body of a ring message: enough to claim without reading the job first."""

    job_id: str
    account_id: str
    route: str
    concurrency: int
    ring_slots: int

    @property
    def share(self) -> RingShare:
        return RingShare(self.concurrency, self.ring_slots)

    @property
    def group_id(self) -> str:
        # One group per job: the message stays in flight while its job runs, and a shared
        # group would hold back the account's next message until then (see docs).
        return f"{self.account_id}:{self.job_id}"


RATE_WINDOW_SECONDS = 60
# A full queue drains as jobs finish; a client should look again after about this long.
QUEUE_FULL_RETRY_AFTER = 15


def rate_window(now: float) -> tuple[int, int]:
    """The fixed rate window containing ``now``: (start, end) in epoch seconds."""
    start = int(now // RATE_WINDOW_SECONDS) * RATE_WINDOW_SECONDS
    return start, start + RATE_WINDOW_SECONDS


def rate_retry_after(now: float) -> int:
    """Whole seconds until the rate window containing ``now`` ends (at least 1)."""
    _, end = rate_window(now)
    return max(1, math.ceil(end - now))
