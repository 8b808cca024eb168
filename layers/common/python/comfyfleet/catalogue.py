"""The node catalogue: ComfyUI's ``GET /object_info``, read the way ComfyUI's validator reads it.

A fleet's catalogue can hold thousands of classes (several MB with custom nodes), and a
workflow uses a few dozen, so a class is parsed on first use and kept.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

INT, FLOAT, STRING, BOOLEAN, COMBO, ANY = "INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", "*"


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One declared input of a node class."""

    name: str
    type: str  # "INT", "MODEL", "IMAGE,MASK", …; "COMBO" for a list of options
    required: bool
    options: tuple[Any, ...] | None  # the allowed values of a COMBO input
    config: dict[str, Any]  # min, max, default, image_upload, …

    @property
    def is_combo(self) -> bool:
        return self.options is not None


@dataclass(frozen=True, slots=True)
class NodeClass:
    """What validation needs of one class: its inputs, output types, whether it is an output."""

    name: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[Any, ...] | None  # type strings (a list for a COMBO); None if not declared
    output_node: bool


def _parse_input(name: str, info: Any, required: bool) -> InputSpec | None:
    if isinstance(info, str):  # a bare type name, as some custom nodes declare
        return InputSpec(name, info, required, None, {})
    if not isinstance(info, list | tuple) or not info:
        return None
    kind = info[0]
    config = info[1] if len(info) > 1 and isinstance(info[1], dict) else {}
    if isinstance(kind, list | tuple):
        return InputSpec(name, COMBO, required, tuple(kind), config)
    if kind == COMBO:
        options = config.get("options")
        return InputSpec(name, COMBO, required, tuple(options or ()), config)
    if isinstance(kind, str):
        return InputSpec(name, kind, required, None, config)
    return None


def _parse_class(name: str, info: Any) -> NodeClass:
    """Parse one class leniently: a malformed part validates nothing rather than failing."""
    if not isinstance(info, dict):
        return NodeClass(name, (), None, False)
    declared = info.get("input")
    inputs: list[InputSpec] = []
    if isinstance(declared, dict):
        for category in ("required", "optional"):
            group = declared.get(category)
            if not isinstance(group, dict):
                continue
            for input_name, spec in group.items():
                parsed = _parse_input(str(input_name), spec, category == "required")
                if parsed is not None:
                    inputs.append(parsed)
    outputs = info.get("output")
    return NodeClass(
        name=name,
        inputs=tuple(inputs),
        outputs=tuple(outputs) if isinstance(outputs, list) else None,
        output_node=info.get("output_node") is True,
    )


class NodeCatalogue:
    """Node classes by name, parsed from an ``/object_info`` document on demand."""

    def __init__(self, object_info: dict[str, Any]) -> None:
        self._raw = object_info
        self._parsed: dict[str, NodeClass] = {}

    def __contains__(self, class_type: object) -> bool:
        return class_type in self._raw

    def __len__(self) -> int:
        return len(self._raw)

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def get(self, class_type: str) -> NodeClass | None:
        """The class named ``class_type``, or None when the fleet does not have it."""
        parsed = self._parsed.get(class_type)
        if parsed is None:
            if class_type not in self._raw:
                return None
            parsed = self._parsed[class_type] = _parse_class(class_type, self._raw[class_type])
        return parsed

    def info(self, class_type: str) -> Any:
        """The class as ``/object_info`` describes it (None when not there)."""
        return self._raw.get(class_type)

    @classmethod
    def union(cls, catalogues: Iterable[NodeCatalogue]) -> NodeCatalogue:
        """Every class of ``catalogues``; a class in several is described by the first."""
        merged: dict[str, Any] = {}
        for catalogue in reversed(list(catalogues)):
            merged.update(catalogue._raw)
        return cls(merged)

    @classmethod
    def from_json(cls, text: str | bytes) -> NodeCatalogue:
        """Parse an ``/object_info`` document; ValueError if it is not a JSON object."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("a node catalogue is a JSON object of node classes")
        return cls(data)

    @classmethod
    def from_file(cls, path: str | Path) -> NodeCatalogue:
        return cls.from_json(Path(path).read_bytes())

    def to_json(self) -> str:
        return json.dumps(self._raw)


CORE_CATALOGUE_FILE = "object_info_core.json"


@cache
def core_catalogue() -> NodeCatalogue:
    """ComfyUI 0.3.64's core classes as recorded from a real server (no model files)."""
    data = resources.files("comfyfleet.data").joinpath(CORE_CATALOGUE_FILE).read_bytes()
    return NodeCatalogue.from_json(data)
