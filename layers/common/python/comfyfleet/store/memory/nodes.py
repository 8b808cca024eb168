"""The in-memory node registry and model catalog."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import replace

from comfyfleet.domain import SHARED_ROUTE, NodeInfo, NodeStatus
from comfyfleet.errors import NodeNotFound
from comfyfleet.store.memory.state import MemoryState
from comfyfleet.store.ports import ModelRecord


class MemoryNodeRegistry:
    def __init__(self, memory: MemoryState) -> None:
        self.m = memory

    def register(self, node: NodeInfo) -> None:
        with self.m.lock:
            self.m.nodes[node.node_id] = replace(
                copy.deepcopy(node),
                registered_at=node.heartbeat_at,
                current_job=None,
                current_started_at=None,
            )

    def _node(self, node_id: str) -> NodeInfo:
        node = self.m.nodes.get(node_id)
        if node is None:
            raise NodeNotFound(node_id)
        return node

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
        with self.m.lock:
            node = self._node(node_id)
            if node.status is not NodeStatus.DRAINING:  # an operator's drain sticks
                node.status = status
            node.heartbeat_at, node.cached = now, dict(cached)
            node.free_bytes, node.current_job = free_bytes, current_job
            node.current_started_at, node.ewma_run_seconds = current_started_at, ewma_run_seconds
            node.bandwidth_bytes_per_second = bandwidth_bytes_per_second
            return node.status

    def set_status(self, node_id: str, status: NodeStatus) -> None:
        with self.m.lock:
            self._node(node_id).status = status

    def remove(self, node_id: str) -> None:
        with self.m.lock:
            self.m.nodes.pop(node_id, None)

    def get(self, node_id: str) -> NodeInfo:
        with self.m.lock:
            node = copy.deepcopy(self._node(node_id))
            node.queued = max(0, self.m.route_queued.get(node_id, 0))
            return node

    def snapshot(self) -> tuple[list[NodeInfo], int]:
        with self.m.lock:
            nodes = [self.get(node_id) for node_id in self.m.nodes]
            return nodes, max(0, self.m.route_queued.get(SHARED_ROUTE, 0))


class MemoryModelCatalog:
    def __init__(self, memory: MemoryState) -> None:
        self.m = memory

    def get_many(self, keys: Iterable[str]) -> dict[str, ModelRecord]:
        with self.m.lock:
            return {k: self.m.models[k] for k in keys if k in self.m.models}

    def put(self, record: ModelRecord) -> None:
        with self.m.lock:
            self.m.models[record.model_key] = record
