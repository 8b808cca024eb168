"""The API's business metrics, named in comfyfleet.observability.

``SubmitMetrics`` is what the API emits; ``PowertoolsSubmitMetrics`` writes them as
CloudWatch embedded metrics through Powertools, ``RecordedMetrics`` keeps them for tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from comfyfleet.observability import (
    JOBS_REJECTED,
    JOBS_SUBMITTED,
    NAMESPACE,
    REASON,
    SUBMIT_LATENCY,
)


class SubmitMetrics(Protocol):
    def submitted(self, latency_ms: float) -> None: ...

    def rejected(self, reason: str) -> None: ...


class PowertoolsSubmitMetrics:
    """Into a Powertools ``Metrics`` flushed by its ``log_metrics`` decorator."""

    def __init__(self, metrics: Any) -> None:
        self.metrics = metrics

    def submitted(self, latency_ms: float) -> None:
        from aws_lambda_powertools.metrics import MetricUnit

        self.metrics.add_metric(name=JOBS_SUBMITTED, unit=MetricUnit.Count, value=1)
        self.metrics.add_metric(name=SUBMIT_LATENCY, unit=MetricUnit.Milliseconds, value=latency_ms)

    def rejected(self, reason: str) -> None:
        # Its own metric blob: the reason dimension must not apply to the others. The
        # service dimension, which Metrics adds to its own blob, is added here by hand.
        from aws_lambda_powertools.metrics import MetricUnit, single_metric

        dimensions = dict(self.metrics.default_dimensions)
        if self.metrics.service:
            dimensions.setdefault("service", self.metrics.service)
        with single_metric(
            name=JOBS_REJECTED,
            unit=MetricUnit.Count,
            value=1,
            namespace=NAMESPACE,
            default_dimensions=dimensions,
        ) as metric:
            metric.add_dimension(name=REASON, value=reason)


@dataclass
class RecordedMetrics:
    latencies_ms: list[float] = field(default_factory=list)
    rejections: list[str] = field(default_factory=list)

    def submitted(self, latency_ms: float) -> None:
        self.latencies_ms.append(latency_ms)

    def rejected(self, reason: str) -> None:
        self.rejections.append(reason)
