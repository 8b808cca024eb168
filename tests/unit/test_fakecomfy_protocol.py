"""fakecomfy's HTTP and WebSocket protocol, compared with a real ComfyUI 0.3.64's recordings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import websocket

from fakecomfy import RunningFakeComfy, placeholder_safetensors, start_fakecomfy
from tests.fakecomfy_support import (
    ComfySocket,
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
        yield running


def get(comfy: RunningFakeComfy, path: str, **headers: str) -> requests.Response:
    return requests.get(f"{comfy.url}{path}", headers=headers, timeout=10)


def test_a_model_free_graph_runs_with_the_recorded_messages_and_history(
    comfy: RunningFakeComfy,
) -> None:
    # given: an earlier file of the same prefix, as the recording server had (it saved _00002_)
    recorded = recording("basic")
    (comfy.root / "output" / "probe_00001_.png").write_bytes(b"")

    # when: a client that sent the handshake (as the recording's did) runs the graph
    run = run_prompt(comfy, basic_graph(), handshake=True)

    # then: every message and the history equal the recording, ids and timestamps aside
    assert run.types() == recorded["ws_types"]
    ours, theirs = run.ids(), recorded_ids(recorded)
    assert normalized(run.messages, ours) == normalized(
        without_time(recorded["ws_messages"]), theirs
    )
    assert normalized(run.history, ours) == normalized(recorded["history"], theirs)
    assert normalized(run.response, ours) == normalized(recorded["post_response"], theirs)


def test_resubmitting_the_same_graph_is_served_entirely_from_cache_as_recorded(
    comfy: RunningFakeComfy,
) -> None:
    # given: the graph ran once (the second recorded run follows the first one)
    recorded = recording("basic_again_cached")
    (comfy.root / "output" / "probe_00001_.png").write_bytes(b"")
    run_prompt(comfy, basic_graph(), handshake=True)

    # when
    again = run_prompt(comfy, basic_graph())

    # then: nothing runs, the old output is repeated, as the recording shows
    assert again.types() == recorded["ws_types"]
    ours, theirs = again.ids(), recorded_ids(recorded)
    expected = normalized(without_time(recorded["ws_messages"]), theirs)
    assert normalized(again.messages, ours) == expected
    assert normalized(again.history, ours) == normalized(recorded["history"], theirs)
    assert sorted((comfy.root / "output").iterdir()) == [
        comfy.root / "output" / "probe_00001_.png",
        comfy.root / "output" / "probe_00002_.png",
    ]


def test_the_history_is_written_before_executing_null_is_sent(comfy: RunningFakeComfy) -> None:
    # given
    socket = ComfySocket(comfy)
    prompt_id = post_prompt(comfy, basic_graph(), socket.client_id).json()["prompt_id"]

    # when: the client reads the history as soon as the run is done for it
    messages = socket.follow(prompt_id)
    history = get(comfy, f"/history/{prompt_id}").json()
    socket.close()

    # then: it is there, and execution_success came before the final status and executing
    assert history[prompt_id]["status"]["status_str"] == "success"
    assert [m["type"] for m in messages[-3:]] == ["execution_success", "status", "executing"]


def test_the_history_is_empty_while_a_prompt_is_pending_or_running(
    comfy: RunningFakeComfy,
) -> None:
    # given: a sampler that takes a while
    (comfy.root / "models" / "checkpoints" / "m.safetensors").write_bytes(placeholder_safetensors())
    socket = ComfySocket(comfy)
    graph = sd15_graph("m.safetensors", seed=1, prefix="slow", steps=30)
    prompt_id = post_prompt(comfy, graph, socket.client_id).json()["prompt_id"]

    # when
    socket.wait_for("progress", value=1)
    during = get(comfy, f"/history/{prompt_id}").json()
    socket.follow(prompt_id)
    socket.close()

    # then
    assert during == {}
    assert prompt_id in get(comfy, f"/history/{prompt_id}").json()


def test_messages_for_a_prompt_go_only_to_the_socket_that_submitted_it(
    comfy: RunningFakeComfy,
) -> None:
    # given: two clients connected
    owner, bystander = ComfySocket(comfy), ComfySocket(comfy)

    # when: one of them runs a prompt
    prompt_id = post_prompt(comfy, basic_graph(), owner.client_id).json()["prompt_id"]
    owner.follow(prompt_id)
    bystander.wait_for("status", status={"exec_info": {"queue_remaining": 0}})
    owner.close()
    bystander.close()

    # then: the other one sees only what ComfyUI broadcasts (queue status, progress_state)
    assert {m["type"] for m in bystander.received} == {"status", "progress_state"}
    assert "executed" in {m["type"] for m in owner.received}


def test_a_client_reconnecting_with_its_id_receives_the_rest_of_the_run(
    comfy: RunningFakeComfy,
) -> None:
    # given: a client whose prompt is sampling when its socket drops
    (comfy.root / "models" / "checkpoints" / "m.safetensors").write_bytes(placeholder_safetensors())
    first = ComfySocket(comfy)
    graph = sd15_graph("m.safetensors", seed=1, prefix="reconnect", steps=60)
    prompt_id = post_prompt(comfy, graph, first.client_id).json()["prompt_id"]
    first.wait_for("progress", value=2)
    first.close()

    # when: it reconnects with the same client id
    second = ComfySocket(comfy, client_id=first.client_id)
    messages = second.follow(prompt_id)
    second.close()

    # then: it is told the running node, then gets the remaining progress and the end
    assert messages[0]["data"]["sid"] == first.client_id
    assert messages[1] == {"type": "executing", "data": {"node": "3"}}
    values = [m["data"]["value"] for m in messages if m["type"] == "progress"]
    assert values and values[-1] == 60 and values == list(range(values[0], 61))


def test_messages_for_a_client_that_is_gone_are_dropped(comfy: RunningFakeComfy) -> None:
    # given: a client that posts and disconnects at once
    gone = ComfySocket(comfy)
    prompt_id = post_prompt(comfy, basic_graph(), gone.client_id).json()["prompt_id"]
    gone.close()
    history = wait_for_history(comfy, prompt_id)

    # when: it reconnects after the run ended
    back = ComfySocket(comfy, client_id=gone.client_id)

    # then: only the greeting arrives; the history has the outcome
    with pytest.raises(websocket.WebSocketTimeoutException):
        back.recv(timeout=0.3)
    back.close()
    assert back.received[0]["type"] == "status"
    assert history["status"]["completed"] is True


def test_the_feature_flags_handshake_is_answered_with_the_recorded_flags(
    comfy: RunningFakeComfy,
) -> None:
    # given
    expected = without_time(recording("basic")["ws_messages"])[1]

    # when
    with_handshake = ComfySocket(comfy, handshake=True)
    without = ComfySocket(comfy)

    # then: only the client that asked gets the server's flags, right after the greeting
    assert with_handshake.received[1] == expected
    with pytest.raises(websocket.WebSocketTimeoutException):
        without.recv(timeout=0.2)
    with_handshake.close()
    without.close()


def test_a_non_json_body_gets_comfyuis_plain_500(comfy: RunningFakeComfy) -> None:
    # given
    recorded = recording("non_json_body")

    # when
    answer = requests.post(f"{comfy.url}/prompt", data=b"{not json", timeout=10)

    # then
    assert (answer.status_code, answer.text) == (recorded["status"], recorded["body"])


def test_a_body_without_a_prompt_is_rejected_with_no_prompt(comfy: RunningFakeComfy) -> None:
    # given
    recorded = recording("no_prompt_key")

    # when
    answer = requests.post(f"{comfy.url}/prompt", json={"client_id": "x"}, timeout=10)

    # then
    assert (answer.status_code, answer.json()) == (recorded["status"], recorded["body"])


def test_every_posted_body_takes_a_queue_number_even_a_rejected_one(
    comfy: RunningFakeComfy,
) -> None:
    # given: a rejected body first
    requests.post(f"{comfy.url}/prompt", json={"client_id": "x"}, timeout=10)

    # when
    answer = post_prompt(comfy, basic_graph(), "x")

    # then: as recorded (the empty-checkpoint run got number 9 after 9 earlier bodies)
    assert answer.json()["number"] == 1


def test_a_caller_chosen_prompt_id_is_used(comfy: RunningFakeComfy) -> None:
    # when
    run_id = "job-0001"
    answer = post_prompt(comfy, basic_graph(), "x", prompt_id=run_id)

    # then
    assert answer.json()["prompt_id"] == run_id
    assert wait_for_history(comfy, run_id)["prompt"][1] == run_id


def test_every_route_also_answers_under_api(comfy: RunningFakeComfy) -> None:
    # when / then
    for path in (
        "/system_stats",
        "/queue",
        "/prompt",
        "/object_info/EmptyImage",
        "/models",
        "/history",
        "/features",
        "/embeddings",
        "/models/checkpoints",
    ):
        plain, prefixed = get(comfy, path), get(comfy, "/api" + path)
        assert (plain.status_code, prefixed.status_code) == (200, 200), path
        assert prefixed.json() == plain.json() or path == "/system_stats"


def test_a_request_whose_origin_does_not_match_its_host_is_forbidden(
    comfy: RunningFakeComfy,
) -> None:
    # when
    foreign = get(comfy, "/queue", Origin="http://evil.example")
    foreign_post = requests.post(
        f"{comfy.url}/prompt", json={}, headers={"Origin": "http://evil.example"}, timeout=10
    )
    same = get(comfy, "/queue", Origin=comfy.url)
    none = get(comfy, "/queue")

    # then
    assert (foreign.status_code, foreign_post.status_code) == (403, 403)
    assert (same.status_code, none.status_code) == (200, 200)


def test_the_info_routes_answer_with_the_recorded_shapes(comfy: RunningFakeComfy) -> None:
    # given
    recorded = recording("misc")

    # when
    stats = get(comfy, "/system_stats").json()

    # then
    expected_stats = recorded["/system_stats"]["body"]
    assert set(stats) == set(expected_stats)
    assert set(stats["system"]) == set(expected_stats["system"])
    assert set(stats["devices"][0]) == set(expected_stats["devices"][0])
    assert stats["system"]["comfyui_version"] == "0.3.64"
    for path in ("/queue", "/prompt", "/models", "/models/checkpoints", "/features", "/embeddings"):
        assert get(comfy, path).json() == recorded[path]["body"], path
    assert isinstance(get(comfy, "/extensions").json(), list)
    assert get(comfy, "/models/no_such_folder").status_code == 404
    assert get(comfy, "/object_info/NoSuchNode").json() == {}


def test_history_with_max_items_returns_the_latest_entries(comfy: RunningFakeComfy) -> None:
    # given: two finished runs
    first = run_prompt(comfy, basic_graph())
    graph = basic_graph()
    graph["1"]["inputs"]["color"] = 255
    second = run_prompt(comfy, graph)

    # when
    latest = get(comfy, "/history?max_items=1").json()
    everything = get(comfy, "/history").json()

    # then
    assert list(latest) == [second.prompt_id]
    assert list(everything) == [first.prompt_id, second.prompt_id]
