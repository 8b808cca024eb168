"""A node environment: the ComfyUI version, the pinned custom nodes and the models of a fleet.

The **environment id** names what a node runs: the first 12 hex digits of the SHA-256 of the
validated environment as canonical JSON (sorted keys, no spaces; custom nodes sorted by name,
models by folder then URL, since neither order changes what ComfyUI loads). Comments, layout
and the order of entries in the file do not change it; any value does.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from comfyfleet.workflow.refs import ModelRef

ENVIRONMENT_ID_LENGTH = 12
COMMIT = re.compile(r"^[0-9a-fA-F]{40}$")  # a full commit hash: what "pinned" means
# Bumped if the canonical form changes, so an old id never names a new meaning.
CANONICAL_FORMAT = 1


class EnvironmentProblems(ValueError):
    """An environment file is not valid; ``problems`` holds every problem, each naming its place."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class CustomNode:
    """One custom node: the folder under ``custom_nodes/``, its repository and its commit."""

    name: str
    git: str
    rev: str  # a full 40-hex commit, lower case
    pip: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "git": self.git, "rev": self.rev, "pip": list(self.pip)}


@dataclass(frozen=True, slots=True)
class Environment:
    """A validated environment file."""

    comfyui_version: str | None  # a tag or a 40-hex commit; None: ComfyUI is left as it is
    custom_nodes: tuple[CustomNode, ...] = ()
    models: tuple[ModelRef, ...] = ()
    environment_id: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha256(canonical_json(self.canonical()).encode()).hexdigest()
        object.__setattr__(self, "environment_id", digest[:ENVIRONMENT_ID_LENGTH])

    def canonical(self) -> dict[str, Any]:
        """The resolved environment the id is the hash of."""
        nodes = sorted(self.custom_nodes, key=lambda node: node.name)
        models = sorted(self.models, key=lambda model: (model.folder, model.url))
        return {
            "format": CANONICAL_FORMAT,
            "comfyui": {"version": self.comfyui_version},
            "custom_nodes": [node.to_dict() for node in nodes],
            "models": [model_entry(model) for model in models],
        }

    def node(self, name: str) -> CustomNode | None:
        return next((node for node in self.custom_nodes if node.name == name), None)


def model_entry(model: ModelRef) -> dict[str, Any]:
    """What the file says of a model: its URL, its folder and, when given, its SHA-256."""
    entry: dict[str, Any] = {"url": model.url, "folder": model.folder}
    if model.sha256 is not None:
        entry["sha256"] = model.sha256
    return entry


def canonical_json(document: Any) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
