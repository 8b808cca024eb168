"""The plumbing every job transition on DynamoDB shares: the tables, one transaction runner.

Each transition family is a mixin on ``JobTable``; what more than one family needs lives
here, so that the families never call into one another for plumbing.
"""

from __future__ import annotations

import random
import time
from typing import Any

from botocore.exceptions import ClientError

from comfyfleet.domain import Job
from comfyfleet.errors import JobNotFound, JobStateConflict, StorageError
from comfyfleet.resources import JOBS, LIMITS, NODES
from comfyfleet.settings import Settings
from comfyfleet.store.dynamo.codec import Item, call, error_code, get_s, job_from_item, s

_CONFLICT_RETRIES = 6


class Cancelled(Exception):
    """A transaction's condition failed; ``reasons`` align with its items."""

    def __init__(self, reasons: list[dict[str, Any]]) -> None:
        super().__init__("transaction cancelled")
        self.reasons = reasons

    def failed(self, index: int) -> bool:
        return self.reasons[index].get("Code") == "ConditionalCheckFailed"

    def old(self, index: int) -> Item | None:
        item: Item | None = self.reasons[index].get("Item")
        return item


class JobTable:
    """The jobs table with the limits and nodes tables a transition moves counters in."""

    def __init__(self, dynamodb: Any, settings: Settings) -> None:
        self.db = dynamodb
        self.settings = settings
        self.jobs = JOBS.name(settings)
        self.limits = LIMITS.name(settings)
        self.nodes = NODES.name(settings)
        self.retention = settings.history_retention_days * 86400

    def _transact(self, items: list[dict[str, Any]]) -> None:
        """Run a transaction; retry conflicts with other transactions on the same items."""
        for attempt in range(_CONFLICT_RETRIES):
            try:
                self.db.transact_write_items(TransactItems=items)
                return
            except ClientError as exc:
                if error_code(exc) != "TransactionCanceledException":
                    raise StorageError(f"transaction failed: {error_code(exc)}") from exc
                reasons = exc.response.get("CancellationReasons", [])
                codes = {reason.get("Code") for reason in reasons}
                if "ConditionalCheckFailed" in codes:
                    raise Cancelled(reasons) from None
                if "TransactionConflict" not in codes and "ThrottlingError" not in codes:
                    raise StorageError(f"transaction cancelled: {sorted(map(str, codes))}") from exc
            time.sleep(random.uniform(0, 0.01 * 2**attempt))
        raise StorageError("transaction kept conflicting with others")

    def _job_update(
        self,
        job_id: str,
        expression: str,
        condition: str,
        values: dict[str, Any],
        names: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        update: dict[str, Any] = {
            "TableName": self.jobs,
            "Key": {"job_id": s(job_id)},
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": {"#state": "state", **(names or {})},
            "ExpressionAttributeValues": values,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        return {"Update": update}

    def _conflict(self, job_id: str, old: Item | None, wanted: str) -> Exception:
        if old is None:
            return JobNotFound(job_id)
        return JobStateConflict(job_id, get_s(old, "state"), wanted)

    # Every family reads a job back by id, before or after its transaction.
    def get(self, job_id: str) -> Job:
        item = call(
            "get job",
            self.db.get_item,
            TableName=self.jobs,
            Key={"job_id": s(job_id)},
            ConsistentRead=True,
        ).get("Item")
        if item is None:
            raise JobNotFound(job_id)
        return job_from_item(item)
