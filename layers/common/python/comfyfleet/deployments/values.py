"""A run's values: checked against the declared inputs, then placed into the stored graph.

Every problem names the input (``body.inputs.<name>``) and why, as the API's field errors do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from comfyfleet.deployments.spec import DeploymentInput, InputType
from comfyfleet.workflow.urls import is_url

Problem = dict[str, str]
_TYPE_WORDS = {
    InputType.STRING: "a string",
    InputType.INTEGER: "an integer",
    InputType.NUMBER: "a number",
    InputType.BOOLEAN: "true or false",
    InputType.IMAGE: "an image URL (https://… or s3://…)",
    InputType.MODEL: "a model URL (https://… or s3://…)",
}


def field_of(name: str, *parts: str) -> str:
    return ".".join(("body", "inputs", name, *parts))


def value_problem(spec: DeploymentInput, value: Any) -> str | None:
    """Why ``value`` does not fit the input (type, bounds, allowed values), or None."""
    if not _fits_type(spec.type, value):
        return f"must be {_TYPE_WORDS[spec.type]}"
    if spec.type.numeric:
        if spec.minimum is not None and value < spec.minimum:
            return f"is {value}; the minimum is {spec.minimum}"
        if spec.maximum is not None and value > spec.maximum:
            return f"is {value}; the maximum is {spec.maximum}"
    if spec.enum is not None and value not in spec.enum:
        shown = ", ".join(repr(option) for option in spec.enum[:10])
        more = "" if len(spec.enum) <= 10 else f", … {len(spec.enum) - 10} more"
        return f"must be one of [{shown}{more}]"
    return None


def _fits_type(kind: InputType, value: Any) -> bool:
    if kind is InputType.BOOLEAN:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False  # JSON true is not the number 1 here
    if kind is InputType.INTEGER:
        return isinstance(value, int)
    if kind is InputType.NUMBER:
        return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
    if not isinstance(value, str):
        return False
    return is_url(value) if kind.takes_url else True


def run_problems(inputs: Mapping[str, DeploymentInput], values: Mapping[str, Any]) -> list[Problem]:
    """Unknown inputs, missing required ones, and values that do not fit."""
    problems = [
        {"field": field_of(name), "message": f"unknown input; inputs: {_names(inputs)}"}
        for name in values
        if name not in inputs
    ]
    for name, spec in inputs.items():
        if name not in values:
            if not spec.has_default:
                problems.append({"field": field_of(name), "message": "is required"})
            continue
        problem = value_problem(spec, values[name])
        if problem is not None:
            problems.append({"field": field_of(name), "message": problem})
    return problems


def _names(inputs: Mapping[str, DeploymentInput]) -> str:
    return ", ".join(inputs) or "(none)"


def place(
    workflow: Mapping[str, Any], inputs: Mapping[str, DeploymentInput], values: Mapping[str, Any]
) -> dict[str, Any]:
    """A copy of ``workflow`` with each input's value (given, else its default) at its
    target; inputs with neither are left as the graph has them. ``workflow`` is not changed."""
    graph = dict(workflow)
    copied: set[str] = set()
    for name, spec in inputs.items():
        if name in values:
            value = values[name]
        elif spec.has_default:
            value = spec.default
        else:
            continue
        node = graph.get(spec.node)
        if not isinstance(node, dict):
            continue  # declarations were checked against this graph; nothing to place into
        fields = node.get("inputs")
        if not isinstance(fields, dict):
            continue
        if spec.node not in copied:  # copy a node only when one of its inputs changes
            fields = dict(fields)
            graph[spec.node] = {**node, "inputs": fields}
            copied.add(spec.node)
        fields[spec.input] = value
    return graph
