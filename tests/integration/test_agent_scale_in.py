"""An agent protects its instance from scale-in while it runs a job, on fakecomfy and moto:
set at claim, cleared at the end whatever the ending, and a failing call never fails a job."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from comfyfleet.domain import JobState
from comfyfleet.scheduling import Dispatcher
from comfyfleet.store import Stores
from fakecomfy import placeholder_safetensors
from gpu_agent.runner import Ending
from gpu_agent.scale_in import ScaleInProtection
from tests.integration import test_agent
from tests.integration.test_agent import LIMITS, Node, _wait_for, sd15, submit
from tests.origin_server import OriginServer
from tests.support import basic_graph
from tests.unit.test_scale_in_protection import FakeAutoScaling

make_node = test_agent.make_node
dispatcher = test_agent.dispatcher
account = test_agent.account
origin = test_agent.origin


class Watching(FakeAutoScaling):
    """Also records which job the agent was running at each call."""

    def __init__(self, node: Callable[[], Node], error: str | None = None) -> None:
        super().__init__(error)
        self.node = node
        self.running_at_call: list[str | None] = []

    def set_instance_protection(self, **kwargs: Any) -> None:
        self.running_at_call.append(self.node().agent.current_job)
        super().set_instance_protection(**kwargs)


def protected(node: Node, tmp_path: Path, error: str | None = None) -> Watching:
    client = Watching(lambda: node, error)
    node.agent.protection = ScaleInProtection(
        client, group="fleet", instance_id="i-1", agent="a", busy_dir=tmp_path / "busy"
    )
    return client


def test_protection_is_set_at_claim_and_cleared_when_the_job_completes(
    make_node: Callable[..., Node],
    dispatcher: Dispatcher,
    dynamo: Stores,
    account: str,
    tmp_path: Path,
) -> None:
    node = make_node("a")
    client = protected(node, tmp_path)
    job = submit(dispatcher, account, basic_graph())

    assert node.work() == [Ending.COMPLETED]

    assert client.protection == [True, False]
    assert client.running_at_call == [job.job_id, job.job_id]  # around the run itself
    assert dynamo.jobs.get(job.job_id).state is JobState.COMPLETED


def test_protection_is_cleared_when_the_job_fails(
    make_node: Callable[..., Node],
    dispatcher: Dispatcher,
    dynamo: Stores,
    account: str,
    tmp_path: Path,
) -> None:
    node = make_node("a")
    client = protected(node, tmp_path)
    job = submit(dispatcher, account, sd15("not_installed.safetensors"))

    assert node.work() == [Ending.FAILED]

    assert client.protection == [True, False]
    assert dynamo.jobs.get(job.job_id).state is JobState.FAILED


def test_protection_is_cleared_when_the_running_job_is_cancelled(
    make_node: Callable[..., Node],
    dispatcher: Dispatcher,
    dynamo: Stores,
    account: str,
    origin: OriginServer,
    tmp_path: Path,
) -> None:
    node = make_node("a", step_seconds=0.1)
    client = protected(node, tmp_path)
    url = origin.add("/models/tiny.safetensors", placeholder_safetensors())
    job = submit(dispatcher, account, sd15(url, steps=150))
    endings: list[Ending | None] = []
    worker = threading.Thread(target=lambda: endings.extend(node.work()))
    worker.start()
    _wait_for(lambda: (dynamo.jobs.get(job.job_id).progress or {}).get("value", 0) > 0)
    assert client.protection == [True]

    dispatcher.cancel(job.job_id, LIMITS.share)
    worker.join(timeout=15)

    assert endings == [Ending.CANCELLED]
    assert client.protection == [True, False]


@pytest.mark.parametrize("error", ["Throttling", "AccessDenied"])
def test_a_failing_protection_call_never_fails_the_job(
    make_node: Callable[..., Node],
    dispatcher: Dispatcher,
    dynamo: Stores,
    account: str,
    tmp_path: Path,
    error: str,
) -> None:
    node = make_node("a")
    client = protected(node, tmp_path, error=error)
    job = submit(dispatcher, account, basic_graph())

    assert node.work() == [Ending.COMPLETED]

    assert client.protection == []  # every call failed
    assert dynamo.jobs.get(job.job_id).state is JobState.COMPLETED
