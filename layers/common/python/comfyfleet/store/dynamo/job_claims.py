"""The agent's side of a running job: the claim (and taking over a stale one), its lease,
its progress and the cancel flag it polls."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from comfyfleet.domain import JobState, RingMessage
from comfyfleet.errors import JobNotFound, StorageError
from comfyfleet.store.dynamo import counters as c
from comfyfleet.store.dynamo.codec import (
    as_json,
    call,
    error_code,
    flag,
    get_int,
    get_n,
    job_from_item,
    n,
    s,
)
from comfyfleet.store.dynamo.job_base import Cancelled
from comfyfleet.store.dynamo.job_ends import JobEnds
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
