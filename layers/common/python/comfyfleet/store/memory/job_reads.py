"""Reads of the jobs, and the event and delivery bookkeeping that moves no counters."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from comfyfleet.domain import Job, JobState
from comfyfleet.store.memory.job_base import JobTable
from comfyfleet.store.ports import LiveJob, Page, decode_cursor, encode_cursor


class JobReads(JobTable):
    """An account's history, the live jobs, and which ended jobs still owe an event."""

    def list_for_account(
        self, account_id: str, *, state: JobState | None, limit: int, cursor: str | None
    ) -> Page:
        return self._page(lambda job: job.account_id == account_id, state, limit, cursor)

    def list_all(
        self, *, state: JobState | None, limit: int, cursor: str | None, now: float
    ) -> Page:
        oldest = now - self.m.settings.history_retention_days * 86400 - 86400
        return self._page(lambda job: job.created_at >= oldest, state, limit, cursor)

    def _page(
        self, keep: Callable[[Job], bool], state: JobState | None, limit: int, cursor: str | None
    ) -> Page:
        with self.m.lock:
            after = decode_cursor(cursor) if cursor else None
            mine = sorted(
                (j for j in self.m.jobs.values() if keep(j)),
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
