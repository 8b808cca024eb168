"""A deployment's input declarations checked against its workflow and the node catalogue:
the node exists, the input exists on its class, the declared type fits the class's type and
range, and the bounds, allowed values and default fit the declared type.

Every problem names the input's field (``body.inputs.<name>.<part>``) and why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from comfyfleet.catalogue import ANY, BOOLEAN, COMBO, FLOAT, INT, STRING, InputSpec, NodeCatalogue
from comfyfleet.deployments.spec import DeploymentInput, InputType
from comfyfleet.deployments.values import Problem, field_of, value_problem
from comfyfleet.workflow.refs import LOADER_INPUTS
from comfyfleet.workflow.urls import INPUT_FOLDER

# Which catalogue types a declared type may fill ("*" fits them all).
_FITS: dict[InputType, frozenset[str]] = {
    InputType.STRING: frozenset({STRING, ANY}),
    InputType.INTEGER: frozenset({INT, FLOAT, ANY}),
    InputType.NUMBER: frozenset({FLOAT, ANY}),
    InputType.BOOLEAN: frozenset({BOOLEAN, ANY}),
}


def declaration_problems(
    workflow: Any, inputs: Mapping[str, DeploymentInput], catalogue: NodeCatalogue
) -> list[Problem]:
    """Every problem of the declarations; none when they all fit."""
    problems: list[Problem] = []
    claimed: dict[tuple[str, str], str] = {}
    for name, spec in inputs.items():
        other = claimed.setdefault(spec.target, name)
        if other != name:
            problems.append(
                _problem(name, "input", f"node {spec.node} input {spec.input!r} is input {other!r}")
            )
        own = _bounds_problems(name, spec)
        if not own:
            own = _target_problems(workflow, name, spec, catalogue)
        problems.extend(own)
    return problems


def _problem(name: str, part: str, message: str) -> Problem:
    return {"field": field_of(name, part), "message": message}


def _bounds_problems(name: str, spec: DeploymentInput) -> list[Problem]:
    """The declaration on its own: bounds for numbers, enum values and default fit it."""
    problems: list[Problem] = []
    if not spec.type.numeric:
        for part in ("minimum", "maximum"):
            if getattr(spec, part) is not None:
                problems.append(_problem(name, part, "applies to integer and number inputs only"))
    elif spec.minimum is not None and spec.maximum is not None and spec.minimum > spec.maximum:
        problems.append(_problem(name, "minimum", "is greater than the maximum"))
    if spec.enum is not None:
        if spec.type in (InputType.BOOLEAN, InputType.IMAGE, InputType.MODEL):
            problems.append(_problem(name, "enum", "applies to string, integer and number inputs"))
        else:
            unbounded = DeploymentInput(name, spec.node, spec.input, spec.type, **_bounds(spec))
            for index, option in enumerate(spec.enum):
                problem = value_problem(unbounded, option)
                if problem is not None:
                    problems.append(_problem(name, f"enum.{index}", problem))
    if not problems and spec.has_default:
        problem = value_problem(spec, spec.default)
        if problem is not None:
            problems.append(_problem(name, "default", problem))
    return problems


def _bounds(spec: DeploymentInput) -> dict[str, Any]:
    return {"minimum": spec.minimum, "maximum": spec.maximum}


def _target_problems(
    workflow: Any, name: str, spec: DeploymentInput, catalogue: NodeCatalogue
) -> list[Problem]:
    node = workflow.get(spec.node) if isinstance(workflow, dict) else None
    if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
        return [_problem(name, "node", f"node {spec.node!r} is not in the workflow")]
    class_type: str = node["class_type"]
    current = (
        node.get("inputs", {}).get(spec.input) if isinstance(node.get("inputs"), dict) else None
    )
    if isinstance(current, list):
        return [
            _problem(
                name,
                "input",
                f"input {spec.input!r} of node {spec.node} is a link to another node; "
                "a deployment input replaces a value",
            )
        ]
    folder = LOADER_INPUTS.get(class_type, {}).get(spec.input)
    if spec.type.takes_url or folder is not None:
        return _file_problems(name, spec, class_type, folder)
    node_class = catalogue.get(class_type)
    if node_class is None:
        # A class the catalogue does not know: the graph's own value is all there is to go by.
        if current is not None and value_problem(_untyped(spec), current) is not None:
            message = f"{class_type}.{spec.input} holds {current!r}, not a {spec.type.value}"
            return [_problem(name, "type", message)]
        return []
    declared = next((item for item in node_class.inputs if item.name == spec.input), None)
    if declared is None:
        known = ", ".join(item.name for item in node_class.inputs) or "none"
        message = f"{class_type} has no input {spec.input!r}; its inputs: {known}"
        return [_problem(name, "input", message)]
    return _fit_problems(name, spec, class_type, declared)


def _untyped(spec: DeploymentInput) -> DeploymentInput:
    return DeploymentInput(spec.name, spec.node, spec.input, spec.type)


def _file_problems(
    name: str, spec: DeploymentInput, class_type: str, folder: str | None
) -> list[Problem]:
    """image and model inputs name a loader's file by URL, as the loaders do."""
    where = f"{class_type}.{spec.input}"
    if spec.type is InputType.IMAGE and folder != INPUT_FOLDER:
        return [_problem(name, "type", f"{where} is not an input image of a loader (LoadImage)")]
    if spec.type is InputType.MODEL and (folder is None or folder == INPUT_FOLDER):
        return [_problem(name, "type", f"{where} does not name a model file of a loader")]
    if not spec.type.takes_url:
        kind = "image" if folder == INPUT_FOLDER else "model"
        return [_problem(name, "type", f"{where} names a file: declare the input as {kind!r}")]
    return []


def _fit_problems(
    name: str, spec: DeploymentInput, class_type: str, declared: InputSpec
) -> list[Problem]:
    """The declared type, bounds and allowed values against the class's own."""
    where = f"{class_type}.{spec.input}"
    if declared.options is not None:
        return _combo_problems(name, spec, where, declared.options)
    kinds = {part.strip() for part in declared.type.split(",")}
    if kinds.isdisjoint(_FITS[spec.type]):
        return [_problem(name, "type", f"{where} takes {declared.type}, not a {spec.type.value}")]
    problems: list[Problem] = []
    low, high = _number(declared.config.get("min")), _number(declared.config.get("max"))
    for part, value in (("minimum", spec.minimum), ("maximum", spec.maximum)):
        if value is not None and (
            (low is not None and value < low) or (high is not None and value > high)
        ):
            problems.append(_problem(name, part, f"is outside {where}'s range [{low}, {high}]"))
    for index, option in enumerate(spec.enum or ()):
        if _outside(option, low, high):
            problems.append(_problem(name, f"enum.{index}", f"is outside {where}'s range"))
    return problems


def _combo_problems(
    name: str, spec: DeploymentInput, where: str, options: tuple[Any, ...]
) -> list[Problem]:
    """A list input takes one of its options: the declared type must fit them, and every
    allowed value must be one of them."""
    wanted = {InputType.STRING: str, InputType.INTEGER: int, InputType.NUMBER: float}
    kind = wanted.get(spec.type)
    if kind is None or not all(_is_kind(option, kind) for option in options):
        return [_problem(name, "type", f"{where} takes one of a list of {COMBO} options")]
    return [
        _problem(name, f"enum.{index}", f"{option!r} is not one of {where}'s options")
        for index, option in enumerate(spec.enum or ())
        if option not in options
    ]


def _is_kind(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)


def _outside(value: float, low: float | None, high: float | None) -> bool:
    return (low is not None and value < low) or (high is not None and value > high)


def _number(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None
