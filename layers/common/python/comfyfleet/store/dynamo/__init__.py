"""The stores on DynamoDB."""

from __future__ import annotations

from comfyfleet.aws import client
from comfyfleet.settings import Settings
from comfyfleet.store import Stores
from comfyfleet.store.dynamo.accounts import DynamoAccountStore, DynamoKeyStore, DynamoLimitStore
from comfyfleet.store.dynamo.codec import GuardedClient
from comfyfleet.store.dynamo.deployments import DynamoDeploymentStore
from comfyfleet.store.dynamo.jobs import DynamoJobStore
from comfyfleet.store.dynamo.nodes import DynamoModelCatalog, DynamoNodeRegistry


def dynamo_stores(
    settings: Settings, *, endpoint_url: str | None = None, region: str | None = None
) -> Stores:
    """Every store on one DynamoDB client (the process's, from comfyfleet.aws)."""
    db = GuardedClient(client("dynamodb", endpoint_url=endpoint_url, region=region))
    return Stores(
        jobs=DynamoJobStore(db, settings),
        limits=DynamoLimitStore(db, settings),
        accounts=DynamoAccountStore(db, settings),
        keys=DynamoKeyStore(db, settings),
        nodes=DynamoNodeRegistry(db, settings),
        models=DynamoModelCatalog(db, settings),
        deployments=DynamoDeploymentStore(db, settings),
    )


__all__ = [
    "DynamoAccountStore",
    "DynamoDeploymentStore",
    "DynamoJobStore",
    "DynamoKeyStore",
    "DynamoLimitStore",
    "DynamoModelCatalog",
    "DynamoNodeRegistry",
    "dynamo_stores",
]
