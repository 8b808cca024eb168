"""How a job gets into the ring: admission, the backlog, promotion from it, and rerouting.

Each move is one transaction with the account's counters (and the route's queue length),
so a job holds a ring slot exactly when the counters say it does.
"""

from __future__ import annotations

from dataclasses import replace

from comfyfleet.domain import (
    QUEUE_FULL_RETRY_AFTER,
    Counters,
    Job,
    JobState,
    Limits,
    RingShare,
    rate_retry_after,
    rate_window,
)
from comfyfleet.errors import AccountNotFound, LimitExceeded, StorageError
from comfyfleet.store.dynamo import counters as c
from comfyfleet.store.dynamo.codec import call, flag, get_int, get_json, get_s, job_to_item, n, s
from comfyfleet.store.dynamo.job_base import Cancelled, JobTable
from comfyfleet.store.ports import BacklogEntry, RingFull, RingHasRoom, RouteGone


class JobAdmission(JobTable):
    """submit → ring or backlog; backlog → ring; one route's ring place → another's."""

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
