"""The shared state behind the in-memory stores: every table as a dict, under one lock."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from comfyfleet.deployments.spec import Deployment
from comfyfleet.domain import SHARED_ROUTE, Account, ApiKey, Job, NodeInfo
from comfyfleet.settings import Settings
from comfyfleet.store.ports import ModelRecord


class Counts:
    """One account's counters, as the limits table keeps them."""

    __slots__ = ("waiting", "ring", "backlog", "running", "active")

    def __init__(self) -> None:
        self.waiting = self.ring = self.backlog = self.running = self.active = 0

    def move(self, **deltas: int) -> None:
        for name, delta in deltas.items():
            setattr(self, name, getattr(self, name) + delta)


@dataclass(slots=True)
class DeploymentHead:
    """A deployment name's numbering: its live versions are first … latest."""

    latest: int
    first: int
    created_at: float
    deleted: bool = False


class MemoryState:
    """Every table the in-memory stores keep, and the lock each transition holds."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lock = threading.RLock()
        self.jobs: dict[str, Job] = {}
        self.counts: dict[str, Counts] = {}
        self.windows: dict[tuple[str, int], int] = {}
        self.accounts: dict[str, Account] = {}
        self.keys: dict[str, ApiKey] = {}
        self.nodes: dict[str, NodeInfo] = {}
        self.route_queued: dict[str, int] = {}
        self.models: dict[str, ModelRecord] = {}
        self.deployment_heads: dict[tuple[str, str], DeploymentHead] = {}
        self.deployments: dict[tuple[str, str, int], Deployment] = {}

    def move_route(self, route: str | None, delta: int) -> None:
        key = route or SHARED_ROUTE
        self.route_queued[key] = self.route_queued.get(key, 0) + delta
