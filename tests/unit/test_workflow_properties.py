"""Property-based tests: no input makes the validator raise; rewriting touches model inputs only."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comfyfleet.catalogue import NodeCatalogue
from comfyfleet.settings import Settings
from comfyfleet.workflow import model_key, rewrite_workflow, validate_workflow
from comfyfleet.workflow.refs import LOADER_INPUTS
from tests.support import COMFYUI_FIXTURES

CATALOGUE = NodeCatalogue.from_file(COMFYUI_FIXTURES / "object_info_core.json")
SETTINGS = Settings()
PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
any_json = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)

CLASS_TYPES = sorted(CATALOGUE) + ["NoSuchNode", "CheckpointSave", ""]
INPUT_NAMES = sorted({spec.name for name in CATALOGUE for spec in CATALOGUE.get(name).inputs})
NODE_IDS = [str(i) for i in range(8)]
URLS = [
    "https://huggingface.co/a/b/resolve/main/m.safetensors",
    "https://huggingface.co/a/b/blob/main/m.safetensors",
    "http://10.0.0.1/x",
    "https://169.254.169.254/latest",
    "s3://comfyfleet-models/x.pt",
    "https://[::1",
    "../../etc/passwd",
    "ok.safetensors",
]

input_values = (
    json_scalars
    | st.sampled_from(URLS)
    | st.tuples(st.sampled_from(NODE_IDS + ["99"]), st.integers(-1, 4)).map(list)
    | any_json
)
nodes = (
    st.fixed_dictionaries(
        {
            "class_type": st.sampled_from(CLASS_TYPES) | json_scalars,
            "inputs": st.dictionaries(st.sampled_from(INPUT_NAMES), input_values, max_size=6)
            | json_scalars,
        }
    )
    | any_json
)
graphs = st.dictionaries(st.sampled_from(NODE_IDS), nodes, max_size=8)
manifests = (
    st.none()
    | any_json
    | st.lists(
        st.fixed_dictionaries(
            {
                "url": st.sampled_from(URLS) | json_scalars,
                "folder": st.sampled_from(["loras", "input", "x"]),
            },
            optional={
                "filename": st.text(max_size=12),
                "sha256": st.text(max_size=64),
                "size": json_scalars,
            },
        ),
        max_size=3,
    )
)


def _validate_all_ways(document: Any, manifest: Any = None) -> None:
    for catalogue in (None, CATALOGUE):
        result = validate_workflow(
            document, settings=SETTINGS, catalogue=catalogue, manifest=manifest
        )
        assert result.ok == (not result.errors)
        json.dumps(result.to_dict())


@PROPERTY_SETTINGS
@given(any_json)
def test_arbitrary_json_never_makes_the_validator_raise(document: Any) -> None:
    _validate_all_ways(document)


@PROPERTY_SETTINGS
@given(graphs, manifests)
def test_graph_shaped_junk_never_makes_the_validator_raise(graph: Any, manifest: Any) -> None:
    _validate_all_ways(graph, manifest)


MODEL_URLS = [f"https://huggingface.co/org/repo/resolve/main/m{i}.safetensors" for i in range(4)]
LOADER_SITES = [(cls, name) for cls, inputs in LOADER_INPUTS.items() for name in inputs]
plain_values = json_scalars | st.tuples(st.sampled_from(NODE_IDS), st.integers(0, 2)).map(list)


@st.composite
def graphs_with_models(draw: st.DrawFn) -> tuple[dict[str, Any], set[tuple[str, str]]]:
    """A graph and the (node, input) positions that name a model URL."""
    graph: dict[str, Any] = {}
    sites: set[tuple[str, str]] = set()
    for node_id in draw(st.lists(st.sampled_from(NODE_IDS), unique=True, max_size=8)):
        inputs = draw(st.dictionaries(st.sampled_from(INPUT_NAMES), plain_values, max_size=4))
        if draw(st.booleans()):
            class_type, name = draw(st.sampled_from(LOADER_SITES))
            inputs[name] = draw(st.sampled_from(MODEL_URLS))
            sites.add((node_id, name))
        else:
            class_type = draw(st.sampled_from(CLASS_TYPES))
            inputs = {k: v for k, v in inputs.items() if k not in LOADER_INPUTS.get(class_type, {})}
        graph[node_id] = {"class_type": class_type, "inputs": inputs}
    return graph, sites


@PROPERTY_SETTINGS
@given(graphs_with_models())
def test_extract_then_rewrite_changes_exactly_the_model_inputs(
    case: tuple[dict[str, Any], set[tuple[str, str]]],
) -> None:
    graph, sites = case
    original = copy.deepcopy(graph)
    models = validate_workflow(graph, settings=SETTINGS).models
    local = {m.url: f"local-{m.key[:8]}.safetensors" for m in models}
    by_key = {m.key: local[m.url] for m in models}

    rewritten = rewrite_workflow(graph, local)

    assert graph == original
    assert {m.key for m in models} == {model_key(graph[n]["inputs"][i]) for n, i in sites}
    for node_id, node in graph.items():
        assert rewritten[node_id]["class_type"] == node["class_type"]
        for name, value in node["inputs"].items():
            new = rewritten[node_id]["inputs"][name]
            if (node_id, name) in sites:
                assert new == by_key[model_key(value)]
            else:
                assert new is value
