"""DeploymentStore on DynamoDB: one partition per account in the deployments table.

A name has a head item (sk ``#<name>``: its numbering, latest, first live version, deleted)
and one item per version (sk ``<name>#<version, 10 digits>``). A new version is one
transaction: the head moves from the number it was read at, and the version is put where no
item is, so two concurrent posts get two numbers. Versions never change, so each process
keeps the ones it read; the head is read (consistently) on every get.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import OrderedDict
from typing import Any

from botocore.exceptions import ClientError

from comfyfleet.deployments.spec import Deployment, DeploymentInput, DeploymentSummary
from comfyfleet.errors import DeploymentNotFound, DeploymentTooLarge, StorageError
from comfyfleet.resources import DEPLOYMENTS
from comfyfleet.settings import Settings
from comfyfleet.store.dynamo.codec import (
    Item,
    as_json,
    call,
    error_code,
    get_int,
    get_json,
    get_n,
    get_s,
    n,
    pack_workflow,
    s,
    unpack_workflow,
)
from comfyfleet.store.ports import DeploymentPage, decode_name_cursor, encode_name_cursor

# DynamoDB's item limit is 400 KB; leave room for the attribute names and the small fields.
MAX_VERSION_BYTES = 380_000
_CREATE_TRIES = 5
_BATCH = 25
_CACHED_VERSIONS = 256


def _head_sk(name: str) -> str:
    return f"#{name}"


def _version_sk(name: str, version: int) -> str:
    return f"{name}#{version:010d}"


class DynamoDeploymentStore:
    def __init__(self, dynamodb: Any, settings: Settings) -> None:
        self.db = dynamodb
        self.table = DEPLOYMENTS.name(settings)
        self._versions: OrderedDict[tuple[str, str, int], Deployment] = OrderedDict()
        self._lock = threading.Lock()

    # -- writes -----------------------------------------------------------------------------

    def create(self, draft: Deployment) -> Deployment:
        for attempt in range(_CREATE_TRIES):
            head = self._head(draft.account_id, draft.name)
            version = (get_int(head, "latest") if head else 0) + 1
            stored = Deployment(**{**_fields(draft), "version": version})
            item = _version_item(stored)
            try:
                call(
                    "create deployment",
                    self._transact,
                    items=[self._put_head(stored, head), self._put_version(item)],
                )
                return stored
            except _Raced:
                time.sleep(random.uniform(0, 0.01 * 2**attempt))
        raise StorageError("creating the deployment kept racing other writes to its name")

    def _transact(self, items: list[dict[str, Any]]) -> None:
        try:
            self.db.transact_write_items(TransactItems=items)
        except ClientError as exc:
            reasons = exc.response.get("CancellationReasons", [])
            codes = {reason.get("Code") for reason in reasons}
            if codes & {"ConditionalCheckFailed", "TransactionConflict"}:
                raise _Raced() from None
            raise

    def _put_head(self, stored: Deployment, head: Item | None) -> dict[str, Any]:
        """The head at the new version, on condition it is still as it was read."""
        deleted = head is not None and "deleted_at" in head
        first, created = stored.version, stored.created_at
        if head is not None and not deleted:
            first, created = get_int(head, "first", 1), get_n(head, "created_at") or created
        item: Item = {
            "account_id": s(stored.account_id),
            "sk": s(_head_sk(stored.name)),
            "name": s(stored.name),
            "latest": n(stored.version),
            "first": n(first),
            "created_at": n(created),
            "updated_at": n(stored.created_at),
            "description": s(stored.description),
        }
        put: dict[str, Any] = {"TableName": self.table, "Item": item}
        if head is None:
            put["ConditionExpression"] = "attribute_not_exists(sk)"
        else:
            # A delete between the read and this write changes what the next version starts.
            state = "attribute_exists" if deleted else "attribute_not_exists"
            put["ConditionExpression"] = f"latest = :read AND {state}(deleted_at)"
            put["ExpressionAttributeValues"] = {":read": n(get_int(head, "latest"))}
        return {"Put": put}

    def _put_version(self, item: Item) -> dict[str, Any]:
        return {
            "Put": {
                "TableName": self.table,
                "Item": item,
                "ConditionExpression": "attribute_not_exists(sk)",
            }
        }

    def delete(self, account_id: str, name: str) -> int:
        try:
            old = self.db.update_item(
                TableName=self.table,
                Key={"account_id": s(account_id), "sk": s(_head_sk(name))},
                UpdateExpression="SET deleted_at = :now",
                ConditionExpression="attribute_exists(sk) AND attribute_not_exists(deleted_at)",
                ExpressionAttributeValues={":now": n(time.time())},
                ReturnValues="ALL_OLD",
            )["Attributes"]
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise DeploymentNotFound(name) from None
            raise StorageError(f"delete deployment failed: {error_code(exc)}") from exc
        first, latest = get_int(old, "first", 1), get_int(old, "latest")
        # The head says deleted already: versions left by a crash here are never read again
        # (a new post of the name starts after latest).
        keys = [
            {"account_id": s(account_id), "sk": s(_version_sk(name, version))}
            for version in range(first, latest + 1)
        ]
        for start in range(0, len(keys), _BATCH):
            self._delete_keys(keys[start : start + _BATCH])
        return latest - first + 1

    def _delete_keys(self, keys: list[Item]) -> None:
        pending: dict[str, Any] = {self.table: [{"DeleteRequest": {"Key": k}} for k in keys]}
        for attempt in range(_CREATE_TRIES):
            response = call("delete versions", self.db.batch_write_item, RequestItems=pending)
            pending = response.get("UnprocessedItems") or {}
            if not pending:
                return
            time.sleep(random.uniform(0, 0.05 * 2**attempt))
        raise StorageError("deleting the deployment's versions was throttled")

    # -- reads ------------------------------------------------------------------------------

    def _head(self, account_id: str, name: str) -> Item | None:
        item: Item | None = call(
            "get deployment",
            self.db.get_item,
            TableName=self.table,
            Key={"account_id": s(account_id), "sk": s(_head_sk(name))},
            ConsistentRead=True,
        ).get("Item")
        return item

    def get(self, account_id: str, name: str, version: int | None = None) -> Deployment:
        head = self._head(account_id, name)
        if head is None or "deleted_at" in head:
            raise DeploymentNotFound(name)
        latest = get_int(head, "latest")
        wanted = latest if version is None else version
        if not get_int(head, "first", 1) <= wanted <= latest:
            raise DeploymentNotFound(name, version)
        key = (account_id, name, wanted)
        with self._lock:
            cached = self._versions.get(key)
        if cached is not None:
            return cached
        item = call(
            "get deployment version",
            self.db.get_item,
            TableName=self.table,
            Key={"account_id": s(account_id), "sk": s(_version_sk(name, wanted))},
        ).get("Item")
        if item is None:
            raise DeploymentNotFound(name, version)
        found = _version_from(item)
        with self._lock:
            self._versions[key] = found
            while len(self._versions) > _CACHED_VERSIONS:
                self._versions.popitem(last=False)
        return found

    def list_for_account(
        self, account_id: str, *, limit: int, cursor: str | None
    ) -> DeploymentPage:
        query: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "account_id = :account AND begins_with(sk, :head)",
            "FilterExpression": "attribute_not_exists(deleted_at)",
            "ExpressionAttributeValues": {":account": s(account_id), ":head": s("#")},
            "ConsistentRead": True,
        }
        if cursor is not None:
            after = decode_name_cursor(cursor)
            query["ExclusiveStartKey"] = {"account_id": s(account_id), "sk": s(_head_sk(after))}
        found: list[DeploymentSummary] = []
        more = False
        while True:  # the filter drops deleted names: read on until the page is full
            response = call("list deployments", self.db.query, Limit=limit + 1, **query)
            found.extend(_summary_from(item) for item in response.get("Items", []))
            last = response.get("LastEvaluatedKey")
            if len(found) > limit or last is None:
                more = len(found) > limit
                break
            query["ExclusiveStartKey"] = last
        page = found[:limit]
        return DeploymentPage(page, encode_name_cursor(page[-1].name) if more else None)


class _Raced(Exception):
    """Another write to the same name won; read the head again."""


def _fields(deployment: Deployment) -> dict[str, Any]:
    return {name: getattr(deployment, name) for name in Deployment.__dataclass_fields__}


def _version_item(deployment: Deployment) -> Item:
    item: Item = {
        "account_id": s(deployment.account_id),
        "sk": s(_version_sk(deployment.name, deployment.version)),
        "name": s(deployment.name),
        "version": n(deployment.version),
        "workflow": {"B": pack_workflow(deployment.workflow)},
        "inputs": as_json(deployment.inputs_dict()),
        "created_at": n(deployment.created_at),
        "description": s(deployment.description),
    }
    if deployment.models is not None:
        item["models"] = as_json(deployment.models)
    size = sum(len(json.dumps(value)) for value in item.values() if "B" not in value)
    size += len(item["workflow"]["B"])
    if size > MAX_VERSION_BYTES:
        raise DeploymentTooLarge(
            f"the deployment is {size} bytes stored (the workflow compressed); "
            f"at most {MAX_VERSION_BYTES}"
        )
    return item


def _version_from(item: Item) -> Deployment:
    inputs = get_json(item, "inputs") or {}
    return Deployment(
        account_id=item["account_id"]["S"],
        name=item["name"]["S"],
        version=get_int(item, "version"),
        workflow=unpack_workflow(item["workflow"]["B"]),
        inputs={name: DeploymentInput.from_dict(name, spec) for name, spec in inputs.items()},
        created_at=get_n(item, "created_at") or 0.0,
        models=get_json(item, "models"),
        description=get_s(item, "description") or "",
    )


def _summary_from(item: Item) -> DeploymentSummary:
    return DeploymentSummary(
        name=item["name"]["S"],
        version=get_int(item, "latest"),
        created_at=get_n(item, "created_at") or 0.0,
        updated_at=get_n(item, "updated_at") or 0.0,
        description=get_s(item, "description") or "",
    )
