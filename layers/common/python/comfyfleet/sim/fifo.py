"""SQS FIFO, as the simulation needs it at a million messages: O(log n) per call.

The same rules as comfyfleet.queues.MemoryQueues (and SQS): a receive returns the oldest
visible message among the groups with nothing in flight; a group with a message in flight
yields nothing more until that message is deleted or its visibility runs out; each queue
on its own. The test tests/integration/test_sim_fifo_moto.py checks the order against moto.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class FifoMessage(Generic[T]):
    seq: int  # send order: older messages have smaller numbers
    group: str
    body: T
    visible_at: float = 0.0
    receive_count: int = 0
    in_flight: bool = False


@dataclass
class FifoQueue(Generic[T]):
    """One FIFO queue: per-group order, and the oldest available group head first."""

    _groups: dict[str, deque[FifoMessage[T]]] = field(default_factory=dict)
    _ready: list[tuple[int, str]] = field(default_factory=list)  # (head seq, group), lazy
    _expiries: list[tuple[float, int, str]] = field(default_factory=list)  # in-flight, lazy
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    size: int = 0

    def send(self, group: str, body: T) -> FifoMessage[T]:
        """Append ``body`` to the back of ``group`` (and of the queue)."""
        message = FifoMessage(next(self._seq), group, body)
        messages = self._groups.get(group)
        if messages is None:
            messages = self._groups[group] = deque()
        messages.append(message)
        if len(messages) == 1:
            heapq.heappush(self._ready, (message.seq, group))
        self.size += 1
        return message

    def receive(self, now: float, visibility: float) -> FifoMessage[T] | None:
        """The oldest available message, now in flight for ``visibility`` seconds."""
        self._expire(now)
        while self._ready:
            seq, group = heapq.heappop(self._ready)
            messages = self._groups.get(group)
            if not messages or messages[0].seq != seq or messages[0].in_flight:
                continue  # a stale entry: that head was deleted, or is in flight
            head = messages[0]
            head.in_flight = True
            head.receive_count += 1
            head.visible_at = now + visibility
            heapq.heappush(self._expiries, (head.visible_at, head.seq, group))
            return head
        return None

    def change_visibility(self, message: FifoMessage[T], now: float, seconds: float) -> None:
        """Keep an in-flight message hidden ``seconds`` from ``now`` (0: visible at once)."""
        if not message.in_flight:
            return
        message.visible_at = now + seconds
        heapq.heappush(self._expiries, (message.visible_at, message.seq, message.group))
        self._expire(now)

    def delete(self, message: FifoMessage[T]) -> None:
        """Delete a received message; its group's next message becomes available."""
        messages = self._groups.get(message.group)
        if not messages or messages[0] is not message:
            return  # only a group's head can be in flight, hence deleted
        messages.popleft()
        self.size -= 1
        if messages:
            heapq.heappush(self._ready, (messages[0].seq, message.group))
        else:
            del self._groups[message.group]

    def drain(self) -> list[T]:
        """Remove every message, oldest first (a reaper moving a dead node's queue)."""
        bodies = sorted(
            (m for messages in self._groups.values() for m in messages), key=lambda m: m.seq
        )
        self._groups.clear()
        self._ready.clear()
        self._expiries.clear()
        self.size = 0
        return [m.body for m in bodies]

    def _expire(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            visible_at, seq, group = heapq.heappop(self._expiries)
            messages = self._groups.get(group)
            if not messages or messages[0].seq != seq:
                continue
            head = messages[0]
            if head.in_flight and head.visible_at == visible_at:
                head.in_flight = False  # its visibility ran out: available again, in place
                heapq.heappush(self._ready, (head.seq, group))
