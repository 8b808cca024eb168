"""The lock file ``<comfy root>/comfyfleet-environment.lock.json``: what node setup put in place.

Node setup writes it last, and only when every step worked, so it always describes a state
that ran. The agent reads it at start for the node's environment id; node setup reads it to
know which custom node folders it manages and whether anything is left to do.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCK_FILENAME = "comfyfleet-environment.lock.json"
LOCK_FORMAT = 1


class InvalidLock(ValueError):
    """A lock file exists but cannot be read as one."""


@dataclass(frozen=True, slots=True)
class LockedNode:
    """A custom node as installed: its folder name, where it came from, its commit."""

    name: str
    git: str
    commit: str
    pip: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "git": self.git, "commit": self.commit, "pip": list(self.pip)}


@dataclass(frozen=True, slots=True)
class Lock:
    """The state node setup left in a ComfyUI folder."""

    environment_id: str
    comfyui_version: str | None  # as the file said it
    comfyui_commit: str | None  # None when the folder is not a git checkout
    python: str  # the interpreter the requirements went into
    pip_freeze_sha256: str
    custom_nodes: tuple[LockedNode, ...]
    models: tuple[dict[str, Any], ...]  # url, key, folder, filename[, sha256]

    def node(self, name: str) -> LockedNode | None:
        return next((node for node in self.custom_nodes if node.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": LOCK_FORMAT,
            "environment_id": self.environment_id,
            "comfyui": {"version": self.comfyui_version, "commit": self.comfyui_commit},
            "python": self.python,
            "pip_freeze_sha256": self.pip_freeze_sha256,
            "custom_nodes": [node.to_dict() for node in self.custom_nodes],
            "models": list(self.models),
        }

    @classmethod
    def from_dict(cls, data: Any) -> Lock:
        """Parse a lock document; raise InvalidLock if it is not one."""
        if not isinstance(data, dict) or data.get("format") != LOCK_FORMAT:
            raise InvalidLock(f"not a lock file of format {LOCK_FORMAT}")
        try:
            return cls(
                environment_id=str(data["environment_id"]),
                comfyui_version=data["comfyui"]["version"],
                comfyui_commit=data["comfyui"]["commit"],
                python=str(data["python"]),
                pip_freeze_sha256=str(data["pip_freeze_sha256"]),
                custom_nodes=tuple(
                    LockedNode(
                        name=str(node["name"]),
                        git=str(node["git"]),
                        commit=str(node["commit"]),
                        pip=tuple(str(item) for item in node["pip"]),
                    )
                    for node in data["custom_nodes"]
                ),
                models=tuple(dict(model) for model in data["models"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidLock(f"a field is missing or malformed: {exc!r}") from None


def lock_path(comfy_root: str | Path) -> Path:
    return Path(comfy_root) / LOCK_FILENAME


def read_lock(comfy_root: str | Path) -> Lock | None:
    """The lock node setup wrote in ``comfy_root``; None if there is none.

    Raises InvalidLock when the file exists but is not a lock (unreadable, not JSON, wrong
    shape), so that a damaged lock is never taken for an environment.
    """
    path = lock_path(comfy_root)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidLock(f"cannot read {path}: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidLock(f"{path} is not JSON: {exc}") from None
    try:
        return Lock.from_dict(data)
    except InvalidLock as exc:
        raise InvalidLock(f"{path}: {exc}") from None


def write_lock(comfy_root: str | Path, lock: Lock) -> None:
    """Replace the lock atomically: a reader sees the old file or the new one, never half."""
    path = lock_path(comfy_root)
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w", encoding="utf-8") as stream:
        json.dump(lock.to_dict(), stream, indent=2)
        stream.write("\n")
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(partial, path)
