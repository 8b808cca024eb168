"""Helpers shared by the test tiers (paths to the recordings, small graph builders)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"
COMFYUI_FIXTURES = FIXTURES / "comfyui-0.3.64"

# The model-free graph recorded against a real ComfyUI (transcripts.json, "basic").
BASIC_GRAPH: dict[str, Any] = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0},
    },
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "probe"}},
}


def basic_graph() -> dict[str, Any]:
    return copy.deepcopy(BASIC_GRAPH)


def load_fixture(name: str) -> Any:
    return json.loads((COMFYUI_FIXTURES / name).read_text())


def checkpoint_graph(ckpt_name: str) -> dict[str, Any]:
    """A loader feeding an output, with the node ids of ComfyUI's recording (4 → … → 7)."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "5": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0},
        },
        "6": {"class_type": "VAEEncode", "inputs": {"pixels": ["5", 0], "vae": ["4", 2]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["4", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "x"}},
    }


def environment_lock(environment: str) -> Any:
    """A lock file's content naming ``environment``: node setup's output, no custom node."""
    from comfyfleet.environment.lock import Lock

    return Lock(
        environment_id=environment,
        comfyui_version="v0.3.64",
        comfyui_commit=None,
        python="/usr/bin/python3",
        pip_freeze_sha256="0" * 64,
        custom_nodes=(),
        models=(),
    )
