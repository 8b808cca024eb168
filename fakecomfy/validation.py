"""``POST /prompt`` validation, with ComfyUI 0.3.64's error shapes and order of checks.

Only nodes an output node depends on are checked; an output whose inputs fail is dropped and
its errors reported under ``node_errors``. If no output survives, the prompt is rejected with
``prompt_outputs_failed_validation``. Constant inputs are converted in place (``"64"`` → 64),
so the prompt that runs (and the one in ``/history``) holds the converted values.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any

from fakecomfy.folders import ComfyFolders
from fakecomfy.node_types import InputDef, LiveNodeTypes
from fakecomfy.nodes import custom_validation

Reasons = list[dict[str, Any]]
CONVERSIONS: dict[str, type] = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}
# ComfyUI leaves long choice lists (scanned model folders) out of its error messages.
MAX_LISTED_CHOICES = 20


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome: the outputs to run, or the prompt-level error; node errors either way."""

    ok: bool
    error: dict[str, Any] | None
    outputs: list[str]
    node_errors: dict[str, Any]


def prompt_error(kind: str, message: str, details: str = "") -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": {}}


def full_type_name(kind: type) -> str:
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


def validate_prompt(
    prompt: dict[str, Any],
    types: LiveNodeTypes,
    folders: ComfyFolders,
    targets: list[Any] | None = None,
) -> Verdict:
    """Check ``prompt`` as ComfyUI does before queueing it (TypeError if it is no object).

    ``targets`` (``partial_execution_targets``) limits the outputs to run to those listed.
    """
    if not isinstance(prompt, dict):
        raise TypeError("the prompt must be a JSON object of nodes")
    outputs: list[str] = []
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            message = "Cannot execute because a node is missing the class_type property."
            error = prompt_error("invalid_prompt", message, f"Node ID '#{node_id}'")
            return Verdict(False, error, [], {})
        class_type = node["class_type"]
        node_type = types.get(class_type) if isinstance(class_type, str) else None
        if node_type is None:
            message = f"Cannot execute because node {class_type} does not exist."
            error = prompt_error("invalid_prompt", message, f"Node ID '#{node_id}'")
            return Verdict(False, error, [], {})
        if node_type.output_node and (targets is None or node_id in targets):
            outputs.append(node_id)
    if not outputs:
        return Verdict(False, prompt_error("prompt_no_outputs", "Prompt has no outputs"), [], {})

    checker = _InputChecker(prompt, types, folders)
    good: list[str] = []
    node_errors: dict[str, Any] = {}
    for output in outputs:
        try:
            valid, _ = checker.check(output)
        except Exception as exc:  # a malformed link: reported on the output, as ComfyUI does
            valid = False
            checker.validated[output] = (False, [_exception_reason(exc)])
        if valid:
            good.append(output)
            continue
        # Like ComfyUI, every failing node seen so far is charged to this output.
        for node_id, (ok, reasons) in checker.validated.items():
            if ok or not reasons:
                continue
            entry = node_errors.setdefault(
                node_id,
                {
                    "errors": reasons,
                    "dependent_outputs": [],
                    "class_type": prompt[node_id]["class_type"],
                },
            )
            entry["dependent_outputs"].append(output)
    if not good:
        error = prompt_error("prompt_outputs_failed_validation", "Prompt outputs failed validation")
        return Verdict(False, error, [], node_errors)
    return Verdict(True, None, good, node_errors)


def _exception_reason(exc: Exception) -> dict[str, Any]:
    return {
        "type": "exception_during_validation",
        "message": "Exception when validating node",
        "details": str(exc),
        "extra_info": {
            "exception_type": full_type_name(type(exc)),
            "traceback": traceback.format_tb(exc.__traceback__),
        },
    }


def _compatible(received: Any, expected: Any) -> bool:
    """ComfyUI's ``validate_node_input``: equal, a wildcard, or overlapping ``A,B`` unions."""
    if received == expected:
        return True
    if received == "COMBO" and (isinstance(expected, list) or expected == "COMBO"):
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    got = {part.strip() for part in received.split(",")}
    wanted = {part.strip() for part in expected.split(",")}
    return "*" in got or "*" in wanted or bool(got & wanted)


class _InputChecker:
    """Validates nodes depth-first from the outputs, each node once."""

    def __init__(self, prompt: dict[str, Any], types: LiveNodeTypes, folders: ComfyFolders):
        self.prompt = prompt
        self.types = types
        self.folders = folders
        self.validated: dict[str, tuple[bool, Reasons]] = {}
        self._visiting: list[str] = []

    def check(self, node_id: str) -> tuple[bool, Reasons]:
        if node_id in self.validated:
            return self.validated[node_id]
        if node_id in self._visiting:
            return self._cycle(node_id)
        node = self.prompt[node_id]
        inputs = node["inputs"]
        class_type = node["class_type"]
        node_type = self.types.get(class_type)
        assert node_type is not None  # validate_prompt checked every class exists
        custom = custom_validation(class_type, self.folders)
        errors: Reasons = []
        valid = True
        self._visiting.append(node_id)
        try:
            for spec in node_type.inputs:
                if spec.name not in inputs:
                    if spec.category == "required":
                        errors.append(_required_missing(spec.name))
                    continue
                value = inputs[spec.name]
                if isinstance(value, list):
                    upstream_ok = self._check_link(spec, value, errors)
                    valid = valid and upstream_ok
                else:
                    self._check_value(inputs, spec, value, spec.name in custom, errors)
        finally:
            self._visiting.pop()
        for name, verify in custom.items():
            if name not in inputs:
                continue
            value = inputs[name]
            outcome = verify(None if isinstance(value, list) else value)
            if outcome is not True:
                details = name if outcome is False else f"{name} - {outcome}"
                errors.append(
                    {
                        "type": "custom_validation_failed",
                        "message": "Custom validation failed for node",
                        "details": details,
                        "extra_info": {"input_name": name},
                    }
                )
        earlier = self.validated.get(node_id, (True, []))  # a cycle may have marked us
        result = (earlier[0] and valid and not errors, earlier[1] + errors)
        self.validated[node_id] = result
        return result

    def _cycle(self, node_id: str) -> tuple[bool, Reasons]:
        path = self._visiting[self._visiting.index(node_id) :] + [node_id]
        members = list(dict.fromkeys(path))
        details = " -> ".join(f"{n} ({self.prompt[n]['class_type']})" for n in path)
        for member in members:
            reason = {
                "type": "dependency_cycle",
                "message": "Dependency cycle detected",
                "details": details,
                "extra_info": {"node_id": member, "cycle_nodes": members},
            }
            self.validated[member] = (False, [reason])
        return self.validated[node_id]

    def _check_link(self, spec: InputDef, link: list[Any], errors: Reasons) -> bool:
        """Check a ``[node_id, output_index]`` input; False if the linked node is invalid."""
        if len(link) != 2:
            errors.append(
                {
                    "type": "bad_linked_input",
                    "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                    "details": spec.name,
                    "extra_info": {
                        "input_name": spec.name,
                        "input_config": spec.input_config,
                        "received_value": link,
                    },
                }
            )
            return True
        source, slot = link
        source_type = self.types.get(self.prompt[source]["class_type"])
        assert source_type is not None
        received = source_type.outputs[slot]
        if not _compatible(received, spec.type):
            errors.append(
                {
                    "type": "return_type_mismatch",
                    "message": "Return type mismatch between linked nodes",
                    "details": f"{spec.name}, received_type({received}) "
                    f"mismatch input_type({spec.type})",
                    "extra_info": {
                        "input_name": spec.name,
                        "input_config": spec.input_config,
                        "received_type": received,
                        "linked_node": link,
                    },
                }
            )
            return True
        try:
            upstream_ok, _ = self.check(source)
        except Exception as exc:
            self.validated[source] = (False, [_inner_exception(spec, link, exc)])
            return False
        return upstream_ok

    def _check_value(
        self, inputs: dict[str, Any], spec: InputDef, value: Any, custom: bool, errors: Reasons
    ) -> None:
        name, config = spec.name, spec.config
        if isinstance(value, dict) and "__value__" in value:  # a list value, wrapped
            value = inputs[name] = value["__value__"]
        convert = CONVERSIONS.get(spec.type) if isinstance(spec.type, str) else None
        if convert is not None:
            try:
                value = inputs[name] = convert(value)
            except Exception as exc:
                errors.append(
                    {
                        "type": "invalid_input_type",
                        "message": f"Failed to convert an input value to a {spec.type} value",
                        "details": f"{name}, {value}, {exc}",
                        "extra_info": {
                            "input_name": name,
                            "input_config": spec.input_config,
                            "received_value": value,
                            "exception_message": str(exc),
                        },
                    }
                )
                return
        if custom:  # a VALIDATE_INPUTS check replaces the generic ones for this input
            return
        extra = {"input_name": name, "input_config": spec.input_config, "received_value": value}
        if "min" in config and value < config["min"]:
            message = f"Value {value} smaller than min of {config['min']}"
            errors.append(_reason("value_smaller_than_min", message, name, extra))
            return
        if "max" in config and value > config["max"]:
            message = f"Value {value} bigger than max of {config['max']}"
            errors.append(_reason("value_bigger_than_max", message, name, extra))
            return
        options = spec.options
        if options is not None and value not in options:
            listed = str(options)
            if len(options) > MAX_LISTED_CHOICES:
                listed = f"(list of length {len(options)})"
                extra["input_config"] = None
            details = f"{name}: '{value}' not in {listed}"
            errors.append(_reason("value_not_in_list", "Value not in list", details, extra))


def _reason(kind: str, message: str, details: str, extra: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def _required_missing(name: str) -> dict[str, Any]:
    return _reason(
        "required_input_missing", "Required input is missing", name, {"input_name": name}
    )


def _inner_exception(spec: InputDef, link: list[Any], exc: Exception) -> dict[str, Any]:
    return {
        "type": "exception_during_inner_validation",
        "message": "Exception when validating inner node",
        "details": str(exc),
        "extra_info": {
            "input_name": spec.name,
            "input_config": spec.input_config,
            "exception_message": str(exc),
            "exception_type": full_type_name(type(exc)),
            "traceback": traceback.format_tb(exc.__traceback__),
            "linked_node": link,
        },
    }
