"""The SQS FIFO behaviour the design relies on, pinned on moto — and the in-memory model
(used by unit tests and the fleet simulation) behaving the same on the same steps."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from comfyfleet.aws import client
from comfyfleet.clock import FakeClock
from comfyfleet.domain import RingMessage
from comfyfleet.queues import JobQueues, MemoryQueues, SqsJobQueues, decode_message
from comfyfleet.resources import RING_MAX_RECEIVES, Provisioned
from tests.integration.conftest import REGION


@dataclass
class Ring:
    queues: JobQueues
    url: str
    dlq_url: str

    def dead_letters(self) -> list[str]:
        if isinstance(self.queues, MemoryQueues):
            return [m.job_id for m in self.queues.dead_letters(self.url)]
        sqs = client("sqs", region=REGION)
        bodies = sqs.receive_message(QueueUrl=self.dlq_url, MaxNumberOfMessages=10)
        return [decode_message(m["Body"]).job_id for m in bodies.get("Messages", [])]


@pytest.fixture(params=["moto", "memory"])
def ring(request: pytest.FixtureRequest) -> Iterator[Ring]:
    if request.param == "memory":
        yield Ring(MemoryQueues(FakeClock().now, max_receives=RING_MAX_RECEIVES), "shared", "")
    else:
        aws: Provisioned = request.getfixturevalue("aws")
        queues = SqsJobQueues(client("sqs", region=REGION))
        yield Ring(queues, aws.queue_urls["shared"], aws.queue_urls["shared-dlq"])


def msg(job_id: str, account: str = "acct") -> RingMessage:
    return RingMessage(job_id, account, "shared", 2, 2)


def take(ring: Ring) -> str | None:
    received = ring.queues.receive(ring.url, wait_seconds=0, visibility_seconds=60)
    return received.message.job_id if received else None


def test_the_oldest_available_message_comes_first_across_groups(ring: Ring) -> None:
    for job in ("j1", "j2", "j3"):
        ring.queues.send(ring.url, msg(job), group_id=f"g-{job}")

    assert [take(ring), take(ring), take(ring), take(ring)] == ["j1", "j2", "j3", None]


def test_a_group_with_a_message_in_flight_yields_nothing_more(ring: Ring) -> None:
    ring.queues.send(ring.url, msg("a1"), group_id="A")
    ring.queues.send(ring.url, msg("a2"), group_id="A")
    ring.queues.send(ring.url, msg("b1"), group_id="B")

    first = ring.queues.receive(ring.url, wait_seconds=0, visibility_seconds=60)
    assert first is not None and first.message.job_id == "a1"
    assert take(ring) == "b1"  # a2 waits behind a1, which is in flight
    assert take(ring) is None
    ring.queues.delete(first)
    assert take(ring) == "a2"


def test_a_message_made_visible_again_is_received_again_and_counted(ring: Ring) -> None:
    ring.queues.send(ring.url, msg("j1"))
    first = ring.queues.receive(ring.url, wait_seconds=0, visibility_seconds=60)
    assert first is not None and first.receive_count == 1

    ring.queues.change_visibility(first, 0)
    second = ring.queues.receive(ring.url, wait_seconds=0, visibility_seconds=60)

    assert second is not None and second.message.job_id == "j1" and second.receive_count == 2


def test_a_job_sent_twice_within_the_window_is_one_message(ring: Ring) -> None:
    ring.queues.send(ring.url, msg("j1"))
    ring.queues.send(ring.url, msg("j1"))

    assert [take(ring), take(ring)] == ["j1", None]


def test_a_message_received_too_often_goes_to_the_dead_letter_queue(ring: Ring) -> None:
    ring.queues.send(ring.url, msg("poison"))
    for _ in range(RING_MAX_RECEIVES):
        received = ring.queues.receive(ring.url, wait_seconds=0, visibility_seconds=60)
        assert received is not None
        ring.queues.change_visibility(received, 0)

    assert take(ring) is None
    assert ring.dead_letters() == ["poison"]
