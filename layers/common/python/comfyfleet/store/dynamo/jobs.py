"""JobStore on DynamoDB: each transition is one TransactWriteItems with the account counters."""

from __future__ import annotations

import random
import time
from dataclasses import replace
from typing import Any

from botocore.exceptions import ClientError

from comfyfleet.domain import (
    QUEUE_FULL_RETRY_AFTER,
    Counters,
    Job,
    JobState,
    Limits,
    RingMessage,
    RingShare,
    rate_retry_after,
    rate_window,
)
from comfyfleet.errors import (
    AccountNotFound,
    JobNotFound,
    JobStateConflict,
    LimitExceeded,
    StorageError,
)
from comfyfleet.resources import JOBS, LIMITS, NODES
from comfyfleet.settings import Settings
from comfyfleet.store.dynamo import counters as c
from comfyfleet.store.dynamo.codec import (
    EVENT_PENDING,
    Item,
    as_json,
    call,
    error_code,
    flag,
    get_bool,
    get_int,
    get_json,
    get_n,
    get_s,
    job_from_item,
    job_to_item,
    n,
    s,
)
from comfyfleet.store.ports import (
    BacklogEntry,
    Claim,
    ClaimOutcome,
    LiveJob,
    Page,
    RingFull,
    RingHasRoom,
    RouteGone,
    decode_cursor,
    encode_cursor,
    exhausted_error,
)

_CONFLICT_RETRIES = 6


class Cancelled(Exception):
    """A transaction's condition failed; ``reasons`` align with its items."""

    def __init__(self, reasons: list[dict[str, Any]]) -> None:
        super().__init__("transaction cancelled")
        self.reasons = reasons

    def failed(self, index: int) -> bool:
        return self.reasons[index].get("Code") == "ConditionalCheckFailed"

    def old(self, index: int) -> Item | None:
        item: Item | None = self.reasons[index].get("Item")
        return item


class DynamoJobStore:
    def __init__(self, dynamodb: Any, settings: Settings) -> None:
        self.db = dynamodb
        self.settings = settings
        self.jobs = JOBS.name(settings)
        self.limits = LIMITS.name(settings)
        self.nodes = NODES.name(settings)
        self.retention = settings.history_retention_days * 86400

    # -- plumbing -------------------------------------------------------------------------

    def _transact(self, items: list[dict[str, Any]]) -> None:
        """Run a transaction; retry conflicts with other transactions on the same items."""
        for attempt in range(_CONFLICT_RETRIES):
            try:
                self.db.transact_write_items(TransactItems=items)
                return
            except ClientError as exc:
                if error_code(exc) != "TransactionCanceledException":
                    raise StorageError(f"transaction failed: {error_code(exc)}") from exc
                reasons = exc.response.get("CancellationReasons", [])
                codes = {reason.get("Code") for reason in reasons}
                if "ConditionalCheckFailed" in codes:
                    raise Cancelled(reasons) from None
                if "TransactionConflict" not in codes and "ThrottlingError" not in codes:
                    raise StorageError(f"transaction cancelled: {sorted(map(str, codes))}") from exc
            time.sleep(random.uniform(0, 0.01 * 2**attempt))
        raise StorageError("transaction kept conflicting with others")

    def _job_update(
        self,
        job_id: str,
        expression: str,
        condition: str,
        values: dict[str, Any],
        names: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        update: dict[str, Any] = {
            "TableName": self.jobs,
            "Key": {"job_id": s(job_id)},
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": {"#state": "state", **(names or {})},
            "ExpressionAttributeValues": values,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        return {"Update": update}

    def _conflict(self, job_id: str, old: Item | None, wanted: str) -> Exception:
        if old is None:
            return JobNotFound(job_id)
        return JobStateConflict(job_id, get_s(old, "state"), wanted)

    # -- admission and reads ------------------------------------------------------------

    def admit(self, job: Job, limits: Limits, *, now: float, route: str | None) -> None:
        values = c.limit_values(
            depth=limits.queue_depth, slots=limits.ring_slots, conc=limits.concurrency
        )
        job = replace(
            job, in_ring=route is not None, route=route, ring_at=now if route is not None else None
        )
        items = [
            c.count_request(self.limits, job.account_id, now=now, limit=limits.requests_per_minute),
            c.move_counters(
                self.limits,
                job.account_id,
                c.ADMIT_TO_RING if route is not None else c.ADMIT_TO_BACKLOG,
                condition=c.HAS_ROOM_IN_RING if route is not None else c.MUST_WAIT,
                values=values,
            ),
            {
                "Put": {
                    "TableName": self.jobs,
                    "Item": job_to_item(job),
                    "ConditionExpression": "attribute_not_exists(job_id)",
                }
            },
        ]
        if route is not None:
            items.append(c.move_route(self.nodes, route, 1, must_exist=True))
        try:
            self._transact(items)
        except Cancelled as cancelled:
            raise self._admission_refusal(cancelled, job, limits, now, route) from None

    def _admission_refusal(
        self, cancelled: Cancelled, job: Job, limits: Limits, now: float, route: str | None
    ) -> Exception:
        if cancelled.failed(0):
            window = get_int(cancelled.old(0) or {}, "count")
            _, end = rate_window(now)
            return LimitExceeded(
                "rate_limit_exceeded",
                rate_retry_after(now),
                f"over {limits.requests_per_minute} requests per minute",
                Counters(window, float(end), 0, 0, 0),
            )
        if cancelled.failed(1):
            old = cancelled.old(1)
            if old is None:
                return AccountNotFound(job.account_id)
            counters = c.counters_from(old, None, now=now)
            if counters.waiting >= limits.queue_depth:
                return LimitExceeded(
                    "queue_full",
                    QUEUE_FULL_RETRY_AFTER,
                    f"{counters.waiting} jobs already queued; the limit is {limits.queue_depth}",
                    counters,
                )
            return RingFull() if route is not None else RingHasRoom()
        if len(cancelled.reasons) > 3 and cancelled.failed(3):
            return RouteGone()
        return StorageError(f"job id {job.job_id} already exists")

    def get(self, job_id: str) -> Job:
        item = call(
            "get job",
            self.db.get_item,
            TableName=self.jobs,
            Key={"job_id": s(job_id)},
            ConsistentRead=True,
        ).get("Item")
        if item is None:
            raise JobNotFound(job_id)
        return job_from_item(item)

    def list_for_account(
        self, account_id: str, *, state: JobState | None, limit: int, cursor: str | None
    ) -> Page:
        request: dict[str, Any] = {
            "TableName": self.jobs,
            "IndexName": "by_account",
            "KeyConditionExpression": "account_id = :a",
            "ExpressionAttributeValues": {":a": s(account_id)},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if state is not None:
            request["FilterExpression"] = "#state = :state"
            request["ExpressionAttributeNames"] = {"#state": "state"}
            request["ExpressionAttributeValues"][":state"] = s(state.value)
        if cursor:
            job_id = decode_cursor(cursor)
            request["ExclusiveStartKey"] = {"account_id": s(account_id), "job_id": s(job_id)}
        jobs: list[Job] = []
        while True:  # a filter can leave a page short: keep reading until full or done
            response = call("list jobs", self.db.query, **request)
            jobs.extend(job_from_item(item) for item in response.get("Items", []))
            last = response.get("LastEvaluatedKey")
            if last is None or len(jobs) >= limit:
                break
            request["ExclusiveStartKey"] = last
            request["Limit"] = limit - len(jobs)
        next_cursor = encode_cursor(jobs[-1].job_id) if last is not None and jobs else None
        return Page(jobs=jobs, cursor=next_cursor)

    # -- the agent's transitions ------------------------------------------------------------

    def claim(
        self,
        message: RingMessage,
        node_id: str,
        *,
        now: float,
        lease_seconds: float,
        max_attempts: int,
    ) -> Claim:
        job_id = message.job_id
        items = [
            self._job_update(
                job_id,
                "SET #state = :running, node_id = :node, lease_until = :lease, "
                "in_ring = :false, started_at = if_not_exists(started_at, :now) "
                "REMOVE progress ADD attempt :one",
                "#state = :queued AND in_ring = :true AND attempt < :max",
                {
                    ":running": s(JobState.RUNNING),
                    ":queued": s(JobState.QUEUED),
                    ":node": s(node_id),
                    ":lease": n(now + lease_seconds),
                    ":now": n(now),
                    ":one": n(1),
                    ":max": n(max_attempts),
                    ":true": flag(True),
                    ":false": flag(False),
                },
            ),
            c.move_counters(
                self.limits,
                message.account_id,
                c.CLAIM,
                condition=c.UNDER_CONCURRENCY,
                values=c.limit_values(conc=message.concurrency),
            ),
            c.move_route(self.nodes, message.route, -1, must_exist=False),
        ]
        try:
            self._transact(items)
        except Cancelled as cancelled:
            return self._claim_refused(
                cancelled, message, node_id, now, lease_seconds, max_attempts
            )
        return Claim(ClaimOutcome.CLAIMED, self.get(job_id))

    def _claim_refused(
        self,
        cancelled: Cancelled,
        message: RingMessage,
        node_id: str,
        now: float,
        lease_seconds: float,
        max_attempts: int,
    ) -> Claim:
        if not cancelled.failed(0):
            return Claim(ClaimOutcome.DEFERRED)  # the account runs all it may
        old = cancelled.old(0)
        if old is None:
            return Claim(ClaimOutcome.GONE)
        state = JobState(old["state"]["S"])
        attempt = get_int(old, "attempt")
        if state is JobState.QUEUED:
            if attempt >= max_attempts:
                error = exhausted_error(max_attempts)
                return Claim(
                    ClaimOutcome.EXHAUSTED, self.fail_queued(message.job_id, error, now=now)
                )
            return Claim(ClaimOutcome.GONE)  # not in the ring: a stale duplicate
        if state is JobState.RUNNING and (get_n(old, "lease_until") or 0) < now:
            if attempt >= max_attempts:
                job = self.requeue_expired(message.job_id, now=now, max_attempts=max_attempts)
                return Claim(ClaimOutcome.EXHAUSTED, job)
            return self._reclaim(message.job_id, node_id, now, lease_seconds, max_attempts)
        if state is JobState.RUNNING:
            return Claim(ClaimOutcome.DUPLICATE, lease_until=get_n(old, "lease_until"))
        return Claim(ClaimOutcome.GONE)

    def _reclaim(
        self, job_id: str, node_id: str, now: float, lease_seconds: float, max_attempts: int
    ) -> Claim:
        """Take over a running job whose node stopped renewing its lease."""
        try:
            item = self.db.update_item(
                TableName=self.jobs,
                Key={"job_id": s(job_id)},
                UpdateExpression="SET node_id = :node, lease_until = :lease REMOVE progress "
                "ADD attempt :one",
                ConditionExpression="#state = :running AND lease_until < :now AND attempt < :max",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={
                    ":node": s(node_id),
                    ":lease": n(now + lease_seconds),
                    ":one": n(1),
                    ":running": s(JobState.RUNNING),
                    ":now": n(now),
                    ":max": n(max_attempts),
                },
                ReturnValues="ALL_NEW",
            )["Attributes"]
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return Claim(ClaimOutcome.DUPLICATE)  # someone else took it over first
            raise StorageError(f"reclaim failed: {error_code(exc)}") from exc
        return Claim(ClaimOutcome.CLAIMED, job_from_item(item), reclaimed=True)

    def extend_lease(self, job_id: str, node_id: str, *, until: float) -> bool:
        try:
            attributes = self.db.update_item(
                TableName=self.jobs,
                Key={"job_id": s(job_id)},
                UpdateExpression="SET lease_until = :until",
                ConditionExpression="#state = :running AND node_id = :node",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={
                    ":until": n(until),
                    ":running": s(JobState.RUNNING),
                    ":node": s(node_id),
                },
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )["Attributes"]
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise self._conflict(
                    job_id, exc.response.get("Item"), "its lease is not ours"
                ) from None
            raise StorageError(f"extend lease failed: {error_code(exc)}") from exc
        return bool(attributes.get("cancel_requested", {}).get("BOOL"))

    def cancel_requested(self, job_id: str) -> bool:
        item = call(
            "read cancel request",
            self.db.get_item,
            TableName=self.jobs,
            Key={"job_id": s(job_id)},
            ProjectionExpression="cancel_requested",
            ConsistentRead=True,
        ).get("Item")
        if item is None:
            raise JobNotFound(job_id)
        return bool(item.get("cancel_requested", {}).get("BOOL"))

    def record_progress(self, job_id: str, node_id: str, progress: dict[str, Any]) -> None:
        try:
            self.db.update_item(
                TableName=self.jobs,
                Key={"job_id": s(job_id)},
                UpdateExpression="SET progress = :progress",
                ConditionExpression="#state = :running AND node_id = :node",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={
                    ":progress": as_json(progress),
                    ":running": s(JobState.RUNNING),
                    ":node": s(node_id),
                },
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise self._conflict(
                    job_id, exc.response.get("Item"), "it is not running here"
                ) from None
            raise StorageError(f"progress failed: {error_code(exc)}") from exc

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
        job = self.get(job_id)
        if job.state is not JobState.RUNNING or job.node_id != node_id:
            raise JobStateConflict(job_id, job.state, "it is not running on this node")
        values: dict[str, Any] = {
            ":done": s(state),
            ":now": n(now),
            ":expires": n(int(now) + self.retention),
            ":running": s(JobState.RUNNING),
            ":node": s(node_id),
            ":pending": s(EVENT_PENDING),
        }
        sets = "#state = :done, completed_at = :now, expires_at = :expires"
        sets += ", event_pending = :pending"
        if outputs is not None:
            sets += ", outputs = :outputs"
            values[":outputs"] = as_json(outputs)
        if error is not None:
            sets += ", #error = :error"
            values[":error"] = as_json(error)
        items = [
            self._job_update(
                job_id,
                f"SET {sets} REMOVE lease_until, live_account",
                "#state = :running AND node_id = :node",
                values,
                {"#error": "error"} if error is not None else None,
            ),
            c.move_counters(self.limits, job.account_id, c.FINISH_RUNNING),
        ]
        try:
            self._transact(items)
        except Cancelled as cancelled:
            raise self._conflict(
                job_id, cancelled.old(0), "it is not running on this node"
            ) from None
        return replace(
            job,
            state=state,
            completed_at=now,
            outputs=outputs,
            error=error,
            lease_until=None,
            expires_at=int(now) + self.retention,
            event_pending=True,
        )

    def release(self, job_id: str, node_id: str, *, now: float) -> Job:
        job = self.get(job_id)
        if job.state is not JobState.RUNNING or job.node_id != node_id:
            raise JobStateConflict(job_id, job.state, "it is not running on this node")
        condition = "#state = :running AND node_id = :node"
        return self._requeue(job, condition, {":node": s(node_id)}, ring_at=now)

    def _requeue(
        self, job: Job, condition: str, values: dict[str, Any], *, ring_at: float | None = None
    ) -> Job:
        sets = "#state = :queued, in_ring = :true"
        if ring_at is not None:
            sets += ", ring_at = :ring_at"
            values = {**values, ":ring_at": n(ring_at)}
        items = [
            self._job_update(
                job.job_id,
                f"SET {sets} REMOVE node_id, lease_until, progress",
                condition,
                {
                    ":queued": s(JobState.QUEUED),
                    ":true": flag(True),
                    ":running": s(JobState.RUNNING),
                    **values,
                },
            ),
            c.move_counters(self.limits, job.account_id, c.REQUEUE_RUNNING),
            c.move_route(self.nodes, job.route or "shared", 1, must_exist=False),
        ]
        try:
            self._transact(items)
        except Cancelled as cancelled:
            raise self._conflict(job.job_id, cancelled.old(0), "it is not running") from None
        return replace(
            job,
            state=JobState.QUEUED,
            in_ring=True,
            node_id=None,
            lease_until=None,
            progress=None,
            ring_at=job.ring_at if ring_at is None else ring_at,
        )

    def requeue_expired(self, job_id: str, *, now: float, max_attempts: int) -> Job:
        job = self.get(job_id)
        if job.state is not JobState.RUNNING or (job.lease_until or 0) >= now:
            raise JobStateConflict(job_id, job.state, "its lease has not expired")
        condition = "#state = :running AND lease_until < :now"
        if job.attempt < max_attempts:
            return self._requeue(job, condition, {":now": n(now)}, ring_at=now)
        error = exhausted_error(max_attempts)
        items = [
            self._job_update(
                job_id,
                "SET #state = :failed, completed_at = :now, expires_at = :expires, "
                "#error = :error, event_pending = :pending "
                "REMOVE lease_until, progress, live_account",
                condition,
                {
                    ":pending": s(EVENT_PENDING),
                    ":failed": s(JobState.FAILED),
                    ":now": n(now),
                    ":running": s(JobState.RUNNING),
                    ":expires": n(int(now) + self.retention),
                    ":error": as_json(error),
                },
                {"#error": "error"},
            ),
            c.move_counters(self.limits, job.account_id, c.FINISH_RUNNING),
        ]
        try:
            self._transact(items)
        except Cancelled as cancelled:
            raise self._conflict(job_id, cancelled.old(0), "its lease has not expired") from None
        return replace(
            job,
            state=JobState.FAILED,
            completed_at=now,
            error=error,
            lease_until=None,
            expires_at=int(now) + self.retention,
            event_pending=True,
        )

    # -- cancel, fail, backlog ----------------------------------------------------------

    def cancel(self, job_id: str, *, now: float) -> Job:
        for _ in range(3):  # the job may move between our read and our write
            job = self.get(job_id)
            if job.state.terminal:
                raise JobStateConflict(job_id, job.state, "it has already ended")
            if job.state is JobState.RUNNING:
                try:
                    self.db.update_item(
                        TableName=self.jobs,
                        Key={"job_id": s(job_id)},
                        UpdateExpression="SET cancel_requested = :true",
                        ConditionExpression="#state = :running",
                        ExpressionAttributeNames={"#state": "state"},
                        ExpressionAttributeValues={
                            ":true": flag(True),
                            ":running": s(JobState.RUNNING),
                        },
                    )
                except ClientError as exc:
                    if error_code(exc) == "ConditionalCheckFailedException":
                        continue
                    raise StorageError(f"cancel failed: {error_code(exc)}") from exc
                return replace(job, cancel_requested=True)
            try:
                return self._drop_queued(job, JobState.CANCELLED, None, now)
            except JobStateConflict:
                continue
        raise JobStateConflict(job_id, None, "it kept changing while being cancelled")

    def fail_queued(self, job_id: str, error: dict[str, Any], *, now: float) -> Job:
        job = self.get(job_id)
        if job.state is not JobState.QUEUED:
            raise JobStateConflict(job_id, job.state, "it is not queued")
        return self._drop_queued(job, JobState.FAILED, error, now)

    def _drop_queued(
        self, job: Job, state: JobState, error: dict[str, Any] | None, now: float
    ) -> Job:
        """queued → cancelled or failed, releasing its ring slot or its backlog place."""
        values: dict[str, Any] = {
            ":end": s(state),
            ":now": n(now),
            ":queued": s(JobState.QUEUED),
            ":expires": n(int(now) + self.retention),
            ":in_ring": flag(job.in_ring),
            ":pending": s(EVENT_PENDING),
        }
        sets = "#state = :end, completed_at = :now, expires_at = :expires"
        sets += ", event_pending = :pending"
        names = None
        if error is not None:
            sets += ", #error = :error"
            values[":error"] = as_json(error)
            names = {"#error": "error"}
        items = [
            self._job_update(
                job.job_id,
                f"SET {sets} REMOVE backlog_account, live_account",
                "#state = :queued AND in_ring = :in_ring",
                values,
                names,
            ),
            c.move_counters(
                self.limits,
                job.account_id,
                c.DROP_FROM_RING if job.in_ring else c.DROP_FROM_BACKLOG,
            ),
        ]
        if job.in_ring and job.route:
            items.append(c.move_route(self.nodes, job.route, -1, must_exist=False))
        try:
            self._transact(items)
        except Cancelled as cancelled:
            raise self._conflict(job.job_id, cancelled.old(0), "it is no longer queued") from None
        return replace(
            job,
            state=state,
            completed_at=now,
            error=error,
            expires_at=int(now) + self.retention,
            event_pending=True,
        )

    # -- events and delivery ------------------------------------------------------------

    def clear_event_pending(self, job_id: str) -> None:
        try:
            # The condition keeps update_item from creating an item for a job gone by TTL.
            self.db.update_item(
                TableName=self.jobs,
                Key={"job_id": s(job_id)},
                UpdateExpression="REMOVE event_pending",
                ConditionExpression="attribute_exists(job_id)",
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise StorageError(f"clear event pending failed: {error_code(exc)}") from exc

    def pending_events(self, *, ended_before: float, limit: int) -> list[str]:
        response = call(
            "read pending events",
            self.db.query,
            TableName=self.jobs,
            IndexName="pending_events",
            KeyConditionExpression="event_pending = :p AND completed_at < :before",
            ExpressionAttributeValues={":p": s(EVENT_PENDING), ":before": n(ended_before)},
            ScanIndexForward=True,
            Limit=limit,
        )
        return [item["job_id"]["S"] for item in response.get("Items", [])]

    def record_delivery(self, job_id: str, delivery: dict[str, Any]) -> None:
        try:
            self.db.update_item(
                TableName=self.jobs,
                Key={"job_id": s(job_id)},
                UpdateExpression="SET webhook = :delivery",
                ConditionExpression="attribute_exists(job_id)",
                ExpressionAttributeValues={":delivery": as_json(delivery)},
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise JobNotFound(job_id) from None
            raise StorageError(f"record delivery failed: {error_code(exc)}") from exc

    def live_jobs(self) -> list[LiveJob]:
        request: dict[str, Any] = {"TableName": self.jobs, "IndexName": "live"}
        found: list[LiveJob] = []
        while True:
            response = call("scan live jobs", self.db.scan, **request)
            for item in response.get("Items", []):
                found.append(
                    LiveJob(
                        job_id=item["job_id"]["S"],
                        account_id=item["account_id"]["S"],
                        state=JobState(item["state"]["S"]),
                        in_ring=get_bool(item, "in_ring"),
                        route=get_s(item, "route"),
                        node_id=get_s(item, "node_id"),
                        lease_until=get_n(item, "lease_until"),
                        ring_at=get_n(item, "ring_at"),
                        tier=get_s(item, "tier") or "free",
                    )
                )
            if "LastEvaluatedKey" not in response:
                return found
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def backlog(self, account_id: str, *, limit: int) -> list[BacklogEntry]:
        response = call(
            "read backlog",
            self.db.query,
            TableName=self.jobs,
            IndexName="backlog",
            KeyConditionExpression="backlog_account = :a",
            ExpressionAttributeValues={":a": s(account_id)},
            ScanIndexForward=True,
            Limit=limit,
        )
        return [
            BacklogEntry(
                job_id=item["job_id"]["S"],
                account_id=item["account_id"]["S"],
                tier=get_s(item, "tier") or "free",
                models=get_json(item, "models") or [],
            )
            for item in response.get("Items", [])
        ]

    def reroute(self, job_id: str, *, from_route: str, to_route: str) -> None:
        items = [
            self._job_update(
                job_id,
                "SET route = :to",
                "#state = :queued AND in_ring = :true AND route = :from",
                {
                    ":to": s(to_route),
                    ":from": s(from_route),
                    ":queued": s(JobState.QUEUED),
                    ":true": flag(True),
                },
            ),
            c.move_route(self.nodes, from_route, -1, must_exist=False),
            c.move_route(self.nodes, to_route, 1, must_exist=False),
        ]
        try:
            self._transact(items)
        except Cancelled as cancelled:
            raise self._conflict(
                job_id, cancelled.old(0), f"it is not queued on {from_route}"
            ) from None

    def promote(
        self,
        job_id: str,
        account_id: str,
        share: RingShare,
        *,
        route: str,
        now: float | None = None,
    ) -> None:
        sets = "in_ring = :true, route = :route, live_account = :account"
        values = {
            ":true": flag(True),
            ":route": s(route),
            ":queued": s(JobState.QUEUED),
            ":account": s(account_id),
        }
        if now is not None:
            sets += ", ring_at = :now"
            values[":now"] = n(now)
        items = [
            self._job_update(
                job_id,
                f"SET {sets} REMOVE backlog_account",
                "#state = :queued AND attribute_exists(backlog_account)",
                values,
            ),
            c.move_counters(
                self.limits,
                account_id,
                c.PROMOTE,
                condition=c.SLOT_FREE,
                values=c.limit_values(slots=share.ring_slots, conc=share.concurrency),
            ),
            c.move_route(self.nodes, route, 1, must_exist=True),
        ]
        try:
            self._transact(items)
        except Cancelled as cancelled:
            if cancelled.failed(0):
                raise self._conflict(job_id, cancelled.old(0), "it left the backlog") from None
            if cancelled.failed(1):
                raise RingFull() from None
            raise RouteGone() from None
