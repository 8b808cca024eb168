"""NodeRegistry and ModelCatalog on DynamoDB."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from botocore.exceptions import ClientError

from comfyfleet.domain import NodeInfo, NodeStatus
from comfyfleet.errors import NodeNotFound, StorageError
from comfyfleet.resources import MODELS, NODES
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
    s,
)
from comfyfleet.store.dynamo.counters import SHARED_QUEUE_ITEM
from comfyfleet.store.ports import ModelRecord

_BATCH_GET_LIMIT = 100


def _node_from(item: Item) -> NodeInfo:
    return NodeInfo(
        node_id=item["node_id"]["S"],
        status=NodeStatus(item["node_status"]["S"]),
        heartbeat_at=get_n(item, "heartbeat_at") or 0.0,
        queue_url=get_s(item, "queue_url") or "",
        cached={key: int(size) for key, size in (get_json(item, "cached") or {}).items()},
        free_bytes=get_int(item, "free_bytes"),
        gpu=get_s(item, "gpu") or "",
        current_job=get_s(item, "current_job"),
        current_started_at=get_n(item, "current_started_at"),
        ewma_run_seconds=get_n(item, "ewma_run_seconds"),
        bandwidth_bytes_per_second=get_n(item, "bandwidth"),
        queued=max(0, get_int(item, "queued")),
        registered_at=get_n(item, "registered_at") or 0.0,
        environment_id=get_s(item, "environment_id") or "",
    )


def _optional(
    values: dict[str, Any], sets: list[str], removes: list[str], name: str, value: Any, encode: Any
) -> None:
    if value is None:
        removes.append(name)
    else:
        sets.append(f"{name} = :{name}")
        values[f":{name}"] = encode(value)


class DynamoNodeRegistry:
    def __init__(self, dynamodb: Any, settings: Settings) -> None:
        self.db = dynamodb
        self.table = NODES.name(settings)

    def register(self, node: NodeInfo) -> None:
        # An update, not a put: a node registering again keeps its queue's queued count.
        call(
            "register node",
            self.db.update_item,
            TableName=self.table,
            Key={"node_id": s(node.node_id)},
            UpdateExpression="SET node_status = :status, heartbeat_at = :now, queue_url = :url, "
            "cached = :cached, free_bytes = :free, gpu = :gpu, registered_at = :now, "
            "environment_id = :environment "
            "REMOVE current_job, current_started_at ADD queued :zero",
            ExpressionAttributeValues={
                ":status": s(node.status),
                ":now": n(node.heartbeat_at),
                ":url": s(node.queue_url),
                ":cached": as_json(node.cached),
                ":free": n(node.free_bytes),
                ":gpu": s(node.gpu),
                ":environment": s(node.environment_id),
                ":zero": n(0),
            },
        )

    def heartbeat(
        self,
        node_id: str,
        *,
        now: float,
        status: NodeStatus,
        cached: dict[str, int],
        free_bytes: int,
        current_job: str | None,
        current_started_at: float | None,
        ewma_run_seconds: float | None,
        bandwidth_bytes_per_second: float | None,
    ) -> NodeStatus:
        values: dict[str, Any] = {
            ":now": n(now),
            ":cached": as_json(cached),
            ":free": n(free_bytes),
        }
        sets = ["heartbeat_at = :now", "cached = :cached", "free_bytes = :free"]
        removes: list[str] = []
        _optional(values, sets, removes, "current_job", current_job, s)
        _optional(values, sets, removes, "current_started_at", current_started_at, n)
        _optional(values, sets, removes, "ewma_run_seconds", ewma_run_seconds, n)
        _optional(values, sets, removes, "bandwidth", bandwidth_bytes_per_second, n)
        tail = " REMOVE " + ", ".join(removes) if removes else ""
        if status is NodeStatus.DRAINING:
            self._update(
                node_id,
                "SET node_status = :status, " + ", ".join(sets) + tail,
                {**values, ":status": s(status)},
            )
            return status
        try:
            # An operator's drain sticks: only the node itself may not undo it.
            self.db.update_item(
                TableName=self.table,
                Key={"node_id": s(node_id)},
                UpdateExpression="SET node_status = :status, " + ", ".join(sets) + tail,
                ExpressionAttributeValues={
                    **values,
                    ":status": s(status),
                    ":draining": s(NodeStatus.DRAINING),
                },
                ConditionExpression="attribute_exists(node_status) AND node_status <> :draining",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise StorageError(f"heartbeat failed: {error_code(exc)}") from exc
            if not exc.response.get("Item"):
                raise NodeNotFound(node_id) from None
            self._update(node_id, "SET " + ", ".join(sets) + tail, values)
            return NodeStatus.DRAINING
        return status

    def set_status(self, node_id: str, status: NodeStatus) -> None:
        self._update(node_id, "SET node_status = :status", {":status": s(status)})

    def _update(self, node_id: str, expression: str, values: dict[str, Any]) -> None:
        try:
            self.db.update_item(
                TableName=self.table,
                Key={"node_id": s(node_id)},
                UpdateExpression=expression,
                ExpressionAttributeValues=values,
                ConditionExpression="attribute_exists(node_status)",
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise NodeNotFound(node_id) from None
            raise StorageError(f"update node failed: {error_code(exc)}") from exc

    def remove(self, node_id: str) -> None:
        call("remove node", self.db.delete_item, TableName=self.table, Key={"node_id": s(node_id)})

    def get(self, node_id: str) -> NodeInfo:
        item = call(
            "get node",
            self.db.get_item,
            TableName=self.table,
            Key={"node_id": s(node_id)},
            ConsistentRead=True,
        ).get("Item")
        if item is None or "node_status" not in item:
            raise NodeNotFound(node_id)
        return _node_from(item)

    def snapshot(self) -> tuple[list[NodeInfo], int]:
        nodes: list[NodeInfo] = []
        shared = 0
        request: dict[str, Any] = {"TableName": self.table}
        while True:
            response = call("scan nodes", self.db.scan, **request)
            for item in response.get("Items", []):
                if item["node_id"]["S"] == SHARED_QUEUE_ITEM:
                    shared = max(0, get_int(item, "queued"))
                elif "node_status" in item:  # counts left behind by a removed node are not one
                    nodes.append(_node_from(item))
            if "LastEvaluatedKey" not in response:
                return nodes, shared
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]


class DynamoModelCatalog:
    def __init__(self, dynamodb: Any, settings: Settings) -> None:
        self.db = dynamodb
        self.table = MODELS.name(settings)

    def get_many(self, keys: Iterable[str]) -> dict[str, ModelRecord]:
        wanted = sorted(set(keys))
        found: dict[str, ModelRecord] = {}
        for start in range(0, len(wanted), _BATCH_GET_LIMIT):
            request = {
                self.table: {
                    "Keys": [{"model_key": s(k)} for k in wanted[start : start + _BATCH_GET_LIMIT]]
                }
            }
            while request:
                response = call("read models", self.db.batch_get_item, RequestItems=request)
                for item in response.get("Responses", {}).get(self.table, []):
                    record = ModelRecord(
                        model_key=item["model_key"]["S"],
                        url=get_s(item, "url") or "",
                        size=get_int(item, "size"),
                        sha256=get_s(item, "sha256"),
                        folder=get_s(item, "folder") or "",
                        mirror_key=get_s(item, "mirror_key"),
                    )
                    found[record.model_key] = record
                request = response.get("UnprocessedKeys") or {}
        return found

    def put(self, record: ModelRecord) -> None:
        item: Item = {
            "model_key": s(record.model_key),
            "url": s(record.url),
            "size": n(record.size),
            "folder": s(record.folder),
        }
        if record.sha256:
            item["sha256"] = s(record.sha256)
        if record.mirror_key:
            item["mirror_key"] = s(record.mirror_key)
        call("record model", self.db.put_item, TableName=self.table, Item=item)
