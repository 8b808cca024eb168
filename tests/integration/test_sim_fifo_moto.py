"""The simulation's SQS FIFO model serves messages in the order moto's SQS FIFO does:
the same sends, receives, deletes and releases give the same message at every receive."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from comfyfleet.sim.fifo import FifoMessage, FifoQueue

REGION = "us-east-1"
HIDDEN = 600  # seconds: longer than the test, so only a release makes a message visible


@pytest.fixture
def sqs() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client(
            "sqs",
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


def _fifo(sqs: Any, name: str) -> str:
    url: str = sqs.create_queue(QueueName=f"{name}.fifo", Attributes={"FifoQueue": "true"})[
        "QueueUrl"
    ]
    return url


class _Both:
    """One queue in moto and in the model, driven by the same steps."""

    def __init__(self, sqs: Any, name: str) -> None:
        self.sqs = sqs
        self.url = _fifo(sqs, name)
        self.model: FifoQueue[str] = FifoQueue()
        self.in_flight: dict[str, tuple[str, FifoMessage[str]]] = {}  # body → (receipt, model)
        self.now = 0.0

    def send(self, group: str, body: str) -> None:
        self.sqs.send_message(
            QueueUrl=self.url, MessageBody=body, MessageGroupId=group, MessageDeduplicationId=body
        )
        self.model.send(group, body)

    def receive(self) -> tuple[str | None, str | None]:
        self.now += 1.0
        got = self.sqs.receive_message(
            QueueUrl=self.url, MaxNumberOfMessages=1, VisibilityTimeout=HIDDEN
        ).get("Messages", [])
        message = self.model.receive(self.now, HIDDEN)
        moto_body = got[0]["Body"] if got else None
        if got and message is not None:
            self.in_flight[moto_body or ""] = (got[0]["ReceiptHandle"], message)
        return moto_body, (message.body if message is not None else None)

    def delete(self, body: str) -> None:
        receipt, message = self.in_flight.pop(body)
        self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=receipt)
        self.model.delete(message)

    def release(self, body: str) -> None:
        """Visibility 0: what a dead agent's expired visibility amounts to."""
        receipt, message = self.in_flight.pop(body)
        self.sqs.change_message_visibility(
            QueueUrl=self.url, ReceiptHandle=receipt, VisibilityTimeout=0
        )
        self.model.change_visibility(message, self.now, 0)


def test_a_group_with_a_message_in_flight_yields_nothing_until_it_is_deleted(sqs: Any) -> None:
    queue = _Both(sqs, "blocking")
    for group, body in [("a", "a1"), ("a", "a2"), ("b", "b1"), ("c", "c1"), ("b", "b2")]:
        queue.send(group, body)

    served = [queue.receive() for _ in range(4)]
    queue.delete("b1")
    after_b = queue.receive()
    queue.release("a1")
    after_release = queue.receive()

    assert served == [("a1", "a1"), ("b1", "b1"), ("c1", "c1"), (None, None)]
    assert after_b == ("b2", "b2")
    assert after_release == ("a1", "a1")  # back in place, ahead of a2


def test_the_model_serves_in_moto_order_on_a_seeded_mix_of_steps(sqs: Any) -> None:
    rng = random.Random(9)
    queues = [_Both(sqs, "ring-one"), _Both(sqs, "ring-two")]  # each queue on its own
    order: list[tuple[str | None, str | None]] = []
    for step in range(160):
        queue = rng.choice(queues)
        roll = rng.random()
        if roll < 0.45:
            queue.send(f"g{rng.randrange(4)}", f"m{step}")
        elif roll < 0.75 or not queue.in_flight:
            order.append(queue.receive())
        elif roll < 0.92:
            queue.delete(rng.choice(sorted(queue.in_flight)))
        else:
            queue.release(rng.choice(sorted(queue.in_flight)))

    assert len(order) > 40
    assert sum(moto is not None for moto, _ in order) > 20
    assert [moto for moto, _ in order] == [model for _, model in order]
