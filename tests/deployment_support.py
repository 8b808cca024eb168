"""A small deployment over the recorded model-free graph, shared by the deployment tests."""

from __future__ import annotations

import copy
from typing import Any

from tests.support import basic_graph

# ComfyUI 0.3.64's ImageScale: its upscale_method and crop are lists of options.
SCALE_NODE = {
    "class_type": "ImageScale",
    "inputs": {
        "image": ["1", 0],
        "upscale_method": "nearest-exact",
        "width": 64,
        "height": 64,
        "crop": "disabled",
    },
}
INPUTS: dict[str, Any] = {
    "width": {
        "node": "1",
        "input": "width",
        "type": "integer",
        "default": 64,
        "minimum": 8,
        "maximum": 1024,
        "description": "Canvas width.",
    },
    "color": {"node": "1", "input": "color", "type": "integer", "default": 0},
    "prefix": {"node": "3", "input": "filename_prefix", "type": "string"},
}


def deployment_body(name: str = "invert", **changes: Any) -> dict[str, Any]:
    """A POST /v1/deployments body: two inputs with defaults, one required (prefix)."""
    body: dict[str, Any] = {
        "name": name,
        "workflow": basic_graph(),
        "inputs": copy.deepcopy(INPUTS),
        "description": "An inverted canvas.",
    }
    body.update(changes)
    return body


def with_input(input_name: str, declaration: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The deployment body with one more (or a replaced) input declaration."""
    body = deployment_body(**changes)
    body["inputs"][input_name] = declaration
    return body


def scale_graph() -> dict[str, Any]:
    """The basic graph with an ImageScale between the canvas and the invert."""
    graph = basic_graph()
    graph["4"] = copy.deepcopy(SCALE_NODE)
    graph["2"]["inputs"]["image"] = ["4", 0]
    return graph
