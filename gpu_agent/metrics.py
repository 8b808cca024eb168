"""The agent's business metrics (names in comfyfleet.observability), sent to CloudWatch.

Why PutMetricData, batched, rather than embedded-metric (EMF) log lines as the Lambda
functions write: a Lambda's stdout goes to CloudWatch Logs, where EMF becomes metrics for
free; an EC2 agent's stdout goes to journald, and EMF would need the CloudWatch agent on the
image, configured to ship that log. PutMetricData needs only ``cloudwatch:PutMetricData`` on
the instance role. Samples are aggregated in memory (each series as values and counts) and
sent by a background thread once per ``flush_seconds`` — one call a minute per node, never
an AWS call on a job's path — and at shutdown. A failed send is logged and dropped: metrics
must never hold up or fail a job.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from comfyfleet.domain import Job, JobState
from comfyfleet.observability import (
    EXECUTION_TIME,
    JOBS_CANCELLED,
    JOBS_COMPLETED,
    JOBS_FAILED,
    MODEL_BYTES_DOWNLOADED,
    MODEL_CACHE_HITS,
    MODEL_CACHE_MISSES,
    MODEL_DOWNLOAD_SECONDS,
    NAMESPACE,
    QUEUE_WAIT,
    REASON,
)
from gpu_agent.cache import CacheReport

logger = logging.getLogger(__name__)

SERVICE = "comfyfleet-agent"  # the "service" dimension, as Powertools sets it for the API
MAX_VALUES_PER_DATUM = 150  # PutMetricData's limits
MAX_DATA_PER_CALL = 1000

Series = tuple[str, str, tuple[tuple[str, str], ...]]  # name, unit, dimensions


class CloudWatchMetrics:
    """Samples of metric series, aggregated and flushed to CloudWatch in batches."""

    def __init__(
        self,
        cloudwatch: Any,
        *,
        namespace: str = NAMESPACE,
        service: str = SERVICE,
        flush_seconds: float = 60.0,
    ) -> None:
        self.cloudwatch = cloudwatch
        self.namespace = namespace
        self.service = service
        self.flush_seconds = flush_seconds
        self._samples: dict[Series, Counter[float]] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, name: str, value: float, unit: str, **dimensions: str) -> None:
        series: Series = (
            name,
            unit,
            tuple(sorted({"service": self.service, **dimensions}.items())),
        )
        with self._lock:
            self._samples.setdefault(series, Counter())[float(value)] += 1

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the flushing thread and send what is left."""
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()

    def flush(self) -> int:
        """Send every sample taken so far; how many data went out."""
        with self._lock:
            samples, self._samples = self._samples, {}
        data = list(_data(samples, time.time()))
        for start in range(0, len(data), MAX_DATA_PER_CALL):
            batch = data[start : start + MAX_DATA_PER_CALL]
            try:
                self.cloudwatch.put_metric_data(Namespace=self.namespace, MetricData=batch)
            except Exception as exc:  # botocore's errors and the network's alike
                logger.warning("metrics dropped", extra={"data": len(batch), "error": repr(exc)})
        return len(data)

    def _run(self) -> None:
        while not self._closed.wait(self.flush_seconds):
            self.flush()


def _data(samples: dict[Series, Counter[float]], timestamp: float) -> Iterator[dict[str, Any]]:
    for (name, unit, dimensions), counts in samples.items():
        values = sorted(counts.items())
        for start in range(0, len(values), MAX_VALUES_PER_DATUM):
            chunk = values[start : start + MAX_VALUES_PER_DATUM]
            yield {
                "MetricName": name,
                "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions],
                "Timestamp": timestamp,
                "Unit": unit,
                "Values": [value for value, _ in chunk],
                "Counts": [float(count) for _, count in chunk],
            }


class AgentMetrics:
    """What the agent measures: job outcomes and times, and the model cache's work."""

    def __init__(self, sink: CloudWatchMetrics) -> None:
        self.sink = sink
        self._cache_seen: CacheReport | None = None
        self._lock = threading.Lock()

    def claimed(self, job: Job) -> None:
        """A job started: its wait in the queue (first attempts only: a retry's wait
        measures the failure, not the queue)."""
        if job.attempt == 1 and job.started_at is not None:
            wait_ms = max(0.0, (job.started_at - job.created_at) * 1000)
            self.sink.add(QUEUE_WAIT, round(wait_ms), "Milliseconds")

    def ended(self, job: Job) -> None:
        """A job reached a terminal state (as written by this node)."""
        if job.state is JobState.COMPLETED:
            self.sink.add(JOBS_COMPLETED, 1, "Count")
            if job.execution_time_ms is not None:
                self.sink.add(EXECUTION_TIME, job.execution_time_ms, "Milliseconds")
        elif job.state is JobState.FAILED:
            reason = str((job.error or {}).get("code") or "unknown")
            self.sink.add(JOBS_FAILED, 1, "Count", **{REASON: reason})
        elif job.state is JobState.CANCELLED:
            self.sink.add(JOBS_CANCELLED, 1, "Count")

    def cache(self, report: CacheReport) -> None:
        """The cache's counters since the last report (prefetches included)."""
        with self._lock:
            seen, self._cache_seen = self._cache_seen, report
        # The cache's counters start at zero with the process: no report yet, nothing seen.
        hits = report.hits - (seen.hits if seen else 0)
        misses = report.misses - (seen.misses if seen else 0)
        downloaded = report.downloaded_bytes - (seen.downloaded_bytes if seen else 0)
        seconds = report.download_seconds - (seen.download_seconds if seen else 0.0)
        if hits:
            self.sink.add(MODEL_CACHE_HITS, hits, "Count")
        if misses:
            self.sink.add(MODEL_CACHE_MISSES, misses, "Count")
        if downloaded:
            self.sink.add(MODEL_BYTES_DOWNLOADED, downloaded, "Bytes")
            self.sink.add(MODEL_DOWNLOAD_SECONDS, round(seconds, 3), "Seconds")
