"""The agent's metrics: batched PutMetricData calls that CloudWatch (moto) reads back."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from comfyfleet.aws import client
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
)
from comfyfleet.resources import Provisioned
from comfyfleet.scheduling import Dispatcher
from fakecomfy import placeholder_safetensors
from gpu_agent.cache import CacheReport
from gpu_agent.metrics import SERVICE, AgentMetrics, CloudWatchMetrics
from gpu_agent.runner import Ending
from tests.integration import test_agent
from tests.integration.conftest import REGION
from tests.integration.test_agent import Node, sd15, submit
from tests.origin_server import OriginServer

make_node = test_agent.make_node
dispatcher = test_agent.dispatcher
account = test_agent.account
origin = test_agent.origin


def _job(state: JobState, *, error: dict[str, Any] | None = None, attempt: int = 1) -> Job:
    return Job(
        job_id="01JOB",
        account_id="acct",
        state=state,
        created_at=1000.0,
        workflow={},
        attempt=attempt,
        started_at=1002.5,
        completed_at=1010.0 if state is not JobState.RUNNING else None,
        error=error,
    )


def _report(hits: int, misses: int, downloaded: int, seconds: float) -> CacheReport:
    return CacheReport({}, 0, 0, 0, frozenset(), hits, misses, misses, downloaded, seconds, 0)


class CountingCloudWatch:
    """A CloudWatch client that counts its PutMetricData calls."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls = 0

    def put_metric_data(self, **kwargs: Any) -> Any:
        self.calls += 1
        return self.real.put_metric_data(**kwargs)


def _stat(name: str, statistic: str = "Sum", **dimensions: str) -> float | None:
    now = datetime.now(UTC)
    points = client("cloudwatch", region=REGION).get_metric_statistics(
        Namespace=NAMESPACE,
        MetricName=name,
        Dimensions=[{"Name": k, "Value": v} for k, v in {"service": SERVICE, **dimensions}.items()],
        StartTime=now - timedelta(minutes=10),
        EndTime=now + timedelta(minutes=10),
        Period=3600,
        Statistics=[statistic],
    )["Datapoints"]
    return sum(p[statistic] for p in points) if points else None


def test_job_and_cache_metrics_go_out_in_one_batched_call(aws: Provisioned) -> None:
    cloudwatch = CountingCloudWatch(client("cloudwatch", region=REGION))
    metrics = AgentMetrics(CloudWatchMetrics(cloudwatch))

    metrics.claimed(_job(JobState.RUNNING))  # waited 2.5 s
    metrics.claimed(_job(JobState.RUNNING, attempt=2))  # a retry's wait is not queue wait
    metrics.ended(_job(JobState.COMPLETED))
    for _ in range(2):
        metrics.ended(_job(JobState.FAILED, error={"code": "timeout", "message": "…"}))
    metrics.ended(_job(JobState.FAILED, error={"code": "execution_error", "message": "…"}))
    metrics.ended(_job(JobState.CANCELLED))
    metrics.cache(_report(hits=3, misses=1, downloaded=1000, seconds=0.5))
    metrics.cache(_report(hits=5, misses=2, downloaded=3000, seconds=1.5))  # deltas: 2, 1, …
    sent = metrics.sink.flush()

    assert cloudwatch.calls == 1 and sent == 10
    assert _stat(QUEUE_WAIT, "SampleCount") == 1 and _stat(QUEUE_WAIT, "Maximum") == 2500
    assert _stat(JOBS_COMPLETED) == 1 and _stat(EXECUTION_TIME, "Maximum") == 7500
    assert _stat(JOBS_FAILED, reason="timeout") == 2
    assert _stat(JOBS_FAILED, reason="execution_error") == 1
    assert _stat(JOBS_CANCELLED) == 1
    assert (_stat(MODEL_CACHE_HITS), _stat(MODEL_CACHE_MISSES)) == (5, 2)
    assert _stat(MODEL_BYTES_DOWNLOADED) == 3000 and _stat(MODEL_DOWNLOAD_SECONDS) == 1.5
    assert metrics.sink.flush() == 0 and cloudwatch.calls == 1  # nothing new: no call


def test_a_failed_send_is_logged_and_dropped_never_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Refusing:
        def put_metric_data(self, **kwargs: Any) -> None:
            raise ConnectionError("no route to monitoring.us-east-1.amazonaws.com")

    sink = CloudWatchMetrics(Refusing())
    sink.add(JOBS_COMPLETED, 1, "Count")

    with caplog.at_level(logging.WARNING):
        assert sink.flush() == 1

    assert "metrics dropped" in caplog.text
    assert sink.flush() == 0


def test_many_distinct_values_split_into_data_of_at_most_150_values() -> None:
    calls: list[list[dict[str, Any]]] = []

    class Recording:
        def put_metric_data(self, **kwargs: Any) -> None:
            calls.append(kwargs["MetricData"])

    sink = CloudWatchMetrics(Recording())
    for ms in range(400):
        sink.add(EXECUTION_TIME, ms, "Milliseconds")
    sink.add(EXECUTION_TIME, 7, "Milliseconds")

    assert sink.flush() == 3
    [data] = calls
    assert [len(d["Values"]) for d in data] == [150, 150, 100]
    assert sum(sum(d["Counts"]) for d in data) == 401


def test_an_agent_run_emits_its_job_and_model_metrics(
    make_node: Callable[..., Node],
    dispatcher: Dispatcher,
    account: str,
    origin: OriginServer,
) -> None:
    node = make_node("a")
    url = origin.add("/models/tiny.safetensors", placeholder_safetensors())
    for _ in range(2):
        submit(dispatcher, account, sd15(url))
        assert node.work() == [Ending.COMPLETED]

    assert node.agent.metrics is not None
    node.agent.metrics.sink.flush()

    assert _stat(JOBS_COMPLETED) == 2 and _stat(EXECUTION_TIME, "SampleCount") == 2
    assert _stat(QUEUE_WAIT, "SampleCount") == 2
    assert (_stat(MODEL_CACHE_MISSES), _stat(MODEL_CACHE_HITS)) == (1, 1)
    assert _stat(MODEL_BYTES_DOWNLOADED) == len(placeholder_safetensors())
