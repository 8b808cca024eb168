"""In-memory stores with the DynamoDB adapters' semantics, for unit tests and the simulation.

One lock makes each transition atomic, as a transaction does. The contract tests run the
same scenarios against these and against DynamoDB on moto.
"""

from __future__ import annotations

from comfyfleet.settings import Settings
from comfyfleet.store import Stores
from comfyfleet.store.memory.accounts import MemoryAccountStore, MemoryKeyStore, MemoryLimitStore
from comfyfleet.store.memory.deployments import MemoryDeploymentStore
from comfyfleet.store.memory.jobs import MemoryJobStore
from comfyfleet.store.memory.nodes import MemoryModelCatalog, MemoryNodeRegistry
from comfyfleet.store.memory.state import MemoryState


class Memory(MemoryState):
    """The shared state behind the in-memory stores, and the stores over it."""

    def stores(self) -> Stores:
        return Stores(
            jobs=MemoryJobStore(self),
            limits=MemoryLimitStore(self),
            accounts=MemoryAccountStore(self),
            keys=MemoryKeyStore(self),
            nodes=MemoryNodeRegistry(self),
            models=MemoryModelCatalog(self),
            deployments=MemoryDeploymentStore(self),
        )


def memory_stores(settings: Settings) -> Stores:
    return Memory(settings).stores()


__all__ = [
    "Memory",
    "MemoryAccountStore",
    "MemoryDeploymentStore",
    "MemoryJobStore",
    "MemoryKeyStore",
    "MemoryLimitStore",
    "MemoryModelCatalog",
    "MemoryNodeRegistry",
    "memory_stores",
]
