"""Idempotent submits (``Idempotency-Key``), with Powertools' idempotency utility.

The record's key is the account and the header's value, so two accounts never share one;
its payload hash covers the route and the request body, so the same key with another body
is refused (``IdempotencyValidationError`` → 409 idempotency_conflict) for 24 hours. The
first request's 202 body is stored and returned again to every repeat. A submit that fails
(a 400, a 429) leaves no record: Powertools deletes it, and the client may retry with the
same key. A request still running holds the key until it ends or, should its process die,
until the Lambda's remaining time has passed (``in_progress_expiration``).

The records live in the ``idempotency`` table (comfyfleet.resources), whose key and TTL
attributes are Powertools' defaults (``id``, ``expiration``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig
from aws_lambda_powertools.utilities.idempotency.base import IdempotencyHandler
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyItemAlreadyExistsError,
    IdempotencyItemNotFoundError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.base import (
    BasePersistenceLayer,
    DataRecord,
)

IDEMPOTENCY_WINDOW_SECONDS = 24 * 3600
KEY_PREFIX = "submit"  # stable across function names: the record outlives a redeploy
MAX_KEY_LENGTH = 255
# Without a Lambda context (tests, the dev stack) a request is given this long before a
# record it left in progress stops blocking its key.
DEFAULT_REMAINING_MILLIS = 30_000


class _Deadline:
    """A stand-in for the Lambda context's remaining time outside Lambda."""

    def get_remaining_time_in_millis(self) -> int:
        return DEFAULT_REMAINING_MILLIS


class IdempotentSubmits:
    """Runs a submit at most once per (account, Idempotency-Key) within 24 hours."""

    def __init__(self, persistence: BasePersistenceLayer) -> None:
        self.persistence = persistence
        self.config = IdempotencyConfig(
            event_key_jmespath="[account_id, key]",
            payload_validation_jmespath="request",
            raise_on_no_idempotency_key=True,
            expires_after_seconds=IDEMPOTENCY_WINDOW_SECONDS,
            hash_function="sha256",
        )

    def run(
        self,
        *,
        account_id: str,
        key: str,
        request: dict[str, Any],
        submit: Callable[[], dict[str, Any]],
        lambda_context: Any = None,
    ) -> tuple[dict[str, Any], bool]:
        """``submit()``'s result, or the stored one; and whether it ran now."""
        ran: list[bool] = []

        def once() -> dict[str, Any]:
            ran.append(True)
            return submit()

        context = lambda_context
        if not callable(getattr(context, "get_remaining_time_in_millis", None)):
            context = _Deadline()
        self.config.register_lambda_context(context)
        handler = IdempotencyHandler(
            function=once,
            function_payload={"account_id": account_id, "key": key, "request": request},
            config=self.config,
            persistence_store=self.persistence,
            key_prefix=KEY_PREFIX,
            function_args=(),
            function_kwargs={},
        )
        result: dict[str, Any] = handler.handle()
        return result, bool(ran)


class MemoryPersistenceLayer(BasePersistenceLayer):
    """Powertools' DynamoDB layer's conditions, in memory (unit tests, local runs)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: dict[str, DataRecord] = {}
        self._lock = threading.Lock()

    def _get_record(self, idempotency_key: str) -> DataRecord:
        with self._lock:
            record = self.records.get(idempotency_key)
        if record is None:
            raise IdempotencyItemNotFoundError
        return record

    def _put_record(self, data_record: DataRecord) -> None:
        now = time.time()
        with self._lock:
            old = self.records.get(data_record.idempotency_key)
            blocked = (
                old is not None
                and (old.expiry_timestamp or 0) >= now
                and not (
                    old.status == "INPROGRESS"
                    and old.in_progress_expiry_timestamp is not None
                    and old.in_progress_expiry_timestamp < now * 1000
                )
            )
            if not blocked:
                self.records[data_record.idempotency_key] = data_record
                return
        assert old is not None
        self._validate_payload(data_payload=data_record, stored_data_record=old)
        raise IdempotencyItemAlreadyExistsError(old_data_record=old)

    def _update_record(self, data_record: DataRecord) -> None:
        with self._lock:
            old = self.records.get(data_record.idempotency_key)
            if old is not None and data_record.payload_hash is None:
                data_record.payload_hash = old.payload_hash
            self.records[data_record.idempotency_key] = data_record

    def _delete_record(self, data_record: DataRecord) -> None:
        with self._lock:
            self.records.pop(data_record.idempotency_key, None)
