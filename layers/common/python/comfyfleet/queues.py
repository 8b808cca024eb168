"""The ring: SQS FIFO queues of job messages (one shared, one per node for cache affinity).

A message body is small — a RingMessage — and its deduplication id is the job id. The
group id gives each message its own group: a message stays in flight while its job runs,
so a group per account would hold the account's next message back until then. The queues are
high-throughput FIFO queues, which deduplicate within a message group only: the group is
derived from the job (``RingMessage.group_id``), so every copy of a job's message — a resend,
a reroute, a drained node's — lands in one group and is dropped within the 5 minutes.
``MemoryQueues`` models SQS FIFO faithfully (oldest available message first; a group with
a message in flight yields nothing more; visibility timeouts; receive counts and a DLQ)
for unit tests and the fleet simulation.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from comfyfleet.domain import RingMessage
from comfyfleet.errors import StorageError
from comfyfleet.resources import SHARED_DLQ, Queue, node_queue_name, queue_attributes
from comfyfleet.settings import Settings

DEDUP_WINDOW_SECONDS = 300


@dataclass(frozen=True, slots=True)
class Received:
    message: RingMessage
    receipt: str
    queue_url: str
    receive_count: int


def encode_message(message: RingMessage) -> str:
    return json.dumps(
        {
            "job_id": message.job_id,
            "account_id": message.account_id,
            "route": message.route,
            "concurrency": message.concurrency,
            "ring_slots": message.ring_slots,
        },
        separators=(",", ":"),
    )


def decode_message(body: str) -> RingMessage:
    data = json.loads(body)
    return RingMessage(
        job_id=str(data["job_id"]),
        account_id=str(data["account_id"]),
        route=str(data["route"]),
        concurrency=int(data["concurrency"]),
        ring_slots=int(data["ring_slots"]),
    )


class JobQueues(Protocol):
    def send(self, queue_url: str, message: RingMessage, *, group_id: str | None = None) -> None:
        """Send to the back of the queue (``group_id`` overrides the message's own: tests of
        group order only, since a copy in another group would escape deduplication)."""
        ...

    def receive(
        self, queue_url: str, *, wait_seconds: int, visibility_seconds: int
    ) -> Received | None:
        """At most one message (an agent works on one job at a time)."""
        ...

    def delete(self, received: Received) -> None: ...

    def change_visibility(self, received: Received, seconds: int) -> None: ...


class SqsJobQueues:
    def __init__(self, sqs: Any) -> None:
        self.sqs = sqs

    def send(self, queue_url: str, message: RingMessage, *, group_id: str | None = None) -> None:
        self._call(
            "send message",
            self.sqs.send_message,
            QueueUrl=queue_url,
            MessageBody=encode_message(message),
            MessageGroupId=group_id or message.group_id,
            MessageDeduplicationId=message.job_id,
        )

    def receive(
        self, queue_url: str, *, wait_seconds: int, visibility_seconds: int
    ) -> Received | None:
        response = self._call(
            "receive message",
            self.sqs.receive_message,
            QueueUrl=queue_url,
            MaxNumberOfMessages=1,
            WaitTimeSeconds=wait_seconds,
            VisibilityTimeout=visibility_seconds,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        for raw in response.get("Messages", []):
            count = int(raw.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
            return Received(decode_message(raw["Body"]), raw["ReceiptHandle"], queue_url, count)
        return None

    def delete(self, received: Received) -> None:
        self._call(
            "delete message",
            self.sqs.delete_message,
            QueueUrl=received.queue_url,
            ReceiptHandle=received.receipt,
        )

    def change_visibility(self, received: Received, seconds: int) -> None:
        self._call(
            "change visibility",
            self.sqs.change_message_visibility,
            QueueUrl=received.queue_url,
            ReceiptHandle=received.receipt,
            VisibilityTimeout=seconds,
        )

    def create_node_queue(self, settings: Settings, node_id: str) -> str:
        """The node's FIFO queue (created if missing), dead-lettering to the shared DLQ."""
        dlq = self._call("find DLQ", self.sqs.get_queue_url, QueueName=SHARED_DLQ.name(settings))
        dlq_arn = self._call(
            "read DLQ",
            self.sqs.get_queue_attributes,
            QueueUrl=dlq["QueueUrl"],
            AttributeNames=["QueueArn"],
        )["Attributes"]["QueueArn"]
        queue = Queue(f"node-{node_id}", fifo=True, dlq_logical=SHARED_DLQ.logical)
        url: str = self._call(
            "create node queue",
            self.sqs.create_queue,
            QueueName=node_queue_name(settings, node_id),
            Attributes=queue_attributes(queue, dlq_arn),
        )["QueueUrl"]
        return url

    def queue_url(self, name: str) -> str:
        url: str = self._call("find queue", self.sqs.get_queue_url, QueueName=name)["QueueUrl"]
        return url

    def _call(self, action: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"{action} failed: {exc}") from exc


@dataclass
class _Message:
    message_id: int
    body: RingMessage
    group: str
    sent_at: float
    visible_at: float
    receive_count: int = 0
    receipt: str | None = None


@dataclass
class _FifoQueue:
    messages: list[_Message] = field(default_factory=list)  # in send order
    # (group, dedup id) → sent at: deduplication per message group, as the deployment's
    # high-throughput queues have it (DeduplicationScope=messageGroup).
    dedup: dict[tuple[str, str], float] = field(default_factory=dict)
    dlq: list[_Message] = field(default_factory=list)


class MemoryQueues:
    """SQS FIFO semantics in memory, on a caller's clock (real or simulated time)."""

    def __init__(
        self, clock: Callable[[], float], *, visibility_seconds: int = 60, max_receives: int = 10
    ) -> None:
        self.clock = clock
        self.visibility_seconds = visibility_seconds
        self.max_receives = max_receives
        self.queues: dict[str, _FifoQueue] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def queue(self, url: str) -> _FifoQueue:
        return self.queues.setdefault(url, _FifoQueue())

    def send(self, queue_url: str, message: RingMessage, *, group_id: str | None = None) -> None:
        with self._lock:
            now = self.clock()
            queue = self.queue(queue_url)
            group = group_id or message.group_id
            sent = queue.dedup.get((group, message.job_id))
            if sent is not None and now - sent < DEDUP_WINDOW_SECONDS:
                return  # SQS accepts and drops a duplicate within the window
            queue.dedup[(group, message.job_id)] = now
            queue.messages.append(_Message(next(self._ids), message, group, now, visible_at=now))

    def receive(
        self, queue_url: str, *, wait_seconds: int = 0, visibility_seconds: int | None = None
    ) -> Received | None:
        """The oldest visible message whose group has nothing in flight (no waiting: the
        simulation advances time itself; real long polling is SQS's job)."""
        with self._lock:
            now = self.clock()
            queue = self.queue(queue_url)
            busy: set[str] = set()
            for message in list(queue.messages):
                if message.group in busy:
                    continue
                if message.visible_at > now:
                    busy.add(message.group)  # in flight: its group yields nothing more
                    continue
                if message.receive_count >= self.max_receives:
                    queue.messages.remove(message)
                    queue.dlq.append(message)
                    continue
                message.receive_count += 1
                message.receipt = f"{message.message_id}:{message.receive_count}"
                message.visible_at = now + (visibility_seconds or self.visibility_seconds)
                return Received(message.body, message.receipt, queue_url, message.receive_count)
            return None

    def _find(self, received: Received) -> _Message | None:
        queue = self.queue(received.queue_url)
        return next((m for m in queue.messages if m.receipt == received.receipt), None)

    def delete(self, received: Received) -> None:
        with self._lock:
            message = self._find(received)
            if message is not None:
                self.queue(received.queue_url).messages.remove(message)

    def change_visibility(self, received: Received, seconds: int) -> None:
        with self._lock:
            message = self._find(received)
            if message is not None:
                message.visible_at = self.clock() + seconds

    def depth(self, queue_url: str) -> int:
        with self._lock:
            return len(self.queue(queue_url).messages)

    def dead_letters(self, queue_url: str) -> list[RingMessage]:
        with self._lock:
            return [message.body for message in self.queue(queue_url).dlq]
