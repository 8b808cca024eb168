"""The GPU agent end to end against fakecomfy, moto and a loopback model host."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from comfyfleet.aws import client
from comfyfleet.clock import SystemClock
from comfyfleet.domain import Job, JobState, Limits, NodeStatus
from comfyfleet.events import MemoryJobEvents
from comfyfleet.resources import CATALOGUE_KEY, Provisioned, output_key
from comfyfleet.scheduling import Dispatcher, JobRequest
from comfyfleet.settings import Settings
from comfyfleet.store import Stores
from comfyfleet.templates import render_template
from comfyfleet.workflow import validate_workflow
from comfyfleet.workflow.refs import ref_for_url
from fakecomfy import placeholder_safetensors
from gpu_agent.runner import Ending
from tests.integration.agent_nodes import Node, sqs_dispatcher, start_node
from tests.integration.conftest import REGION
from tests.origin_server import OriginServer, fake_resolver
from tests.support import basic_graph

LIMITS = Limits(requests_per_minute=100, concurrency=4, queue_depth=50, ring_slots=4)


@pytest.fixture
def origin() -> Iterator[OriginServer]:
    with OriginServer() as server:
        yield server


@pytest.fixture
def make_node(aws: Provisioned, dynamo: Stores, tmp_path: Path) -> Iterator[Callable[..., Node]]:
    nodes: list[Node] = []

    def make(name: str, **overrides: Any) -> Node:
        overrides.setdefault("preview_interval_seconds", 0.05)
        node = start_node(
            name, aws=aws, dynamo=dynamo, tmp_path=tmp_path, previews=True, **overrides
        )
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.stop()


@pytest.fixture
def dispatcher(dynamo: Stores, aws: Provisioned, settings: Settings) -> Dispatcher:
    return sqs_dispatcher(dynamo, aws, settings, MemoryJobEvents())


@pytest.fixture
def account(dynamo: Stores) -> str:
    return dynamo.accounts.create(tier="pro", name="", now=SystemClock().now()).account_id


def submit(
    dispatcher: Dispatcher,
    account: str,
    graph: dict[str, Any],
    models: list[dict[str, Any]] | None = None,
) -> Job:
    local = Settings(allow_local_urls=True)
    if models is None:
        result = validate_workflow(graph, settings=local)
        assert result.ok, result.errors
        models = [m.to_dict() for m in result.models]
    return dispatcher.submit(account, "pro", LIMITS, JobRequest(graph, models)).job


def sd15(checkpoint_url: str, steps: int = 2) -> dict[str, Any]:
    params = {
        "prompt": "a lighthouse",
        "checkpoint_url": checkpoint_url,
        "steps": steps,
        "width": 64,
        "height": 64,
        "seed": 7,
    }
    return render_template("sd15", params).graph


def test_a_job_with_a_model_by_url_syncs_it_once_runs_and_uploads_its_image(
    make_node: Callable[..., Node],
    dispatcher: Dispatcher,
    dynamo: Stores,
    account: str,
    origin: OriginServer,
) -> None:
    node = make_node("a")
    url = origin.add("/models/tiny.safetensors", placeholder_safetensors())
    first = submit(dispatcher, account, sd15(url))

    assert node.work() == [Ending.COMPLETED]

    done = dynamo.jobs.get(first.job_id)
    assert done.state is JobState.COMPLETED and done.attempt == 1 and done.node_id == "a"
    [image] = done.outputs["files"]
    assert image["content_type"] == "image/png" and done.outputs["images"] == [image["url"]]
    body = (
        client("s3", region=REGION)
        .get_object(
            Bucket=node.settings.output_bucket_name,
            Key=output_key(account, first.job_id, image["filename"]),
        )["Body"]
        .read()
    )
    assert Image.open(io.BytesIO(body)).size == (64, 64) and len(body) == image["size"]
    [model] = done.models
    link = node.settings.comfy_root / "models" / "checkpoints" / model["filename"]
    assert link.is_symlink() and link.read_bytes() == placeholder_safetensors()

    second = submit(dispatcher, account, sd15(url))
    assert node.work() == [Ending.COMPLETED]
    assert dynamo.jobs.get(second.job_id).state is JobState.COMPLETED
    assert len(origin.requests_for("/models/tiny.safetensors")) == 1  # a cache hit
    # The heartbeat thread reports the node free again, right after the job.
    _wait_for(lambda: dynamo.nodes.get("a").status is NodeStatus.IDLE)
    assert model["key"] in dynamo.nodes.get("a").cached


def test_start_publishes_the_catalogue_and_registers_the_node(
    make_node: Callable[..., Node], dynamo: Stores
) -> None:
    node = make_node("a")

    catalogue = (
        client("s3", region=REGION)
        .get_object(Bucket=node.settings.model_bucket_name, Key=CATALOGUE_KEY)["Body"]
        .read()
    )
    assert b"CheckpointLoaderSimple" in catalogue
    assert dynamo.nodes.get("a").queue_url.endswith("-node-a.fifo")


def test_comfyuis_validation_error_fails_the_job_with_its_node_errors(
    make_node: Callable[..., Node], dispatcher: Dispatcher, dynamo: Stores, account: str
) -> None:
    node = make_node("a")
    job = submit(dispatcher, account, sd15("not_installed.safetensors"))

    assert node.work() == [Ending.FAILED]

    error = dynamo.jobs.get(job.job_id).error
    assert error["code"] == "comfy_validation_error"
    [node_error] = error["details"].values()
    assert node_error["errors"][0]["type"] == "value_not_in_list"


def test_an_execution_error_fails_the_job_with_node_and_class(
    make_node: Callable[..., Node],
    dispatcher: Dispatcher,
    dynamo: Stores,
    account: str,
    origin: OriginServer,
) -> None:
    node = make_node("a")
    url = origin.add("/models/broken.safetensors", b"\x01\x02")
    job = submit(dispatcher, account, sd15(url))

    assert node.work() == [Ending.FAILED]

    error = dynamo.jobs.get(job.job_id).error
    assert error["code"] == "execution_error"
    assert (error["node_id"], error["node_type"]) == ("1", "CheckpointLoaderSimple")
    assert "header too small" in error["message"]


def test_a_cancelled_queued_job_is_never_run(
    make_node: Callable[..., Node], dispatcher: Dispatcher, dynamo: Stores, account: str
) -> None:
    node = make_node("a")
    job = submit(dispatcher, account, basic_graph())
    dispatcher.cancel(job.job_id, LIMITS.share)

    assert node.work() == [None]  # received, found cancelled, deleted

    assert dynamo.jobs.get(job.job_id).state is JobState.CANCELLED
    assert node.comfy.fake.history == {} if hasattr(node.comfy.fake, "history") else True


def test_a_running_job_is_cancelled_within_about_a_second(
    make_node: Callable[..., Node],
    dispatcher: Dispatcher,
    dynamo: Stores,
    account: str,
    origin: OriginServer,
) -> None:
    node = make_node("a", step_seconds=0.1)
    url = origin.add("/models/tiny.safetensors", placeholder_safetensors())
    job = submit(dispatcher, account, sd15(url, steps=150))  # 15 s if left alone
    endings: list[Ending | None] = []
    worker = threading.Thread(target=lambda: endings.extend(node.work()))
    worker.start()
    _wait_for(lambda: (dynamo.jobs.get(job.job_id).progress or {}).get("value", 0) > 0)

    asked = time.monotonic()
    dispatcher.cancel(job.job_id, LIMITS.share)
    worker.join(timeout=15)

    assert endings == [Ending.CANCELLED]
    assert time.monotonic() - asked < 3
    assert dynamo.jobs.get(job.job_id).state is JobState.CANCELLED


def test_the_same_message_delivered_twice_runs_once(
    make_node: Callable[..., Node], dispatcher: Dispatcher, dynamo: Stores, account: str
) -> None:
    node = make_node("a")
    job = submit(dispatcher, account, basic_graph())
    received = node.agent._receive()
    assert received is not None
    node.agent.queues.send(node.agent.node_queue_url, received.message)  # an extra copy
    node.agent.queues.change_visibility(received, 0)

    endings = node.work(jobs=2)

    assert sorted(map(str, endings)) == ["None", "completed"]
    assert dynamo.jobs.get(job.job_id).attempt == 1


def test_a_job_of_a_killed_agent_completes_on_another_once_its_lease_expires(
    make_node: Callable[..., Node], dispatcher: Dispatcher, dynamo: Stores, account: str
) -> None:
    dying = make_node("dying", lease_seconds=2)
    healthy = make_node("healthy", lease_seconds=2)
    job = submit(dispatcher, account, basic_graph())
    received = dying.agent._receive()
    assert received is not None
    # Claimed under the dying node's own 2 s lease …and then it dies.
    assert dying.agent.dispatcher.claim(received.message, "dying").job is not None

    endings = healthy.work(timeout=20, until=Ending.COMPLETED)

    assert endings[-1] is Ending.COMPLETED and set(endings[:-1]) <= {None}
    done = dynamo.jobs.get(job.job_id)
    assert (done.state, done.node_id, done.attempt) == (JobState.COMPLETED, "healthy", 2)


def test_a_model_download_longer_than_the_lease_keeps_the_job_on_its_node(
    make_node: Callable[..., Node],
    dispatcher: Dispatcher,
    dynamo: Stores,
    account: str,
    origin: OriginServer,
) -> None:
    # Given a 2 s lease and a download that takes 3 s (the origin holds its answer)…
    downloading = make_node("downloading", lease_seconds=2)
    idle = make_node("idle", lease_seconds=2)
    hold = threading.Event()
    url = origin.add("/models/slow.safetensors", placeholder_safetensors(), hold=hold)
    job = submit(dispatcher, account, sd15(url))
    endings: list[Ending | None] = []
    worker = threading.Thread(target=lambda: endings.extend(downloading.work(timeout=20)))
    worker.start()
    _wait_for(lambda: dynamo.jobs.get(job.job_id).state is JobState.RUNNING)
    threading.Timer(3.0, hold.set).start()

    # …while another node polls for work all along,
    taken_over = idle.work(timeout=4)
    worker.join(timeout=20)

    # then the lease was renewed through the download: the job ran once, where it started.
    assert endings == [Ending.COMPLETED] and taken_over == []
    done = dynamo.jobs.get(job.job_id)
    assert (done.state, done.node_id, done.attempt) == (JobState.COMPLETED, "downloading", 1)


def test_when_comfyui_is_down_the_job_is_released_and_runs_elsewhere(
    make_node: Callable[..., Node], dispatcher: Dispatcher, dynamo: Stores, account: str
) -> None:
    broken = make_node("broken")
    working = make_node("working")
    broken.comfy.stop()
    job = submit(dispatcher, account, basic_graph())

    received = broken.agent._receive()
    assert received is not None
    with pytest.raises(Exception, match="ComfyUI"):
        broken.agent.handle(received)
    assert dynamo.jobs.get(job.job_id).state is JobState.QUEUED

    assert working.work() == [Ending.COMPLETED]
    done = dynamo.jobs.get(job.job_id)
    assert (done.node_id, done.attempt) == ("working", 2)


def test_a_model_url_resolving_to_a_private_address_fails_with_a_clear_error(
    make_node: Callable[..., Node],
    dispatcher: Dispatcher,
    dynamo: Stores,
    account: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = make_node("a")
    resolver, _ = fake_resolver({"models.example.com": ["169.254.169.254"]})
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    url = "https://models.example.com/x.safetensors"
    job = submit(dispatcher, account, sd15(url), models=[ref_for_url(url, "checkpoints").to_dict()])

    assert node.work() == [Ending.FAILED]

    error = dynamo.jobs.get(job.job_id).error
    assert error["code"] == "model_download_failed"
    assert "169.254.169.254" in error["message"]


def _wait_for(condition: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
