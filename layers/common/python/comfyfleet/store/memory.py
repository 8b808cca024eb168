"""In-memory stores with the DynamoDB adapters' semantics, for unit tests and the simulation.

One lock makes each transition atomic, as a transaction does. The contract tests run the
same scenarios against these and against DynamoDB on moto.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from comfyfleet.apikeys import hash_key, new_api_key, new_webhook_secret
from comfyfleet.domain import (
    QUEUE_FULL_RETRY_AFTER,
    SHARED_ROUTE,
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
    rate_retry_after,
    rate_window,
)
from comfyfleet.errors import (
    AccountNotFound,
    JobNotFound,
    JobStateConflict,
    KeyNotFound,
    LimitExceeded,
    NodeNotFound,
)
from comfyfleet.ids import new_account_id
from comfyfleet.settings import Settings
from comfyfleet.store import Stores
from comfyfleet.store.ports import (
    BacklogEntry,
    Claim,
    ClaimOutcome,
    LiveJob,
    ModelRecord,
    Page,
    RingFull,
    RingHasRoom,
    RouteGone,
    decode_cursor,
    encode_cursor,
    exhausted_error,
)


class _Counts:
    __slots__ = ("waiting", "ring", "backlog", "running", "active")

    def __init__(self) -> None:
        self.waiting = self.ring = self.backlog = self.running = self.active = 0

    def move(self, **deltas: int) -> None:
        for name, delta in deltas.items():
            setattr(self, name, getattr(self, name) + delta)


class Memory:
    """The shared state behind the in-memory stores."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lock = threading.RLock()
        self.jobs: dict[str, Job] = {}
        self.counts: dict[str, _Counts] = {}
        self.windows: dict[tuple[str, int], int] = {}
        self.accounts: dict[str, Account] = {}
        self.keys: dict[str, ApiKey] = {}
        self.nodes: dict[str, NodeInfo] = {}
        self.route_queued: dict[str, int] = {}
        self.models: dict[str, ModelRecord] = {}

    def stores(self) -> Stores:
        return Stores(
            jobs=MemoryJobStore(self),
            limits=MemoryLimitStore(self),
            accounts=MemoryAccountStore(self),
            keys=MemoryKeyStore(self),
            nodes=MemoryNodeRegistry(self),
            models=MemoryModelCatalog(self),
        )

    def move_route(self, route: str | None, delta: int) -> None:
        key = route or SHARED_ROUTE
        self.route_queued[key] = self.route_queued.get(key, 0) + delta


def memory_stores(settings: Settings) -> Stores:
    return Memory(settings).stores()


class MemoryJobStore:
    def __init__(self, memory: Memory) -> None:
        self.m = memory
        self.retention = memory.settings.history_retention_days * 86400

    def _job(self, job_id: str) -> Job:
        job = self.m.jobs.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def _counts(self, account_id: str) -> _Counts:
        counts = self.m.counts.get(account_id)
        if counts is None:
            raise AccountNotFound(account_id)
        return counts

    def _save(self, job: Job) -> Job:
        self.m.jobs[job.job_id] = job
        return copy.deepcopy(job)

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

    def get(self, job_id: str) -> Job:
        with self.m.lock:
            return copy.deepcopy(self._job(job_id))

    def list_for_account(
        self, account_id: str, *, state: JobState | None, limit: int, cursor: str | None
    ) -> Page:
        with self.m.lock:
            after = decode_cursor(cursor) if cursor else None
            mine = sorted(
                (j for j in self.m.jobs.values() if j.account_id == account_id),
                key=lambda j: j.job_id,
                reverse=True,
            )
            if after is not None:
                mine = [j for j in mine if j.job_id < after]
            more = False
            page: list[Job] = []
            for job in mine:
                if state is not None and job.state is not state:
                    continue
                if len(page) == limit:
                    more = True
                    break
                page.append(copy.deepcopy(job))
            cursor_out = encode_cursor(page[-1].job_id) if more and page else None
            return Page(jobs=page, cursor=cursor_out)

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

    def _running_here(self, job_id: str, node_id: str, wanted: str) -> Job:
        job = self._job(job_id)
        if job.state is not JobState.RUNNING or job.node_id != node_id:
            raise JobStateConflict(job_id, job.state, wanted)
        return job

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

    def clear_event_pending(self, job_id: str) -> None:
        with self.m.lock:
            job = self.m.jobs.get(job_id)
            if job is not None:
                job.event_pending = False

    def pending_events(self, *, ended_before: float, limit: int) -> list[str]:
        with self.m.lock:
            pending = sorted(
                (
                    j
                    for j in self.m.jobs.values()
                    if j.event_pending and (j.completed_at or 0) < ended_before
                ),
                key=lambda j: j.completed_at or 0,
            )
            return [j.job_id for j in pending[:limit]]

    def record_delivery(self, job_id: str, delivery: dict[str, Any]) -> None:
        with self.m.lock:
            self._job(job_id).webhook = copy.deepcopy(delivery)

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

    def reroute(self, job_id: str, *, from_route: str, to_route: str) -> None:
        with self.m.lock:
            job = self._job(job_id)
            if job.state is not JobState.QUEUED or not job.in_ring or job.route != from_route:
                raise JobStateConflict(job_id, job.state, f"it is not queued on {from_route}")
            self.m.move_route(from_route, -1)
            self.m.move_route(to_route, 1)
            job.route = to_route

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

    def live_jobs(self) -> list[LiveJob]:
        with self.m.lock:
            return [
                LiveJob(
                    j.job_id,
                    j.account_id,
                    j.state,
                    j.in_ring,
                    j.route,
                    j.node_id,
                    j.lease_until,
                    j.ring_at,
                    j.tier,
                )
                for j in sorted(self.m.jobs.values(), key=lambda j: j.job_id)
                if j.state is JobState.RUNNING or (j.state is JobState.QUEUED and j.in_ring)
            ]


class MemoryLimitStore:
    def __init__(self, memory: Memory) -> None:
        self.m = memory

    def counters(self, account_id: str, *, now: float) -> Counters:
        with self.m.lock:
            start, end = rate_window(now)
            counts = self.m.counts.get(account_id) or _Counts()
            return Counters(
                self.m.windows.get((account_id, start), 0),
                float(end),
                counts.waiting,
                counts.ring,
                counts.running,
            )

    def backlogged(self, *, now: float) -> dict[str, Counters]:
        with self.m.lock:
            return {
                account_id: self.counters(account_id, now=now)
                for account_id, counts in self.m.counts.items()
                if counts.backlog > 0
            }


class MemoryAccountStore:
    def __init__(self, memory: Memory) -> None:
        self.m = memory

    def create(
        self, *, tier: str, name: str, now: float, webhook_url: str | None = None
    ) -> Account:
        account = Account(
            account_id=new_account_id(now),
            tier=tier,
            created_at=now,
            name=name,
            webhook_url=webhook_url,
            webhook_secret=new_webhook_secret(),
        )
        with self.m.lock:
            self.m.accounts[account.account_id] = account
            self.m.counts[account.account_id] = _Counts()
        return copy.deepcopy(account)

    def get(self, account_id: str) -> Account:
        with self.m.lock:
            account = self.m.accounts.get(account_id)
            if account is None:
                raise AccountNotFound(account_id)
            return copy.deepcopy(account)

    def update(self, account: Account) -> None:
        with self.m.lock:
            if account.account_id not in self.m.accounts:
                raise AccountNotFound(account.account_id)
            self.m.accounts[account.account_id] = copy.deepcopy(account)


class MemoryKeyStore:
    def __init__(self, memory: Memory) -> None:
        self.m = memory

    def create(
        self, account_id: str, scopes: Iterable[Scope], *, name: str, now: float
    ) -> tuple[ApiKey, str]:
        plaintext, key_id, key_hash = new_api_key()
        key = ApiKey(key_id, key_hash, account_id, frozenset(scopes), now, name)
        with self.m.lock:
            self.m.keys[key_hash] = key
        return copy.deepcopy(key), plaintext

    def find(self, plaintext: str) -> ApiKey | None:
        with self.m.lock:
            key = self.m.keys.get(hash_key(plaintext))
            return copy.deepcopy(key) if key else None

    def get(self, key_id: str) -> ApiKey:
        with self.m.lock:
            for key in self.m.keys.values():
                if key.key_id == key_id:
                    return copy.deepcopy(key)
        raise KeyNotFound(key_id)

    def revoke(self, key_id: str, *, now: float) -> ApiKey:
        with self.m.lock:
            key = self.m.keys[self.get(key_id).key_hash]
            if key.revoked_at is None:
                key.revoked_at = now
            return copy.deepcopy(key)

    def list_for_account(self, account_id: str) -> list[ApiKey]:
        with self.m.lock:
            return sorted(
                (copy.deepcopy(k) for k in self.m.keys.values() if k.account_id == account_id),
                key=lambda k: k.created_at,
            )


class MemoryNodeRegistry:
    def __init__(self, memory: Memory) -> None:
        self.m = memory

    def register(self, node: NodeInfo) -> None:
        with self.m.lock:
            self.m.nodes[node.node_id] = replace(
                copy.deepcopy(node),
                registered_at=node.heartbeat_at,
                current_job=None,
                current_started_at=None,
            )

    def _node(self, node_id: str) -> NodeInfo:
        node = self.m.nodes.get(node_id)
        if node is None:
            raise NodeNotFound(node_id)
        return node

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
        with self.m.lock:
            node = self._node(node_id)
            if node.status is not NodeStatus.DRAINING:  # an operator's drain sticks
                node.status = status
            node.heartbeat_at, node.cached = now, dict(cached)
            node.free_bytes, node.current_job = free_bytes, current_job
            node.current_started_at, node.ewma_run_seconds = current_started_at, ewma_run_seconds
            node.bandwidth_bytes_per_second = bandwidth_bytes_per_second
            return node.status

    def set_status(self, node_id: str, status: NodeStatus) -> None:
        with self.m.lock:
            self._node(node_id).status = status

    def remove(self, node_id: str) -> None:
        with self.m.lock:
            self.m.nodes.pop(node_id, None)

    def get(self, node_id: str) -> NodeInfo:
        with self.m.lock:
            node = copy.deepcopy(self._node(node_id))
            node.queued = max(0, self.m.route_queued.get(node_id, 0))
            return node

    def snapshot(self) -> tuple[list[NodeInfo], int]:
        with self.m.lock:
            nodes = [self.get(node_id) for node_id in self.m.nodes]
            return nodes, max(0, self.m.route_queued.get(SHARED_ROUTE, 0))


class MemoryModelCatalog:
    def __init__(self, memory: Memory) -> None:
        self.m = memory

    def get_many(self, keys: Iterable[str]) -> dict[str, ModelRecord]:
        with self.m.lock:
            return {k: self.m.models[k] for k in keys if k in self.m.models}

    def put(self, record: ModelRecord) -> None:
        with self.m.lock:
            self.m.models[record.model_key] = record
