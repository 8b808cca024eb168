"""The prompt queue and the history, shared by the HTTP handlers and the worker thread.

Prompts run in ``number`` order (``front: true`` negates it, so it jumps ahead), as ComfyUI's
heap does. Every change announces ``queue_remaining`` (pending + running) to all sockets.
The history is in memory, at most 10,000 entries, oldest dropped first.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAXIMUM_HISTORY_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class QueueItem:
    """A validated prompt waiting to run (ComfyUI's 5-tuple)."""

    number: float
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]

    @property
    def client_id(self) -> str | None:
        value = self.extra_data.get("client_id")
        return value if isinstance(value, str) else None

    def as_list(self) -> list[Any]:
        """As ``/queue`` and ``/history`` show it: ``[number, id, prompt, extra, outputs]``."""
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


class PromptQueue:
    """Pending prompts, the running one, and the history of finished ones."""

    def __init__(self, on_change: Callable[[int], None]) -> None:
        self._on_change = on_change  # called with queue_remaining, under the lock
        self._lock = threading.RLock()
        self._wakeup = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, QueueItem]] = []
        self._order = itertools.count()  # ties keep submission order
        self._running: dict[str, QueueItem] = {}
        self._history: dict[str, dict[str, Any]] = {}
        self._closed = False

    def _changed(self) -> None:
        self._on_change(len(self._heap) + len(self._running))

    def remaining(self) -> int:
        with self._lock:
            return len(self._heap) + len(self._running)

    def put(self, item: QueueItem) -> None:
        with self._lock:
            heapq.heappush(self._heap, (item.number, next(self._order), item))
            self._changed()
            self._wakeup.notify()

    def next(self) -> QueueItem | None:
        """Block until a prompt is due and mark it running; None once the queue is closed."""
        with self._wakeup:
            while not self._heap and not self._closed:
                self._wakeup.wait()
            if self._closed:
                return None
            _, _, item = heapq.heappop(self._heap)
            self._running[item.prompt_id] = item
            self._changed()
            return item

    def close(self) -> None:
        """Wake the worker for good (shutdown); pending prompts are dropped."""
        with self._wakeup:
            self._closed = True
            self._wakeup.notify_all()

    def finish(
        self, item: QueueItem, outputs: dict[str, Any], meta: dict[str, Any], status: dict[str, Any]
    ) -> None:
        """Move ``item`` from running to the history."""
        with self._lock:
            self._running.pop(item.prompt_id, None)
            if len(self._history) > MAXIMUM_HISTORY_SIZE:
                self._history.pop(next(iter(self._history)))
            self._history[item.prompt_id] = {
                "prompt": item.as_list(),
                "outputs": outputs,
                "status": status,
                "meta": meta,
            }
            self._changed()

    def is_running(self, prompt_id: str) -> bool:
        with self._lock:
            return prompt_id in self._running

    def snapshot(self) -> dict[str, list[list[Any]]]:
        """``GET /queue``: the running prompt and the pending ones in run order."""
        with self._lock:
            pending = [entry[2].as_list() for entry in sorted(self._heap)]
            running = [item.as_list() for item in self._running.values()]
        return {"queue_running": running, "queue_pending": pending}

    def clear(self) -> None:
        with self._lock:
            self._heap = []
            self._changed()

    def delete(self, prompt_id: Any) -> bool:
        """Remove a pending prompt; False if it is not pending (running ones stay)."""
        with self._lock:
            for index, (_, _, item) in enumerate(self._heap):
                if item.prompt_id == prompt_id:
                    self._heap.pop(index)
                    heapq.heapify(self._heap)
                    self._changed()
                    return True
        return False

    def history(self, prompt_id: str) -> dict[str, Any]:
        """``GET /history/{id}``: ``{id: entry}``, or ``{}`` while pending, running or unknown."""
        with self._lock:
            entry = self._history.get(prompt_id)
            return {prompt_id: entry} if entry is not None else {}

    def history_page(self, max_items: int | None = None, offset: int = -1) -> dict[str, Any]:
        """``GET /history``: oldest first; by default the last ``max_items`` entries."""
        with self._lock:
            if offset < 0 and max_items is not None:
                offset = len(self._history) - max_items
            page: dict[str, Any] = {}
            for index, (prompt_id, entry) in enumerate(self._history.items()):
                if index < offset:
                    continue
                page[prompt_id] = entry
                if max_items is not None and len(page) >= max_items:
                    break
            return page

    def clear_history(self) -> None:
        with self._lock:
            self._history.clear()

    def delete_history(self, prompt_id: Any) -> None:
        with self._lock:
            self._history.pop(prompt_id, None)
