"""Deduplication on high-throughput FIFO queues is per message group: every copy of a job's
message must land in the job's own group for SQS to drop it (MemoryQueues models the
deployment's DeduplicationScope=messageGroup)."""

from __future__ import annotations

from dataclasses import replace

from comfyfleet.clock import FakeClock
from comfyfleet.domain import SHARED_ROUTE, RingMessage
from comfyfleet.queues import DEDUP_WINDOW_SECONDS, MemoryQueues

QUEUE = "memory://shared"
FIRST = RingMessage("01JOB", "acct_a", "node-a", concurrency=2, ring_slots=2)


def test_every_copy_of_a_jobs_message_is_in_the_jobs_own_group() -> None:
    copies = [
        replace(FIRST, route=SHARED_ROUTE),  # a drained node's message, or a reroute
        replace(FIRST, concurrency=10, ring_slots=3),  # a resend after a tier change
    ]

    assert {copy.group_id for copy in copies} == {FIRST.group_id}
    assert RingMessage("01OTHER", "acct_a", "node-a", 2, 2).group_id != FIRST.group_id


def test_a_copy_sent_within_the_window_is_dropped_whatever_its_route_or_share() -> None:
    clock = FakeClock()
    queues = MemoryQueues(clock.now)
    queues.send(QUEUE, FIRST)

    queues.send(QUEUE, replace(FIRST, route=SHARED_ROUTE))
    queues.send(QUEUE, replace(FIRST, concurrency=10, ring_slots=3))

    assert queues.depth(QUEUE) == 1
    clock.advance(DEDUP_WINDOW_SECONDS)
    queues.send(QUEUE, FIRST)
    assert queues.depth(QUEUE) == 2  # the window is over: SQS keeps the copy


def test_the_same_job_in_another_group_is_not_deduplicated() -> None:
    # Why no production send overrides the group: the copy would escape deduplication.
    queues = MemoryQueues(FakeClock().now)
    queues.send(QUEUE, FIRST)

    queues.send(QUEUE, FIRST, group_id="another-group")

    assert queues.depth(QUEUE) == 2
