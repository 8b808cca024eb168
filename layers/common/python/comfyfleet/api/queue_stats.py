"""Depth and oldest age of each queue, for ``GET /v1/admin/queues``.

SQS reports depths; it has no attribute for the age of the oldest message, so that comes
from CloudWatch's ``ApproximateAgeOfOldestMessage`` (one GetMetricData for all queues),
and is null while CloudWatch has no datapoint yet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from comfyfleet.errors import StorageError
from comfyfleet.queues import MemoryQueues

logger = logging.getLogger(__name__)

QueueKind = Literal["shared", "node", "webhooks", "dead_letter"]
_AGE_WINDOW_SECONDS = 600
_DEPTHS = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)


@dataclass(frozen=True, slots=True)
class QueueRef:
    name: str
    kind: QueueKind
    url: str


@dataclass(frozen=True, slots=True)
class QueueStats:
    ref: QueueRef
    visible: int
    in_flight: int
    delayed: int
    oldest_age_seconds: float | None


class QueueInspector(Protocol):
    def stats(self, queues: Sequence[QueueRef]) -> list[QueueStats]:
        """Each queue's figures; a queue that no longer exists is left out."""
        ...


class SqsQueueInspector:
    def __init__(self, sqs: Any, cloudwatch: Any) -> None:
        self.sqs = sqs
        self.cloudwatch = cloudwatch

    def stats(self, queues: Sequence[QueueRef]) -> list[QueueStats]:
        ages = self._oldest_ages([ref.name for ref in queues])
        found: list[QueueStats] = []
        for ref in queues:
            try:
                attributes = self.sqs.get_queue_attributes(
                    QueueUrl=ref.url, AttributeNames=list(_DEPTHS)
                )["Attributes"]
            except ClientError as exc:
                if "NonExistentQueue" in str(exc.response.get("Error", {}).get("Code", "")):
                    continue
                raise StorageError(f"read queue {ref.name} failed") from exc
            except BotoCoreError as exc:
                raise StorageError(f"read queue {ref.name} failed: {exc}") from exc
            visible, in_flight, delayed = (int(attributes.get(name, 0)) for name in _DEPTHS)
            found.append(QueueStats(ref, visible, in_flight, delayed, ages.get(ref.name)))
        return found

    def _oldest_ages(self, names: list[str]) -> dict[str, float]:
        """Latest ApproximateAgeOfOldestMessage per queue; empty when CloudWatch fails."""
        if not names:
            return {}
        now = time.time()
        queries = [
            {
                "Id": f"q{index}",
                "MetricStat": {
                    "Metric": {
                        "Namespace": "AWS/SQS",
                        "MetricName": "ApproximateAgeOfOldestMessage",
                        "Dimensions": [{"Name": "QueueName", "Value": name}],
                    },
                    "Period": 60,
                    "Stat": "Maximum",
                },
                "ReturnData": True,
            }
            for index, name in enumerate(names)
        ]
        try:
            response = self.cloudwatch.get_metric_data(
                MetricDataQueries=queries[:500],
                StartTime=datetime.fromtimestamp(now - _AGE_WINDOW_SECONDS, UTC),
                EndTime=datetime.fromtimestamp(now, UTC),
                ScanBy="TimestampDescending",
            )
        except (ClientError, BotoCoreError):
            # Ages are a nicety; depths still answer the question "is anything stuck?".
            logger.warning("queue ages unavailable from CloudWatch", exc_info=True)
            return {}
        ages: dict[str, float] = {}
        for result in response.get("MetricDataResults", []):
            index = int(str(result.get("Id", "q-1"))[1:])
            values = result.get("Values") or []
            if values and 0 <= index < len(names):
                ages[names[index]] = float(values[0])
        return ages


class MemoryQueueInspector:
    """The in-memory ring's figures (unit tests, simulation)."""

    def __init__(self, queues: MemoryQueues, clock: Callable[[], float]) -> None:
        self.queues = queues
        self.clock = clock

    def stats(self, queues: Sequence[QueueRef]) -> list[QueueStats]:
        now = self.clock()
        found = []
        for ref in queues:
            messages = list(self.queues.queue(ref.url).messages)
            in_flight = sum(1 for message in messages if message.visible_at > now)
            oldest = min((message.sent_at for message in messages), default=None)
            found.append(
                QueueStats(
                    ref,
                    visible=len(messages) - in_flight,
                    in_flight=in_flight,
                    delayed=0,
                    oldest_age_seconds=None if oldest is None else now - oldest,
                )
            )
        return found
