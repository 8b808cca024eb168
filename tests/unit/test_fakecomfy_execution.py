"""Running prompts: runtime errors, interrupts, the queue and the cache, as ComfyUI does."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from fakecomfy import RunningFakeComfy, placeholder_safetensors, start_fakecomfy
from tests.fakecomfy_support import (
    ComfySocket,
    Message,
    normalized,
    post_prompt,
    recorded_ids,
    recording,
    run_prompt,
    sd15_graph,
    wait_for_history,
    without_time,
)
from tests.support import basic_graph


@pytest.fixture
def comfy(tmp_path: Path) -> Iterator[RunningFakeComfy]:
    with start_fakecomfy(tmp_path / "comfy", step_seconds=0.01) as running:
        (running.root / "models" / "checkpoints" / "m.safetensors").write_bytes(
            placeholder_safetensors()
        )
        yield running


def recorded_graph(scenario: dict[str, Any]) -> dict[str, Any]:
    [entry] = scenario["history"].values()
    graph: dict[str, Any] = entry["prompt"][2]
    return graph


def comparable(value: Any) -> Any:
    """Trim what differs between two runs of one failure: tracebacks, set orders, numbers."""
    if isinstance(value, dict):
        result = {key: comparable(item) for key, item in value.items()}
        if "traceback" in result:
            result["traceback"] = ["<trimmed>"]
        if "current_outputs" in result:
            result["current_outputs"] = sorted(result["current_outputs"])
        if isinstance(result.get("prompt"), list):
            result["prompt"][0] = "<number>"
        return result
    if isinstance(value, list):
        return [comparable(item) for item in value]
    return value


def interrupt(comfy: RunningFakeComfy, **body: Any) -> requests.Response:
    return requests.post(f"{comfy.url}/interrupt", json=body or None, timeout=10)


def progress_values(messages: list[Message]) -> list[int]:
    return [m["data"]["value"] for m in messages if m["type"] == "progress"]


def test_an_empty_checkpoint_fails_at_run_time_with_the_recorded_error(
    comfy: RunningFakeComfy, tmp_path: Path
) -> None:
    # given: the agent's symlink to an empty file, as in the recording
    recorded = recording("empty_checkpoint_runtime_error")
    empty = tmp_path / "store" / "probe_empty.safetensors"
    empty.parent.mkdir()
    empty.write_bytes(b"")
    (comfy.root / "models" / "checkpoints" / "probe_empty.safetensors").symlink_to(empty)

    # when
    run = run_prompt(comfy, recorded_graph(recorded))

    # then: same messages, same execution_error, same history as ComfyUI's
    assert run.types() == recorded["ws_types"]
    ours, theirs = run.ids(), recorded_ids(recorded)
    expected = comparable(normalized(without_time(recorded["ws_messages"]), theirs))
    assert comparable(normalized(run.messages, ours)) == expected
    assert comparable(normalized(run.history, ours)) == comparable(
        normalized(recorded["history"], theirs)
    )


def test_an_interrupt_takes_effect_at_the_next_node_boundary_as_recorded(
    comfy: RunningFakeComfy,
) -> None:
    # given: the recorded chain of slow blurs, running node 3
    recorded = recording("interrupt")
    socket = ComfySocket(comfy)
    prompt_id = post_prompt(comfy, recorded_graph(recorded), socket.client_id).json()["prompt_id"]
    socket.wait_for("executing", node="3")
    # "executing" is sent just before a node's interrupt check; this lets node 3 pass it
    # and start its ~0.3 s blur, as it had on the recording server when the interrupt came.
    time.sleep(0.05)

    # when: interrupted while node 3 runs
    answer = interrupt(comfy)
    messages = socket.follow(prompt_id)
    socket.close()
    history = requests.get(f"{comfy.url}/history/{prompt_id}", timeout=10).json()

    # then: node 3 completes, node 4 starts and is interrupted, exactly as recorded
    assert (answer.status_code, answer.text) == (200, "")
    ids = {prompt_id: "<prompt_id>", socket.client_id: "<client_id>"}
    theirs = recorded_ids(recorded)
    assert [m["type"] for m in messages] == recorded["ws_types"]
    expected = comparable(normalized(without_time(recorded["ws_messages"]), theirs))
    assert comparable(normalized(messages, ids)) == expected
    assert comparable(normalized(history, ids)) == comparable(
        normalized(recorded["history"], theirs)
    )


def test_an_interrupt_stops_a_sampler_between_two_steps(comfy: RunningFakeComfy) -> None:
    # given: a 50-step sampler that has done two steps
    socket = ComfySocket(comfy)
    graph = sd15_graph("m.safetensors", seed=1, prefix="stopped", steps=50)
    prompt_id = post_prompt(comfy, graph, socket.client_id).json()["prompt_id"]
    socket.wait_for("progress", value=2)

    # when: that prompt is interrupted by id
    interrupt(comfy, prompt_id=prompt_id)
    messages = socket.follow(prompt_id)
    socket.close()

    # then: the sampler stopped after a whole step, well before the end
    values = progress_values(messages)
    assert values == list(range(1, len(values) + 1)) and len(values) < 50
    [stopped] = [m["data"] for m in messages if m["type"] == "execution_interrupted"]
    assert (stopped["node_id"], stopped["node_type"]) == ("3", "KSampler")
    assert sorted(stopped["executed"]) == ["4", "5", "6", "7"]
    assert "execution_success" not in {m["type"] for m in messages}


def test_an_interrupt_naming_another_prompt_is_ignored(comfy: RunningFakeComfy) -> None:
    # given
    socket = ComfySocket(comfy)
    graph = sd15_graph("m.safetensors", seed=1, prefix="kept", steps=10)
    prompt_id = post_prompt(comfy, graph, socket.client_id).json()["prompt_id"]
    socket.wait_for("progress", value=1)

    # when
    answer = interrupt(comfy, prompt_id="some-other-prompt")
    messages = socket.follow(prompt_id)
    socket.close()

    # then
    assert answer.status_code == 200
    assert progress_values(messages)[-1] == 10
    assert "execution_success" in {m["type"] for m in messages}


def test_an_interrupt_while_idle_does_not_stop_the_next_prompt(comfy: RunningFakeComfy) -> None:
    # given
    interrupt(comfy)

    # when
    run = run_prompt(comfy, basic_graph())

    # then
    assert run.history[run.prompt_id]["status"]["status_str"] == "success"


def test_a_pending_prompt_can_be_deleted_from_the_queue(comfy: RunningFakeComfy) -> None:
    # given: a long prompt running, two waiting
    socket = ComfySocket(comfy)
    long = sd15_graph("m.safetensors", seed=1, prefix="long", steps=100)
    running = post_prompt(comfy, long, socket.client_id).json()["prompt_id"]
    dropped = post_prompt(comfy, basic_graph(), socket.client_id).json()["prompt_id"]
    kept = post_prompt(comfy, basic_graph(), socket.client_id).json()["prompt_id"]
    socket.wait_for("progress", value=1)
    before = requests.get(f"{comfy.url}/queue", timeout=10).json()

    # when
    requests.post(f"{comfy.url}/queue", json={"delete": [dropped]}, timeout=10)
    after = requests.get(f"{comfy.url}/queue", timeout=10).json()
    interrupt(comfy, prompt_id=running)
    socket.follow(kept)
    socket.close()

    # then
    assert [item[1] for item in before["queue_running"]] == [running]
    assert [item[1] for item in before["queue_pending"]] == [dropped, kept]
    assert [item[1] for item in after["queue_pending"]] == [kept]
    assert requests.get(f"{comfy.url}/history/{dropped}", timeout=10).json() == {}
    assert wait_for_history(comfy, kept)["status"]["status_str"] == "success"


def test_a_prompt_sent_to_the_front_runs_before_earlier_ones(comfy: RunningFakeComfy) -> None:
    # given: a long prompt running and one waiting
    socket = ComfySocket(comfy)
    long = sd15_graph("m.safetensors", seed=2, prefix="long", steps=50)
    first = post_prompt(comfy, long, socket.client_id).json()["prompt_id"]
    socket.wait_for("progress", value=1)
    waiting = post_prompt(comfy, basic_graph(), socket.client_id).json()["prompt_id"]

    # when
    urgent_graph = basic_graph()
    urgent_graph["3"]["inputs"]["filename_prefix"] = "urgent"
    urgent = post_prompt(comfy, urgent_graph, socket.client_id, front=True).json()["prompt_id"]
    socket.follow(waiting)
    socket.close()

    # then
    history = requests.get(f"{comfy.url}/history", timeout=10).json()
    assert list(history) == [first, urgent, waiting]


def test_clearing_the_queue_drops_every_pending_prompt(comfy: RunningFakeComfy) -> None:
    # given
    socket = ComfySocket(comfy)
    long = sd15_graph("m.safetensors", seed=3, prefix="long", steps=100)
    running = post_prompt(comfy, long, socket.client_id).json()["prompt_id"]
    post_prompt(comfy, basic_graph(), socket.client_id)
    socket.wait_for("progress", value=1)

    # when
    requests.post(f"{comfy.url}/queue", json={"clear": True}, timeout=10)
    queue = requests.get(f"{comfy.url}/queue", timeout=10).json()
    interrupt(comfy)
    socket.follow(running)
    socket.close()

    # then
    assert queue["queue_pending"] == [] and len(queue["queue_running"]) == 1


def test_nodes_whose_inputs_did_not_change_are_served_from_cache(
    comfy: RunningFakeComfy,
) -> None:
    # given: the graph ran once
    run_prompt(comfy, basic_graph())
    changed = basic_graph()
    changed["3"]["inputs"]["filename_prefix"] = "other"

    # when: only the output node's input changed
    run = run_prompt(comfy, changed)

    # then
    [cached] = [m["data"]["nodes"] for m in run.messages if m["type"] == "execution_cached"]
    executing = [m["data"]["node"] for m in run.messages if m["type"] == "executing"]
    assert cached == ["1", "2"]
    assert executing == ["3", None]


def test_a_class_fakecomfy_does_not_implement_fails_when_run(comfy: RunningFakeComfy) -> None:
    # given: a catalogue class without an implementation
    graph = {
        "1": {
            "class_type": "EmptyHunyuanLatentVideo",
            "inputs": {"width": 64, "height": 64, "length": 1, "batch_size": 1},
        },
        "2": {"class_type": "VAELoader", "inputs": {"vae_name": "pixel_space"}},
        "3": {"class_type": "VAEDecode", "inputs": {"samples": ["1", 0], "vae": ["2", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "v"}},
    }

    # when
    run = run_prompt(comfy, graph)

    # then
    [error] = [m["data"] for m in run.messages if m["type"] == "execution_error"]
    assert (error["node_id"], error["exception_type"]) == ("1", "NotImplementedError")
    assert run.history[run.prompt_id]["status"]["status_str"] == "error"


def test_a_model_removed_after_queueing_fails_at_run_time(comfy: RunningFakeComfy) -> None:
    # given: a checkpoint prompt queued behind a long one
    socket = ComfySocket(comfy)
    model = comfy.root / "models" / "checkpoints" / "evicted.safetensors"
    model.write_bytes(placeholder_safetensors())
    long = sd15_graph("m.safetensors", seed=4, prefix="long", steps=50)
    post_prompt(comfy, long, socket.client_id)
    socket.wait_for("progress", value=1)
    queued = post_prompt(comfy, sd15_graph("evicted.safetensors", 5, "x"), socket.client_id)

    # when: the model disappears before the prompt runs
    model.unlink()
    messages = socket.follow(queued.json()["prompt_id"])
    socket.close()

    # then
    [error] = [m["data"] for m in messages if m["type"] == "execution_error"]
    assert error["exception_type"] == "FileNotFoundError"
    assert error["exception_message"] == (
        "Model in folder 'checkpoints' with filename 'evicted.safetensors' not found.\n"
    )
