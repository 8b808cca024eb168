"""The client SDK's exceptions: one per stable error ``code`` of the API (then per status),
so callers catch ``QueueFull`` or ``InvalidWorkflow`` rather than parse messages.

Import them from comfyfleet.client, which re-exports them; this module holds only what an
error answer becomes, so the client module holds the calls and their retries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests


class ApiError(Exception):
    """An error answer of the API: status, stable code, message, details, request id."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: Any = None,
        request_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.request_id = request_id
        self.headers = dict(headers or {})


class BadRequest(ApiError):
    """400: the request is wrong; ``details`` says where."""


class InvalidRequest(BadRequest):
    pass


class MalformedJson(BadRequest):
    pass


class InvalidWorkflow(BadRequest):
    """``details`` lists each problem as {code, node_id, input, message}."""


class InvalidCursor(BadRequest):
    pass


class Unauthorized(ApiError):
    """401: no valid key."""


class Forbidden(ApiError):
    """403: the key lacks the scope for this route."""


class NotFound(ApiError):
    """404: no such job (or not yours), key, node or route."""


class Conflict(ApiError):
    """409."""


class NotCancellable(Conflict):
    pass


class JobStateConflict(Conflict):
    pass


class IdempotencyConflict(Conflict):
    pass


class PayloadTooLarge(ApiError):
    """413: the workflow is over the size bound."""


class RateLimited(ApiError):
    """429: over a limit; ``retry_after`` seconds until it may pass."""

    @property
    def retry_after(self) -> float:
        return retry_after_seconds(self.headers) or 1.0


class RateLimitExceeded(RateLimited):
    pass


class QueueFull(RateLimited):
    pass


class ServerError(ApiError):
    """5xx."""


class StorageUnavailable(ServerError):
    pass


class ConnectionFailed(Exception):
    """The API could not be reached."""


class JobTimeout(TimeoutError):
    """wait() gave up before the job ended; ``job`` is its last state."""

    def __init__(self, job: dict[str, Any]) -> None:
        super().__init__(f"job {job.get('job_id')} is still {job.get('status')}")
        self.job = job


_BY_CODE: dict[str, type[ApiError]] = {
    "invalid_request": InvalidRequest,
    "malformed_json": MalformedJson,
    "invalid_workflow": InvalidWorkflow,
    "invalid_cursor": InvalidCursor,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "not_found": NotFound,
    "not_cancellable": NotCancellable,
    "job_state_conflict": JobStateConflict,
    "idempotency_conflict": IdempotencyConflict,
    "payload_too_large": PayloadTooLarge,
    "rate_limit_exceeded": RateLimitExceeded,
    "queue_full": QueueFull,
    "storage_unavailable": StorageUnavailable,
}
_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    429: RateLimited,
}


def error_for(response: requests.Response) -> ApiError:
    """The typed exception of an error response."""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):  # a gateway's own answer: {"message": …} or none
        message = body.get("message") if isinstance(body, dict) else None
        error = {"code": "http_" + str(response.status_code), "message": message or response.reason}
    code = str(error.get("code") or "")
    kind = _BY_CODE.get(code) or _BY_STATUS.get(response.status_code)
    if kind is None:
        kind = ServerError if response.status_code >= 500 else ApiError
    return kind(
        response.status_code,
        code,
        str(error.get("message") or ""),
        details=error.get("details"),
        request_id=error.get("request_id"),
        headers=response.headers,
    )


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The Retry-After header in seconds (never negative); None if absent or not a number."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
