"""The agent's life around a job, against fakecomfy and moto: drain and stop on SIGTERM, the
spot notice, ComfyUI going away and coming back, timeouts, a dropped socket, throttling."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from comfyfleet.domain import JobState, NodeStatus
from comfyfleet.resources import preview_key
from comfyfleet.scheduling import Dispatcher
from comfyfleet.store import Stores
from fakecomfy import start_fakecomfy
from gpu_agent.main import install_signal_handlers
from gpu_agent.runner import Ending
from tests.integration import test_agent
from tests.integration.test_agent import Node, _wait_for, sd15, submit
from tests.origin_server import OriginServer
from tests.support import basic_graph

MakeNode = Callable[..., Node]

# The agent tests' fixtures: a node (fakecomfy + agent on moto), the dispatcher, an account.
make_node = test_agent.make_node
dispatcher = test_agent.dispatcher
account = test_agent.account
origin = test_agent.origin


@pytest.fixture
def signal_handlers() -> Iterator[None]:
    """Leave pytest's own SIGTERM and SIGINT handlers as they were."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def _checkpoint(origin: OriginServer) -> str:
    from fakecomfy import placeholder_safetensors

    return origin.add("/models/tiny.safetensors", placeholder_safetensors())


def _when_running(node: Node, then: Callable[[], None]) -> threading.Thread:
    """Call ``then`` from another thread once the node's ComfyUI is a few steps into a job."""

    def wait_then() -> None:
        _wait_for(lambda: node.agent.current_job is not None and node.comfy.fake.queue.remaining())
        time.sleep(0.3)
        then()

    thread = threading.Thread(target=wait_then, daemon=True)
    thread.start()
    return thread


def _sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def _states(dynamo: Stores, *job_ids: str) -> list[tuple[JobState, int]]:
    return [(job.state, job.attempt) for job in map(dynamo.jobs.get, job_ids)]


def test_one_sigterm_finishes_the_running_job_and_takes_no_more(
    make_node: MakeNode,
    dispatcher: Dispatcher,
    dynamo: Stores,
    account: str,
    origin: OriginServer,
    signal_handlers: None,
) -> None:
    node = make_node("a", step_seconds=0.05, receive_wait_seconds=1)
    url = _checkpoint(origin)
    jobs = [submit(dispatcher, account, sd15(url, steps=30)).job_id for _ in range(2)]
    install_signal_handlers(node.agent)
    _when_running(node, _sigterm)

    node.agent.run_forever()  # here, in the main thread, the signal handler runs

    states = sorted(_states(dynamo, *jobs), key=lambda s: s[0] is JobState.QUEUED)
    assert states == [(JobState.COMPLETED, 1), (JobState.QUEUED, 0)]
    assert dynamo.nodes.get("a").status is NodeStatus.DRAINING


def test_a_second_sigterm_interrupts_and_releases_the_running_job(
    make_node: MakeNode,
    dispatcher: Dispatcher,
    dynamo: Stores,
    account: str,
    origin: OriginServer,
    signal_handlers: None,
) -> None:
    node = make_node("a", step_seconds=0.1, receive_wait_seconds=1)
    job = submit(dispatcher, account, sd15(_checkpoint(origin), steps=150))  # 15 s if left
    install_signal_handlers(node.agent)

    def twice() -> None:
        _sigterm()
        time.sleep(0.2)
        _sigterm()

    _when_running(node, twice)
    started = time.monotonic()
    node.agent.run_forever()

    assert time.monotonic() - started < 8
    assert _states(dynamo, job.job_id) == [(JobState.QUEUED, 1)]  # released for another node
    history = requests.get(f"{node.comfy.url}/history/{job.job_id}", timeout=10).json()
    kinds = [kind for kind, _ in history[job.job_id]["status"]["messages"]]
    assert "execution_interrupted" in kinds  # ComfyUI stopped it: it did not run to the end


def test_a_drain_outlasting_its_grace_interrupts_and_releases_the_job(
    make_node: MakeNode,
    dispatcher: Dispatcher,
    dynamo: Stores,
    account: str,
    origin: OriginServer,
) -> None:
    node = make_node("a", step_seconds=0.1, receive_wait_seconds=1, drain_grace_seconds=1)
    job = submit(dispatcher, account, sd15(_checkpoint(origin), steps=150))
    _when_running(node, node.agent.request_stop)
    started = time.monotonic()

    node.agent.run_forever()

    assert time.monotonic() - started < 8
    assert _states(dynamo, job.job_id) == [(JobState.QUEUED, 1)]


def test_a_spot_interruption_notice_drains_the_node(
    make_node: MakeNode,
    dispatcher: Dispatcher,
    dynamo: Stores,
    account: str,
    origin: OriginServer,
) -> None:
    node = make_node("a", step_seconds=0.05, receive_wait_seconds=1)
    notice = threading.Event()
    node.agent.spot_notice = notice.is_set  # IMDS's spot/instance-action, faked
    url = _checkpoint(origin)
    jobs = [submit(dispatcher, account, sd15(url, steps=30)).job_id for _ in range(2)]
    _when_running(node, notice.set)

    node.agent.run_forever()

    states = sorted(_states(dynamo, *jobs), key=lambda s: s[0] is JobState.QUEUED)
    assert states == [(JobState.COMPLETED, 1), (JobState.QUEUED, 0)]
    assert dynamo.nodes.get("a").status is NodeStatus.DRAINING
    # The notice gives two minutes: the grace leaves time to release after it.
    assert node.agent.stop.drain_deadline <= time.time() + 90


def test_comfyui_down_makes_the_node_unhealthy_and_idle_until_it_answers_again(
    make_node: MakeNode, dispatcher: Dispatcher, dynamo: Stores, account: str
) -> None:
    node = make_node("a", receive_wait_seconds=1)
    port, root = node.comfy.port, node.comfy.root
    node.comfy.stop()
    first = submit(dispatcher, account, basic_graph())
    worker = threading.Thread(target=node.agent.run_forever, daemon=True)
    worker.start()
    try:
        _wait_for(lambda: dynamo.nodes.get("a").status is NodeStatus.UNHEALTHY)
        second = submit(dispatcher, account, basic_graph())
        time.sleep(1.5)  # several polls of ComfyUI: nothing is taken meanwhile
        assert _states(dynamo, first.job_id, second.job_id) == [
            (JobState.QUEUED, 1),  # released by the failed attempt
            (JobState.QUEUED, 0),
        ]

        node.comfy = start_fakecomfy(root, port=port, step_seconds=0.01)

        _wait_for(
            lambda: (
                _states(dynamo, first.job_id, second.job_id)
                == [(JobState.COMPLETED, 2), (JobState.COMPLETED, 1)]
            )
        )
        _wait_for(lambda: dynamo.nodes.get("a").status is NodeStatus.IDLE)
    finally:
        node.agent.request_stop()
        worker.join(timeout=15)


def test_a_job_running_past_its_tiers_timeout_fails_with_timeout(
    make_node: MakeNode,
    dispatcher: Dispatcher,
    dynamo: Stores,
    account: str,
    origin: OriginServer,
) -> None:
    node = make_node("a", step_seconds=0.1, tiers={"pro": {"job_timeout_seconds": 1}})
    job = submit(dispatcher, account, sd15(_checkpoint(origin), steps=150))

    started = time.monotonic()
    assert node.work() == [Ending.FAILED]

    assert time.monotonic() - started < 6
    error = dynamo.jobs.get(job.job_id).error
    assert error["code"] == "timeout" and "1 s" in error["message"]


def _close_sockets(node: Node) -> None:
    """Drop every WebSocket from the server's side, mid-run."""
    running = node.comfy
    asyncio.run_coroutine_threadsafe(running.fake.hub.close_sockets(), running._loop).result(5)


def test_a_dropped_socket_is_reopened_and_the_job_completes(
    make_node: MakeNode,
    dispatcher: Dispatcher,
    dynamo: Stores,
    account: str,
    origin: OriginServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = make_node("a", step_seconds=0.05)
    job = submit(dispatcher, account, sd15(_checkpoint(origin), steps=40))
    comfy = node.agent.comfy
    connects: list[float] = []
    connect = comfy._connect
    monkeypatch.setattr(comfy, "_connect", lambda: connects.append(time.monotonic()) or connect())
    _when_running(node, lambda: _close_sockets(node))

    assert node.work() == [Ending.COMPLETED]

    assert len(connects) == 2  # the first socket, and the one reopened after the drop
    done = dynamo.jobs.get(job.job_id)
    assert done.state is JobState.COMPLETED and len(done.outputs["files"]) == 1


def test_a_comfyui_restart_mid_run_releases_the_job_instead_of_waiting_forever(
    make_node: MakeNode,
    dispatcher: Dispatcher,
    dynamo: Stores,
    account: str,
    origin: OriginServer,
) -> None:
    node = make_node("a", step_seconds=0.05)
    job = submit(dispatcher, account, sd15(_checkpoint(origin), steps=150))
    port, root = node.comfy.port, node.comfy.root

    def restart() -> None:
        node.comfy.stop()  # history and queue live in ComfyUI's memory: both are gone
        node.comfy = start_fakecomfy(root, port=port, step_seconds=0.05)

    _when_running(node, restart)
    received = node.agent._receive()
    assert received is not None

    with pytest.raises(Exception, match="lost prompt"):
        node.agent.handle(received)

    assert _states(dynamo, job.job_id) == [(JobState.QUEUED, 1)]


def test_progress_is_written_at_most_once_a_second_and_previews_once_per_interval(
    make_node: MakeNode,
    dispatcher: Dispatcher,
    dynamo: Stores,
    account: str,
    origin: OriginServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = make_node("a", step_seconds=0.02, preview_interval_seconds=0.5)
    job = submit(dispatcher, account, sd15(_checkpoint(origin), steps=150))  # 3 s or more
    writes: list[tuple[float, dict[str, Any]]] = []
    record = node.agent.runner.jobs.record_progress
    monkeypatch.setattr(
        node.agent.runner.jobs,
        "record_progress",
        lambda job_id, node_id, progress: (
            writes.append((time.monotonic(), progress)) or record(job_id, node_id, progress)
        ),
    )
    s3 = node.agent.runner.s3
    puts: list[tuple[float, str, str]] = []
    put = s3.put_object
    monkeypatch.setattr(
        s3,
        "put_object",
        lambda **kw: puts.append((time.monotonic(), kw["Key"], kw["ContentType"])) or put(**kw),
    )

    started = time.monotonic()
    assert node.work() == [Ending.COMPLETED]
    elapsed = time.monotonic() - started

    assert 2 <= len(writes) <= elapsed / 1.0 + 1
    assert all(b[0] - a[0] >= 0.99 for a, b in zip(writes, writes[1:], strict=False))
    assert writes[-1][1]["max"] == 150 and writes[-1][1]["nodes_total"] == len(job.workflow)
    previews = [(t, key, kind) for t, key, kind in puts if key.startswith("previews/")]
    assert 3 <= len(previews) <= elapsed / 0.5 + 1
    assert {(key, kind) for _, key, kind in previews} == {
        (preview_key(job.job_id, "jpeg"), "image/jpeg")
    }
    assert all(b[0] - a[0] >= 0.49 for a, b in zip(previews, previews[1:], strict=False))


def test_an_unexpected_error_in_one_job_does_not_end_the_loop(
    make_node: MakeNode,
    dispatcher: Dispatcher,
    dynamo: Stores,
    account: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = make_node("a", lease_seconds=2, receive_wait_seconds=1)
    job = submit(dispatcher, account, basic_graph())
    run = node.agent.runner.run
    failures: list[str] = []

    def first_run_fails(*args: Any) -> Ending:
        if not failures:
            failures.append("bug")
            raise ValueError("a bug met by this job")
        return run(*args)

    monkeypatch.setattr(node.agent.runner, "run", first_run_fails)
    worker = threading.Thread(target=node.agent.run_forever, daemon=True)
    worker.start()
    try:
        # Taken over once its 2 s lease ran out: the same loop completes it.
        _wait_for(lambda: _states(dynamo, job.job_id) == [(JobState.COMPLETED, 2)], timeout=30)
    finally:
        node.agent.request_stop()
        worker.join(timeout=15)
    assert failures == ["bug"] and not worker.is_alive()


def test_an_operators_drain_lets_the_running_job_finish_and_takes_no_more(
    make_node: MakeNode,
    dispatcher: Dispatcher,
    dynamo: Stores,
    account: str,
    origin: OriginServer,
) -> None:
    node = make_node("a", step_seconds=0.05, receive_wait_seconds=1)
    url = _checkpoint(origin)
    jobs = [submit(dispatcher, account, sd15(url, steps=20)).job_id for _ in range(2)]
    _when_running(node, lambda: dynamo.nodes.set_status("a", NodeStatus.DRAINING))
    worker = threading.Thread(target=node.agent.run_forever, daemon=True)
    worker.start()

    _wait_for(lambda: JobState.COMPLETED in [state for state, _ in _states(dynamo, *jobs)])
    time.sleep(3 * node.settings.heartbeat_seconds + 1.5)  # beats, and a receive, go by

    states = sorted(_states(dynamo, *jobs), key=lambda s: s[0] is JobState.QUEUED)
    assert states == [(JobState.COMPLETED, 1), (JobState.QUEUED, 0)]
    assert node.agent.held.is_set() and dynamo.nodes.get("a").status is NodeStatus.DRAINING
    node.agent.request_stop()
    worker.join(timeout=10)
    assert not worker.is_alive()
