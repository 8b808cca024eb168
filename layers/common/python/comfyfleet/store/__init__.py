"""Where the platform keeps its state: ports (``ports``), DynamoDB adapters (``dynamo``),
in-memory fakes for unit tests (``memory``)."""

from __future__ import annotations

from dataclasses import dataclass

from comfyfleet.store.ports import (
    AccountStore,
    DeploymentStore,
    JobStore,
    KeyStore,
    LimitStore,
    ModelCatalog,
    NodeRegistry,
)


@dataclass(frozen=True)
class Stores:
    """Every store a process uses, built once at start-up."""

    jobs: JobStore
    limits: LimitStore
    accounts: AccountStore
    keys: KeyStore
    nodes: NodeRegistry
    models: ModelCatalog
    deployments: DeploymentStore
