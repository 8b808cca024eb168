"""Validating a 500-node workflow against the node catalogue (goal: under 20 ms)."""

from __future__ import annotations

import json
from typing import Any

from bench.common import Figure, time_calls
from comfyfleet.catalogue import core_catalogue
from comfyfleet.settings import Settings
from comfyfleet.workflow import validate_workflow

GOAL_SECONDS = 0.020
CHECKPOINT = "https://huggingface.co/org/repo/resolve/main/model.safetensors"


def five_hundred_node_graph() -> dict[str, Any]:
    """A valid graph of 500 nodes: image operations in a chain, a model round trip, a save."""
    graph: dict[str, Any] = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
    }
    steps: list[tuple[str, dict[str, Any]]] = [
        ("ImageInvert", {}),
        ("ImageBlur", {"blur_radius": 3, "sigma": 1.0}),
        (
            "ImageScale",
            {"upscale_method": "bilinear", "width": 64, "height": 64, "crop": "disabled"},
        ),
        ("ImageScaleBy", {"upscale_method": "area", "scale_by": 1.0}),
    ]
    previous = "1"
    for i in range(3, 498):
        class_type, widgets = steps[i % len(steps)]
        graph[str(i)] = {"class_type": class_type, "inputs": {"image": [previous, 0], **widgets}}
        previous = str(i)
    graph["498"] = {"class_type": "VAEEncode", "inputs": {"pixels": [previous, 0], "vae": ["2", 2]}}
    graph["499"] = {"class_type": "VAEDecode", "inputs": {"samples": ["498", 0], "vae": ["2", 2]}}
    graph["500"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["499", 0], "filename_prefix": "bench"},
    }
    return graph


def run(quick: bool = False) -> list[Figure]:
    settings = Settings()
    catalogue = core_catalogue()
    graph = five_hundred_node_graph()
    body = json.dumps(graph).encode()
    assert len(graph) == 500
    assert validate_workflow(graph, settings=settings, catalogue=catalogue).ok
    runs = 30 if quick else 200

    deep = time_calls(
        lambda: validate_workflow(graph, settings=settings, catalogue=catalogue), runs
    )
    structural = time_calls(lambda: validate_workflow(graph, settings=settings), runs)
    parse = time_calls(lambda: json.loads(body), runs)
    return [
        Figure(
            name="validate 500 nodes with catalogue",
            value=deep.median * 1000,
            unit="ms",
            goal=f"< {GOAL_SECONDS * 1000:.0f} ms",
            ok=deep.median < GOAL_SECONDS,
            baseline=f"json.loads of it {parse.median * 1000:.2f} ms "
            f"(x{deep.median / parse.median:.1f}); structural only "
            f"{structural.median * 1000:.2f} ms",
            noise=f"p95 {deep.p95 * 1000:.2f} ms, spread {deep.noise:.0%}, n={deep.runs}",
        )
    ]
