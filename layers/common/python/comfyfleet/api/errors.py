"""The one place where exceptions become HTTP statuses and error codes.

Every error response has one shape, ``{"error": {"code", "message", "details"?,
"request_id"}}``. Codes are part of the public API: never rename one. The table is keyed on
exception types, never on the text of a message; the first matching row wins, so a subclass
must come before its base.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
    ResponseValidationError,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyPersistenceLayerError,
    IdempotencyValidationError,
)

from comfyfleet.errors import (
    DeploymentTooLarge,
    InvalidCursor,
    JobStateConflict,
    LimitExceeded,
    NotFound,
    StorageError,
)
from comfyfleet.templates import InvalidTemplateParams, UnknownTemplate

logger = logging.getLogger(__name__)

STORAGE_RETRY_AFTER = 1


class ApiError(Exception):
    """An error the API itself raises: its status and code are part of the class."""

    status = 400
    code = "invalid_request"

    def __init__(
        self, message: str, details: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}


class InvalidRequest(ApiError):
    """A field or parameter has a bad value (``details`` names each)."""


class MalformedJson(ApiError):
    code = "malformed_json"


class InvalidWorkflow(ApiError):
    """``details`` lists each problem as {code, node_id, input, message}."""

    code = "invalid_workflow"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class ResourceNotFound(ApiError):
    status, code = 404, "not_found"


class MethodNotAllowed(ApiError):
    status, code = 405, "method_not_allowed"


class NotCancellable(ApiError):
    status, code = 409, "not_cancellable"


class IdempotencyConflict(ApiError):
    status, code = 409, "idempotency_conflict"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


@dataclass(frozen=True)
class Problem:
    """What an error response says."""

    status: int
    code: str
    message: str
    details: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def body(self, request_id: str) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        error["request_id"] = request_id
        return {"error": error}


def _api_error(exc: ApiError) -> Problem:
    return Problem(exc.status, exc.code, exc.message, exc.details, dict(exc.headers))


def _limit(exc: LimitExceeded) -> Problem:
    return Problem(429, exc.code, str(exc), headers={"Retry-After": str(exc.retry_after)})


def _request_validation(exc: RequestValidationError) -> Problem:
    errors = exc.errors()
    if any(error.get("type") == "json_invalid" for error in errors):
        return Problem(400, MalformedJson.code, "the request body is not valid JSON")
    return Problem(400, InvalidRequest.code, "the request is invalid", field_errors(errors))


def _internal(exc: Exception) -> Problem:
    logger.error("unexpected error", exc_info=exc)
    return Problem(500, "internal_error", "an unexpected error occurred; it has been logged")


_MAPPING: tuple[tuple[type[Exception], Callable[[Any], Problem]], ...] = (
    (ApiError, _api_error),
    (LimitExceeded, _limit),
    (NotFound, lambda exc: Problem(404, "not_found", str(exc))),
    (DeploymentTooLarge, lambda exc: Problem(413, PayloadTooLarge.code, str(exc))),
    (UnknownTemplate, lambda exc: Problem(404, "not_found", str(exc))),
    (InvalidTemplateParams, lambda exc: Problem(400, InvalidRequest.code, str(exc), exc.errors)),
    (InvalidCursor, lambda exc: Problem(400, "invalid_cursor", str(exc))),
    (JobStateConflict, lambda exc: Problem(409, "job_state_conflict", str(exc))),
    (
        IdempotencyValidationError,
        lambda exc: Problem(
            409,
            IdempotencyConflict.code,
            "this Idempotency-Key was used with another request body in the last 24 hours",
        ),
    ),
    (
        IdempotencyAlreadyInProgressError,
        lambda exc: Problem(
            409,
            IdempotencyConflict.code,
            "a request with this Idempotency-Key is still being processed; retry shortly",
            headers={"Retry-After": "1"},
        ),
    ),
    (RequestValidationError, _request_validation),
    (
        RequestUnsupportedContentType,
        lambda exc: Problem(400, InvalidRequest.code, "the request body must be JSON"),
    ),
    (
        StorageError,
        lambda exc: Problem(
            503,
            "storage_unavailable",
            "storage is unavailable; retry shortly",
            headers={"Retry-After": str(STORAGE_RETRY_AFTER)},
        ),
    ),
    (
        IdempotencyPersistenceLayerError,
        lambda exc: Problem(
            503,
            "storage_unavailable",
            "storage is unavailable; retry shortly",
            headers={"Retry-After": str(STORAGE_RETRY_AFTER)},
        ),
    ),
    (ResponseValidationError, _internal),
)


def problem_for(exc: Exception) -> Problem:
    """The status, code and message of any exception (500 internal_error if unknown)."""
    for kind, convert in _MAPPING:
        if isinstance(exc, kind):
            return convert(exc)
    return _internal(exc)


def field_errors(errors: Sequence[Any]) -> list[dict[str, str]]:
    """pydantic's errors as {field, message}: no input echoed back, no pydantic URLs."""
    return [
        {
            "field": ".".join(str(part) for part in error.get("loc", ())),
            "message": str(error.get("msg", "invalid")),
        }
        for error in errors
    ]
