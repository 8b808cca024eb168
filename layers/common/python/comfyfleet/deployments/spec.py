"""A deployment: a saved workflow with named, typed inputs, called with a few values.

Each version is immutable once stored; posting the same name again stores the next version.
An input names one widget value of one node (``node``, ``input``); a run places the given
values (or the defaults) there and changes nothing else in the graph.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

NAME_PATTERN = r"^[a-z0-9-]{1,64}$"
INPUT_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
MAX_INPUTS = 64
MAX_DESCRIPTION_LENGTH = 1000
MAX_ENUM_VALUES = 500
_NAME = re.compile(NAME_PATTERN)


class InputType(StrEnum):
    """What an input takes; image and model take a URL (as the loaders do)."""

    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    IMAGE = "image"
    MODEL = "model"

    @property
    def takes_url(self) -> bool:
        return self in (InputType.IMAGE, InputType.MODEL)

    @property
    def numeric(self) -> bool:
        return self in (InputType.INTEGER, InputType.NUMBER)


# The JSON Schema type of each input type.
_SCHEMA_TYPES = {
    InputType.STRING: "string",
    InputType.INTEGER: "integer",
    InputType.NUMBER: "number",
    InputType.BOOLEAN: "boolean",
    InputType.IMAGE: "string",
    InputType.MODEL: "string",
}
_NO_DEFAULT = object()


def is_deployment_name(name: str) -> bool:
    return bool(_NAME.match(name))


@dataclass(frozen=True, slots=True)
class DeploymentInput:
    """One declared input: where its value goes, its type and bounds."""

    name: str
    node: str
    input: str
    type: InputType
    default: Any = _NO_DEFAULT
    minimum: float | None = None
    maximum: float | None = None
    enum: tuple[Any, ...] | None = None
    description: str | None = None

    @property
    def has_default(self) -> bool:
        return self.default is not _NO_DEFAULT

    @property
    def target(self) -> tuple[str, str]:
        return self.node, self.input

    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any]) -> DeploymentInput:
        """From its declaration (the API's shape, already checked for shape)."""
        enum = data.get("enum")
        return cls(
            name=name,
            node=str(data["node"]),
            input=str(data["input"]),
            type=InputType(data["type"]),
            default=data["default"] if "default" in data else _NO_DEFAULT,
            minimum=data.get("minimum"),
            maximum=data.get("maximum"),
            enum=tuple(enum) if enum is not None else None,
            description=data.get("description"),
        )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"node": self.node, "input": self.input, "type": self.type.value}
        if self.has_default:
            data["default"] = self.default
        for key in ("minimum", "maximum", "description"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        if self.enum is not None:
            data["enum"] = list(self.enum)
        return data

    def schema(self) -> dict[str, Any]:
        """This input as a JSON Schema property."""
        schema: dict[str, Any] = {"type": _SCHEMA_TYPES[self.type]}
        if self.type.takes_url:
            schema["format"] = "uri"
            schema["x-comfyfleet-type"] = self.type.value
        if self.description is not None:
            schema["description"] = self.description
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        if self.enum is not None:
            schema["enum"] = list(self.enum)
        if self.has_default:
            schema["default"] = self.default
        return schema


def input_schema(inputs: dict[str, DeploymentInput]) -> dict[str, Any]:
    """The inputs of a deployment as one JSON Schema object (what a run's ``inputs`` is)."""
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {name: spec.schema() for name, spec in inputs.items()},
        "required": [name for name, spec in inputs.items() if not spec.has_default],
    }


@dataclass(frozen=True, slots=True)
class Deployment:
    """One stored version of an account's deployment."""

    account_id: str
    name: str
    version: int
    workflow: dict[str, Any]
    inputs: dict[str, DeploymentInput]
    created_at: float
    models: list[dict[str, Any]] | None = None
    description: str = ""

    def inputs_dict(self) -> dict[str, Any]:
        return {name: spec.to_dict() for name, spec in self.inputs.items()}


@dataclass(frozen=True, slots=True)
class DeploymentSummary:
    """A deployment as listed: its newest version."""

    name: str
    version: int
    created_at: float
    updated_at: float
    description: str = ""
