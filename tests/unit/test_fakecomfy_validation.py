"""``POST /prompt`` validation: the 400 envelopes a real ComfyUI 0.3.64 answered, exactly."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from fakecomfy import RunningFakeComfy, start_fakecomfy
from tests.fakecomfy_support import recording, run_prompt
from tests.support import basic_graph, checkpoint_graph


@pytest.fixture
def comfy(tmp_path: Path) -> Iterator[RunningFakeComfy]:
    with start_fakecomfy(tmp_path / "comfy", step_seconds=0.01) as running:
        yield running


def post(comfy: RunningFakeComfy, graph: Any) -> requests.Response:
    return requests.post(
        f"{comfy.url}/prompt", json={"prompt": graph, "client_id": "tester"}, timeout=10
    )


def width_below_min(graph: dict[str, Any]) -> None:
    graph["1"]["inputs"]["width"] = 0


def width_not_int(graph: dict[str, Any]) -> None:
    graph["1"]["inputs"]["width"] = "abc"


def height_missing(graph: dict[str, Any]) -> None:
    del graph["1"]["inputs"]["height"]


def unknown_class(graph: dict[str, Any]) -> None:
    graph["2"]["class_type"] = "NoSuchNode"


def no_output(graph: dict[str, Any]) -> None:
    del graph["3"]


@pytest.mark.parametrize(
    ("scenario", "break_graph"),
    [
        ("invalid_value_below_min", width_below_min),
        ("invalid_value_not_int", width_not_int),
        ("missing_required_input", height_missing),
        ("unknown_class_type", unknown_class),
        ("no_output_node", no_output),
    ],
)
def test_an_invalid_graph_gets_the_recorded_400_envelope(
    comfy: RunningFakeComfy, scenario: str, break_graph: Callable[[dict[str, Any]], None]
) -> None:
    # given: the recorded model-free graph, broken as in the recording
    recorded = recording(scenario)
    graph = basic_graph()
    break_graph(graph)

    # when
    answer = post(comfy, graph)

    # then: status and body equal ComfyUI's, field for field
    assert answer.status_code == recorded["post_status"] == 400
    assert answer.json() == recorded["post_response"]


def test_a_checkpoint_that_is_not_in_the_folder_fails_as_value_not_in_list(
    comfy: RunningFakeComfy,
) -> None:
    # given
    recorded = recording("missing_checkpoint")

    # when
    answer = post(comfy, checkpoint_graph("does_not_exist.safetensors"))

    # then
    assert answer.status_code == 400
    assert answer.json() == recorded["post_response"]


def test_a_link_of_the_wrong_type_fails_as_return_type_mismatch(comfy: RunningFakeComfy) -> None:
    # given: a LATENT wired into SaveImage's IMAGE input
    graph = basic_graph()
    graph["1"] = {
        "class_type": "EmptyLatentImage",
        "inputs": {"width": 64, "height": 64, "batch_size": 1},
    }
    graph["3"]["inputs"]["images"] = ["1", 0]

    # when
    answer = post(comfy, graph)

    # then
    [error] = answer.json()["node_errors"]["3"]["errors"]
    assert answer.status_code == 400
    assert error["type"] == "return_type_mismatch"
    assert error["details"] == "images, received_type(LATENT) mismatch input_type(IMAGE)"
    assert error["extra_info"]["input_name"] == "images"
    assert error["extra_info"]["linked_node"] == ["1", 0]


def test_a_value_outside_a_choice_list_fails_as_value_not_in_list(
    comfy: RunningFakeComfy,
) -> None:
    # given
    graph = basic_graph()
    graph["2"] = {
        "class_type": "ImageScale",
        "inputs": {
            "image": ["1", 0],
            "upscale_method": "magic",
            "width": 32,
            "height": 32,
            "crop": "disabled",
        },
    }

    # when
    answer = post(comfy, graph)

    # then
    [error] = answer.json()["node_errors"]["2"]["errors"]
    assert error["type"] == "value_not_in_list"
    assert error["details"].startswith("upscale_method: 'magic' not in ['nearest-exact',")
    assert error["extra_info"]["received_value"] == "magic"


def test_an_image_that_is_not_in_the_input_folder_fails_loadimages_own_check(
    comfy: RunningFakeComfy,
) -> None:
    # given
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "nowhere.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }

    # when
    answer = post(comfy, graph)

    # then
    [error] = answer.json()["node_errors"]["1"]["errors"]
    assert error == {
        "type": "custom_validation_failed",
        "message": "Custom validation failed for node",
        "details": "image - Invalid image file: nowhere.png",
        "extra_info": {"input_name": "image"},
    }


def test_a_prompt_without_class_type_is_an_invalid_prompt(comfy: RunningFakeComfy) -> None:
    # given
    graph = basic_graph()
    del graph["2"]["class_type"]

    # when
    answer = post(comfy, graph)

    # then
    assert answer.status_code == 400
    assert answer.json()["error"] == {
        "type": "invalid_prompt",
        "message": "Cannot execute because a node is missing the class_type property.",
        "details": "Node ID '#2'",
        "extra_info": {},
    }


def test_a_node_no_output_depends_on_is_not_validated(comfy: RunningFakeComfy) -> None:
    # given: a broken node hanging off nothing
    graph = basic_graph()
    graph["9"] = {"class_type": "EmptyImage", "inputs": {"width": 0}}

    # when
    answer = post(comfy, graph)

    # then
    assert answer.status_code == 200
    assert answer.json()["node_errors"] == {}


def test_an_invalid_output_is_dropped_and_reported_while_the_valid_one_runs(
    comfy: RunningFakeComfy,
) -> None:
    # given: two outputs, one fed by a broken branch
    graph = basic_graph()
    graph["4"] = {
        "class_type": "EmptyImage",
        "inputs": {"width": 0, "height": 8, "batch_size": 1, "color": 0},
    }
    graph["5"] = {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "b"}}

    # when
    run = run_prompt(comfy, graph)

    # then: 200, the broken branch in node_errors, only output 3 ran
    assert run.response["node_errors"]["4"]["dependent_outputs"] == ["5"]
    assert run.response["node_errors"]["4"]["errors"][0]["type"] == "value_smaller_than_min"
    history = run.history[run.prompt_id]
    assert history["prompt"][4] == ["3"]
    assert list(history["outputs"]) == ["3"]


def test_constant_inputs_are_converted_before_the_prompt_is_queued(
    comfy: RunningFakeComfy,
) -> None:
    # given: numbers sent as strings, as some clients do
    graph = basic_graph()
    graph["1"]["inputs"]["width"] = "32"
    graph["1"]["inputs"]["color"] = 255.0

    # when
    run = run_prompt(comfy, graph)

    # then: the prompt that ran (and its history) holds ints
    inputs = run.history[run.prompt_id]["prompt"][2]["1"]["inputs"]
    assert (inputs["width"], inputs["color"]) == (32, 255)
