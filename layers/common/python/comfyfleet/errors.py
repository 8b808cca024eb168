"""Domain exceptions. Storage adapters raise these; nothing from botocore crosses the boundary.

The API maps each to one HTTP status in one place (see the api function).
"""

from __future__ import annotations

from typing import Any


class ComfyFleetError(Exception):
    """Base of the domain's exceptions."""

    code = "internal_error"


class NotFound(ComfyFleetError):
    code = "not_found"


class JobNotFound(NotFound):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} not found")
        self.job_id = job_id


class AccountNotFound(NotFound):
    def __init__(self, account_id: str) -> None:
        super().__init__(f"account {account_id} not found")
        self.account_id = account_id


class KeyNotFound(NotFound):
    def __init__(self, key_id: str) -> None:
        super().__init__(f"API key {key_id} not found")
        self.key_id = key_id


class NodeNotFound(NotFound):
    def __init__(self, node_id: str) -> None:
        super().__init__(f"node {node_id} not found")
        self.node_id = node_id


class DeploymentNotFound(NotFound):
    def __init__(self, name: str, version: int | None = None) -> None:
        which = f"deployment {name!r}" + (f" version {version}" if version is not None else "")
        super().__init__(f"{which} not found")
        self.name = name
        self.version = version


class DeploymentTooLarge(ComfyFleetError):
    """A deployment version does not fit one stored record."""

    code = "payload_too_large"


class JobStateConflict(ComfyFleetError):
    """A transition's condition did not hold: the job is not in the state it needs."""

    code = "job_state_conflict"

    def __init__(self, job_id: str, state: str | None, wanted: str) -> None:
        super().__init__(f"job {job_id} is {state or 'missing'}; {wanted}")
        self.job_id = job_id
        self.state = state


class LimitExceeded(ComfyFleetError):
    """An admission limit: ``code`` is rate_limit_exceeded or queue_full."""

    def __init__(self, code: str, retry_after: int, message: str, counters: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after
        self.counters = counters


class InvalidCursor(ComfyFleetError):
    code = "invalid_cursor"


class StorageError(ComfyFleetError):
    """AWS failed in a way the caller cannot fix (throttling past retries, outage)."""

    code = "storage_unavailable"
