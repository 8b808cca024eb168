"""Reads of the jobs table, and the event and delivery bookkeeping: single-item writes that
move no counters, so none of them needs a transaction."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from comfyfleet.domain import Job, JobState
from comfyfleet.errors import JobNotFound, StorageError
from comfyfleet.ids import ulid_time
from comfyfleet.store.dynamo.codec import (
    EVENT_PENDING,
    as_json,
    call,
    created_day,
    error_code,
    get_bool,
    get_n,
    get_s,
    job_from_item,
    n,
    s,
)
from comfyfleet.store.dynamo.job_base import JobTable
from comfyfleet.store.ports import LiveJob, Page, decode_cursor, encode_cursor


class JobReads(JobTable):
    """An account's history, the live jobs, and which ended jobs still owe an event."""

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
        if cursor:
            job_id = decode_cursor(cursor)
            request["ExclusiveStartKey"] = {"account_id": s(account_id), "job_id": s(job_id)}
        jobs, more = self._query_jobs(request, state, limit)
        next_cursor = encode_cursor(jobs[-1].job_id) if more and jobs else None
        return Page(jobs=jobs, cursor=next_cursor)

    def list_all(
        self, *, state: JobState | None, limit: int, cursor: str | None, now: float
    ) -> Page:
        """The by_day index, a day at a time from the cursor's day (or today) back. A page
        filled exactly gets a cursor though nothing may follow (the next page is empty)."""
        after = decode_cursor(cursor) if cursor else None
        day = ulid_time(after) if after else now
        oldest = now - self.retention - 86400
        jobs: list[Job] = []
        while day >= oldest and len(jobs) < limit:
            jobs.extend(self._day_page(created_day(day), state, limit - len(jobs), after))
            day -= 86400
            after = None
        next_cursor = encode_cursor(jobs[-1].job_id) if len(jobs) >= limit else None
        return Page(jobs=jobs, cursor=next_cursor)

    def _day_page(
        self, day: str, state: JobState | None, limit: int, after: str | None
    ) -> list[Job]:
        """Up to ``limit`` of one day's jobs, newest first, after ``after``."""
        request: dict[str, Any] = {
            "TableName": self.jobs,
            "IndexName": "by_day",
            "KeyConditionExpression": "created_day = :d",
            "ExpressionAttributeValues": {":d": s(day)},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if after is not None:
            request["ExclusiveStartKey"] = {"created_day": s(day), "job_id": s(after)}
        jobs, _ = self._query_jobs(request, state, limit)
        return jobs

    def _query_jobs(
        self, request: dict[str, Any], state: JobState | None, limit: int
    ) -> tuple[list[Job], bool]:
        """Up to ``limit`` jobs of one query (in ``state``, when given); whether it has more.
        A filter can leave a page short: it reads on until the page is full or done."""
        if state is not None:
            request["FilterExpression"] = "#state = :state"
            request["ExpressionAttributeNames"] = {"#state": "state"}
            request["ExpressionAttributeValues"][":state"] = s(state.value)
        jobs: list[Job] = []
        while True:
            response = call("list jobs", self.db.query, **request)
            jobs.extend(job_from_item(item) for item in response.get("Items", []))
            last = response.get("LastEvaluatedKey")
            if last is None or len(jobs) >= limit:
                return jobs[:limit], last is not None
            request["ExclusiveStartKey"] = last
            request["Limit"] = limit - len(jobs)

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
