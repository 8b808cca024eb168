"""Which of a lock's custom nodes a running ComfyUI has loaded, read from its ``/object_info``.

ComfyUI imports custom nodes once, at start, and skips a package that fails to import (it
logs the error and starts without its classes). So a lock can name a node that the running
server lacks: it failed to import, or the server was started before node setup put it there.
ComfyUI marks every class with the module it came from (``python_module``:
``custom_nodes.<folder>`` for a custom node), which is what this reads. A node that defines
no class at all (a front-end extension only) is reported too: the caller warns, not fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from comfyfleet.environment.lock import Lock

CUSTOM_NODES_PACKAGE = "custom_nodes."


def loaded_custom_nodes(object_info: Mapping[str, Any]) -> set[str] | None:
    """The custom node folders that gave ComfyUI at least one class; None when the server
    names no class's module (a release older than ``python_module``: it cannot say)."""
    modules = [
        info.get("python_module") for info in object_info.values() if isinstance(info, Mapping)
    ]
    named = [module for module in modules if isinstance(module, str)]
    if not named:
        return None
    return {
        module[len(CUSTOM_NODES_PACKAGE) :].split(".", 1)[0]
        for module in named
        if module.startswith(CUSTOM_NODES_PACKAGE)
    }


def unloaded_custom_nodes(lock: Lock, object_info: Mapping[str, Any]) -> list[str]:
    """The lock's custom nodes with no class in ``object_info``, in the lock's order."""
    loaded = loaded_custom_nodes(object_info)
    if loaded is None:
        return []
    return [node.name for node in lock.custom_nodes if node.name not in loaded]
