"""Structured workflow errors with stable codes: what the API returns and clients match on."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ErrorCode(StrEnum):
    """Why a workflow is refused. The values are part of the public API: never rename one."""

    # The document as a whole
    NOT_AN_OBJECT = "not_an_object"
    UI_FORMAT_NOT_SUPPORTED = "ui_format_not_supported"
    TOO_LARGE = "too_large"
    TOO_MANY_NODES = "too_many_nodes"
    NO_OUTPUT_NODE = "no_output_node"
    CYCLE = "cycle"
    TOO_MANY_ERRORS = "too_many_errors"
    # One node or input
    MISSING_CLASS_TYPE = "missing_class_type"
    BAD_LINK = "bad_link"
    LINK_TO_MISSING_NODE = "link_to_missing_node"
    DENIED_CLASS_TYPE = "denied_class_type"
    URL_NOT_ALLOWED = "url_not_allowed"
    UNSAFE_FILENAME = "unsafe_filename"
    INVALID_MANIFEST = "invalid_manifest"
    # Against the fleet's node catalogue
    UNKNOWN_CLASS_TYPE = "unknown_class_type"
    REQUIRED_INPUT_MISSING = "required_input_missing"
    INVALID_INPUT_TYPE = "invalid_input_type"
    VALUE_OUT_OF_RANGE = "value_out_of_range"
    VALUE_NOT_IN_LIST = "value_not_in_list"
    LINK_TYPE_MISMATCH = "link_type_mismatch"
    BAD_OUTPUT_INDEX = "bad_output_index"


@dataclass(frozen=True, slots=True)
class WorkflowError:
    """One problem found in a workflow: a record, not an exception."""

    code: ErrorCode
    message: str
    node_id: str | None = None
    input: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {
            "code": self.code.value,
            "node_id": self.node_id,
            "input": self.input,
            "message": self.message,
        }
