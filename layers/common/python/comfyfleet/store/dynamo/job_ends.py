"""How a job leaves the running or the queued state: finished, released, handed back,
requeued after its lease ran out, cancelled or failed; each with the counters it frees, in
one transaction."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from botocore.exceptions import ClientError

from comfyfleet.domain import Job, JobState
from comfyfleet.errors import JobStateConflict, StorageError
from comfyfleet.store.dynamo import counters as c
from comfyfleet.store.dynamo.codec import EVENT_PENDING, as_json, error_code, flag, n, s
from comfyfleet.store.dynamo.job_base import Cancelled, JobTable
from comfyfleet.store.ports import exhausted_error


class JobEnds(JobTable):
    """running → terminal or back to queued; queued → cancelled or failed."""

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

    def hand_back(
        self, job_id: str, node_id: str, *, now: float, route: str, environment_id: str
    ) -> Job:
        job = self.get(job_id)
        if job.state is not JobState.RUNNING or job.node_id != node_id:
            raise JobStateConflict(job_id, job.state, "it is not running on this node")
        declined = [*job.handed_back_by, environment_id]
        handed = replace(job, route=route, attempt=max(0, job.attempt - 1), handed_back_by=declined)
        sets = "route = :route, attempt = :attempt, handed_back_by = :declined"
        values = {
            ":node": s(node_id),
            ":route": s(route),
            ":attempt": n(handed.attempt),
            ":declined": as_json(declined),
        }
        condition = "#state = :running AND node_id = :node"
        return self._requeue(handed, condition, values, ring_at=now, sets=sets)

    def _requeue(
        self,
        job: Job,
        condition: str,
        values: dict[str, Any],
        *,
        ring_at: float | None = None,
        sets: str = "",
    ) -> Job:
        """Back in the ring, its message on ``job.route``: the counts move with it."""
        sets = "#state = :queued, in_ring = :true" + (f", {sets}" if sets else "")
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
