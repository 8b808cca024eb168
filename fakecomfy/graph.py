"""The prompt as a graph: cache keys of nodes and the order in which they run.

Both follow ComfyUI 0.3.64 (``comfy_execution/caching.py`` and ``graph.py``): a node's key is
its class, its constant inputs, its ``IS_CHANGED`` value and the keys of the nodes it reads,
so an unchanged node is served from the cache whatever its id; nodes are staged from the
outputs backwards and picked so that an output runs as soon as it can.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fakecomfy.folders import ComfyFolders
from fakecomfy.node_types import LiveNodeTypes
from fakecomfy.nodes import changed_fingerprint


def is_link(value: Any) -> bool:
    """``[source_node_id, output_index]``."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    )


@dataclass(slots=True)
class CacheEntry:
    """What a node produced: one list of values per output, and its UI output if any."""

    outputs: list[list[Any]]
    ui: dict[str, Any] | None  # {"meta": …, "output": …}


class OutputCache:
    """ComfyUI's classic cache: a new prompt keeps only the entries whose keys it uses."""

    def __init__(self) -> None:
        self._entries: dict[str, CacheEntry] = {}

    def retain(self, keys: set[str]) -> None:
        self._entries = {key: e for key, e in self._entries.items() if key in keys}

    def get(self, key: str) -> CacheEntry | None:
        return self._entries.get(key)

    def put(self, key: str, entry: CacheEntry) -> None:
        self._entries[key] = entry


def cache_keys(
    prompt: dict[str, Any], types: LiveNodeTypes, folders: ComfyFolders
) -> dict[str, str]:
    """The cache key of every node of ``prompt``."""
    keys: dict[str, str] = {}

    def key_of(node_id: str, trail: frozenset[str]) -> str:
        if node_id in keys:
            return keys[node_id]
        node = prompt.get(node_id)
        if not isinstance(node, dict) or node_id in trail:  # dangling link or a cycle
            return f"unresolved {node_id}"
        class_type = node.get("class_type")
        inputs: dict[str, Any] = node["inputs"] if isinstance(node.get("inputs"), dict) else {}
        node_type = types.get(class_type) if isinstance(class_type, str) else None
        constants = {name: value for name, value in inputs.items() if not is_link(value)}
        parts: list[Any] = [class_type]
        if isinstance(class_type, str):
            parts.append(changed_fingerprint(class_type, folders, constants))
        if node_type is not None and "UNIQUE_ID" in node_type.hidden.values():
            parts.append(node_id)  # such a node behaves per id, so its id is part of it
        for name in sorted(inputs):
            value = inputs[name]
            if is_link(value):
                parts.append([name, "link", key_of(value[0], trail | {node_id}), value[1]])
            else:
                parts.append([name, value])
        text = json.dumps(parts, sort_keys=True, default=repr)
        keys[node_id] = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return keys[node_id]

    for node_id in prompt:
        key_of(node_id, frozenset())
    return keys


class DependencyCycle(Exception):
    """No pending node can run: they wait on each other."""

    def __init__(self, node_id: str) -> None:
        super().__init__("Dependency cycle detected")
        self.node_id = node_id


class ExecutionList:
    """The nodes still to run for a prompt's outputs, and which one runs next."""

    def __init__(
        self,
        prompt: dict[str, Any],
        is_output: Callable[[str], bool],
        is_cached: Callable[[str], bool],
    ) -> None:
        self._prompt = prompt
        self._is_output = is_output
        self._is_cached = is_cached
        self._pending: dict[str, None] = {}  # ordered: the order nodes were discovered
        self._block_count: dict[str, int] = {}
        self._blocking: dict[str, dict[str, set[int]]] = {}

    def is_empty(self) -> bool:
        return not self._pending

    def add_node(self, node_id: str) -> None:
        """Add ``node_id`` and, depth-first, every uncached node it reads from."""
        stack = [node_id]
        links: list[tuple[str, int, str]] = []
        while stack:
            current = stack.pop()
            if current in self._pending:
                continue
            self._pending[current] = None
            self._block_count[current] = 0
            self._blocking[current] = {}
            for value in self._prompt[current]["inputs"].values():
                if is_link(value):
                    if not self._is_cached(value[0]):
                        stack.append(value[0])
                    links.append((value[0], value[1], current))
        for source, socket, target in links:
            self._add_strong_link(source, socket, target)

    def _add_strong_link(self, source: str, socket: int, target: str) -> None:
        if self._is_cached(source):
            return
        self.add_node(source)
        if target not in self._blocking[source]:
            self._blocking[source][target] = set()
            self._block_count[target] += 1
        self._blocking[source][target].add(socket)

    def stage(self) -> str:
        """The node to run next; DependencyCycle if none can."""
        available = [node for node in self._pending if self._block_count[node] == 0]
        if not available:
            raise DependencyCycle(next(iter(self._pending)))
        return self._pick(available)

    def _pick(self, available: list[str]) -> str:
        """An output if one is ready, else a node feeding an output within two links."""
        for node in available:
            if self._is_output(node):
                return node
        for node in available:
            if any(self._is_output(blocked) for blocked in self._blocking[node]):
                return node
        for node in available:
            for blocked in self._blocking[node]:
                if any(self._is_output(after) for after in self._blocking[blocked]):
                    return node
        return available[0]

    def complete(self, node_id: str) -> None:
        """``node_id`` ran: the nodes waiting on it wait on one node fewer."""
        del self._pending[node_id]
        for blocked in self._blocking.pop(node_id):
            self._block_count[blocked] -= 1
