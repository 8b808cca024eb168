"""The validator refuses what a real ComfyUI 0.3.64 refused, at the same node and input.

The recordings hold ComfyUI's answers (transcripts.json); each case rebuilds the graph the
recording describes and checks that our catalogue validation reports the same place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from comfyfleet.catalogue import NodeCatalogue
from comfyfleet.settings import Settings
from comfyfleet.workflow import validate_workflow
from tests.support import basic_graph, checkpoint_graph, load_fixture

# ComfyUI's error type → ours (we fold its two range errors into one code).
COMFY_TO_OURS = {
    "value_smaller_than_min": "value_out_of_range",
    "value_bigger_than_max": "value_out_of_range",
    "invalid_input_type": "invalid_input_type",
    "required_input_missing": "required_input_missing",
    "value_not_in_list": "value_not_in_list",
    "return_type_mismatch": "link_type_mismatch",
}


def _set(node: str, name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(graph: dict[str, Any]) -> None:
        graph[node]["inputs"][name] = value

    return mutate


def _delete(node: str, name: str) -> Callable[[dict[str, Any]], None]:
    def mutate(graph: dict[str, Any]) -> None:
        del graph[node]["inputs"][name]

    return mutate


INPUT_CASES = {
    "invalid_value_below_min": (basic_graph, _set("1", "width", 0)),
    "invalid_value_not_int": (basic_graph, _set("1", "width", "abc")),
    "missing_required_input": (basic_graph, _delete("1", "height")),
    "missing_checkpoint": (
        lambda: checkpoint_graph("does_not_exist.safetensors"),
        lambda graph: None,
    ),
}


@pytest.mark.parametrize("scenario", sorted(INPUT_CASES))
def test_input_errors_match_comfyuis_node_errors(
    scenario: str, settings: Settings, catalogue: NodeCatalogue
) -> None:
    recorded = load_fixture("transcripts.json")[scenario]["post_response"]["node_errors"]
    expected = {
        (COMFY_TO_OURS[error["type"]], node_id, error["extra_info"]["input_name"])
        for node_id, node in recorded.items()
        for error in node["errors"]
    }
    make, mutate = INPUT_CASES[scenario]
    graph = make()
    mutate(graph)

    result = validate_workflow(graph, settings=settings, catalogue=catalogue)

    assert {(e.code.value, e.node_id, e.input) for e in result.errors} == expected


def test_unknown_class_matches_comfyuis_invalid_prompt(
    settings: Settings, catalogue: NodeCatalogue
) -> None:
    recorded = load_fixture("transcripts.json")["unknown_class_type"]["post_response"]["error"]
    assert recorded["details"] == "Node ID '#2'"
    graph = basic_graph()
    graph["2"]["class_type"] = "NoSuchNode"

    result = validate_workflow(graph, settings=settings, catalogue=catalogue)

    assert [(e.code.value, e.node_id) for e in result.errors] == [("unknown_class_type", "2")]


def test_no_output_matches_comfyuis_prompt_no_outputs(
    settings: Settings, catalogue: NodeCatalogue
) -> None:
    recorded = load_fixture("transcripts.json")["no_output_node"]["post_response"]["error"]
    assert recorded["type"] == "prompt_no_outputs"
    graph = basic_graph()
    del graph["3"]

    result = validate_workflow(graph, settings=settings, catalogue=catalogue)

    assert [e.code.value for e in result.errors] == ["no_output_node"]


def test_the_graph_comfyui_ran_is_valid(settings: Settings, catalogue: NodeCatalogue) -> None:
    history = load_fixture("transcripts.json")["basic"]["history"]
    [entry] = history.values()
    graph = entry["prompt"][2]

    assert graph == basic_graph()
    assert validate_workflow(graph, settings=settings, catalogue=catalogue).ok
