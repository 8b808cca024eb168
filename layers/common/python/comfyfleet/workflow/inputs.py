"""Inputs checked against the fleet's node catalogue, as ComfyUI's own validator checks them.

Only the nodes an output depends on are checked: ComfyUI never executes the others, so a
broken node nothing uses is never held against a job.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from comfyfleet.catalogue import ANY, BOOLEAN, COMBO, FLOAT, INT, InputSpec, NodeCatalogue
from comfyfleet.workflow.errors import ErrorCode, WorkflowError
from comfyfleet.workflow.refs import LOADER_INPUTS
from comfyfleet.workflow.urls import is_url

_MAX_LISTED_OPTIONS = 10
_INVALID = object()


@dataclass(slots=True)
class Node:
    """A node whose shape is sound: a class type, an inputs object, well-formed links."""

    class_type: str
    inputs: dict[str, Any]
    links: dict[str, tuple[str, int]] = field(default_factory=dict)  # input → (source, index)


def check_inputs(
    catalogue: NodeCatalogue,
    nodes: dict[str, Node],
    outputs: list[str],
    named_files: set[tuple[str, str]],
) -> Iterator[WorkflowError]:
    """Errors ComfyUI would raise for these nodes; ``named_files`` are (folder, name) the
    request's manifest places, which a loader may name though the catalogue lists them not."""
    for node_id, node in nodes.items():
        if node.class_type not in catalogue:
            yield WorkflowError(
                ErrorCode.UNKNOWN_CLASS_TYPE,
                f"node class {node.class_type} is not installed on the fleet",
                node_id,
            )
    for node_id in upstream(outputs, nodes):
        node = nodes[node_id]
        node_class = catalogue.get(node.class_type)
        if node_class is None:
            continue
        loader = LOADER_INPUTS.get(node.class_type, {})
        for spec in node_class.inputs:
            if spec.name not in node.inputs:
                if spec.required:
                    yield WorkflowError(
                        ErrorCode.REQUIRED_INPUT_MISSING,
                        f"{node.class_type} needs input {spec.name!r}",
                        node_id,
                        spec.name,
                    )
                continue
            value = node.inputs[spec.name]
            if isinstance(value, list):
                link = node.links.get(spec.name)
                problem = _link_problem(catalogue, nodes, spec, link) if link else None
            else:
                problem = _value_problem(spec, value, loader.get(spec.name), named_files)
            if problem is not None:
                code, message = problem
                yield WorkflowError(code, message, node_id, spec.name)


def upstream(outputs: list[str], nodes: dict[str, Node]) -> list[str]:
    """The output nodes and every node they depend on, in the graph's order."""
    seen = set(outputs)
    pending = list(outputs)
    while pending:
        node = nodes[pending.pop()]
        for source, _index in node.links.values():
            if source not in seen and source in nodes:
                seen.add(source)
                pending.append(source)
    return [node_id for node_id in nodes if node_id in seen]


def _link_problem(
    catalogue: NodeCatalogue, nodes: dict[str, Node], spec: InputSpec, link: tuple[str, int]
) -> tuple[ErrorCode, str] | None:
    source_id, index = link
    source = nodes.get(source_id)
    source_class = catalogue.get(source.class_type) if source is not None else None
    if source_class is None or source_class.outputs is None:
        return None  # the source's own error says why
    if index >= len(source_class.outputs):
        return (
            ErrorCode.BAD_OUTPUT_INDEX,
            f"node {source_id} ({source_class.name}) has {len(source_class.outputs)} "
            f"outputs; there is no output {index}",
        )
    received = source_class.outputs[index]
    if _link_types_match(received, spec):
        return None
    return (
        ErrorCode.LINK_TYPE_MISMATCH,
        f"output {index} of node {source_id} is {_type_name(received)}; "
        f"input {spec.name!r} takes {spec.type}",
    )


def _value_problem(
    spec: InputSpec, value: Any, folder: str | None, named_files: set[tuple[str, str]]
) -> tuple[ErrorCode, str] | None:
    if spec.options is not None:
        if isinstance(value, str) and (
            (folder is not None and (is_url(value) or (folder, value) in named_files))
            # ComfyUI checks an upload input (LoadImage) for the file itself, not the list
            or spec.config.get("image_upload") is True
        ):
            return None
        if value in spec.options:
            return None
        return ErrorCode.VALUE_NOT_IN_LIST, f"{value!r} is not one of {_preview(spec.options)}"
    number = _convert(spec.type, value)
    if number is _INVALID:
        return ErrorCode.INVALID_INPUT_TYPE, f"{value!r} cannot be read as {spec.type}"
    if not _is_number(number):
        return None
    low, high = spec.config.get("min"), spec.config.get("max")
    if _is_number(low) and number < low:
        return ErrorCode.VALUE_OUT_OF_RANGE, f"value {number} is smaller than the minimum {low}"
    if _is_number(high) and number > high:
        return ErrorCode.VALUE_OUT_OF_RANGE, f"value {number} is bigger than the maximum {high}"
    return None


def _convert(kind: str, value: Any) -> Any:
    """A widget value as ComfyUI reads it (int(), float()), _INVALID, or None if unchecked."""
    if kind == INT:
        try:
            return int(value)
        except (TypeError, ValueError, OverflowError):
            return _INVALID
    if kind == FLOAT:
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            return _INVALID
        return number if math.isfinite(number) else _INVALID
    if kind == BOOLEAN:
        # ComfyUI would read the string "false" as True; refuse what is not a boolean.
        return None if isinstance(value, bool) or value in (0, 1) else _INVALID
    return None


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _link_types_match(received: Any, spec: InputSpec) -> bool:
    """ComfyUI's rule: equal, a wildcard, or comma separated unions that overlap."""
    if spec.type == COMBO:
        return received in (COMBO, ANY) or isinstance(received, list)
    if not isinstance(received, str):
        return False
    if received == spec.type or ANY in (received, spec.type):
        return True
    received_types = {part.strip() for part in received.split(",")}
    return not received_types.isdisjoint(part.strip() for part in spec.type.split(","))


def _type_name(kind: Any) -> str:
    return kind if isinstance(kind, str) else COMBO


def _preview(options: tuple[Any, ...]) -> str:
    if not options:
        return "the (empty) list of allowed values"
    shown = ", ".join(repr(option) for option in options[:_MAX_LISTED_OPTIONS])
    more = len(options) - _MAX_LISTED_OPTIONS
    return f"[{shown}, … {more} more]" if more > 0 else f"[{shown}]"
