"""Building the API and the authorizer with their dependencies: on AWS (the Lambda functions,
integration tests against moto, the dev stack) or in memory (unit tests, fuzzing)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from comfyfleet.api.admin import AdminService
from comfyfleet.api.auth import KeyAuthorizer
from comfyfleet.api.deployments import DeploymentsService
from comfyfleet.api.http import HttpApi
from comfyfleet.api.idempotency import IdempotentSubmits, MemoryPersistenceLayer
from comfyfleet.api.jobs import JobsService
from comfyfleet.api.node_classes import NodeClasses
from comfyfleet.api.objects import CatalogueCache, MemoryObjects, ObjectStore, S3Objects
from comfyfleet.api.queue_stats import (
    MemoryQueueInspector,
    QueueInspector,
    QueueKind,
    QueueRef,
    SqsQueueInspector,
)
from comfyfleet.api.telemetry import RecordedMetrics, SubmitMetrics
from comfyfleet.clock import Clock, FakeClock, SystemClock
from comfyfleet.errors import StorageError
from comfyfleet.events import JobEvents, MemoryJobEvents, SnsJobEvents
from comfyfleet.queues import JobQueues, MemoryQueues, SqsJobQueues
from comfyfleet.resources import (
    IDEMPOTENCY,
    QUEUES,
    SHARED_DLQ,
    SHARED_QUEUE,
    WEBHOOKS_DLQ,
    WEBHOOKS_QUEUE,
)
from comfyfleet.scheduling import Dispatcher
from comfyfleet.settings import Settings
from comfyfleet.store import Stores

_KINDS: dict[str, QueueKind] = {
    SHARED_QUEUE.logical: "shared",
    SHARED_DLQ.logical: "dead_letter",
    WEBHOOKS_QUEUE.logical: "webhooks",
    WEBHOOKS_DLQ.logical: "dead_letter",
}


def build_api(
    *,
    settings: Settings,
    stores: Stores,
    queues: JobQueues,
    shared_url: str,
    objects: ObjectStore,
    queue_stats: QueueInspector,
    fixed_queues: Callable[[], Sequence[QueueRef]],
    idempotency: Any,
    metrics: SubmitMetrics,
    events: JobEvents,
    clock: Clock,
) -> HttpApi:
    """The API over the given ports (``idempotency``: a Powertools persistence layer)."""
    dispatcher = Dispatcher(stores, queues, settings, clock, shared_url=shared_url, events=events)
    node_classes = NodeClasses(
        catalogues=CatalogueCache(objects, settings.model_bucket_name, clock),
        snapshot=dispatcher.snapshot,  # the router's: the environments in service cost no call
        settings=settings,
        clock=clock,
    )
    jobs = JobsService(
        settings=settings,
        stores=stores,
        dispatcher=dispatcher,
        catalogue=node_classes,
        objects=objects,
        idempotency=IdempotentSubmits(idempotency),
        clock=clock,
    )
    admin = AdminService(
        settings=settings,
        stores=stores,
        dispatcher=dispatcher,
        queue_stats=queue_stats,
        fixed_queues=fixed_queues,
        clock=clock,
    )
    deployments = DeploymentsService(stores=stores, jobs=jobs, clock=clock)
    return HttpApi(
        settings=settings,
        jobs=jobs,
        admin=admin,
        node_classes=node_classes,
        deployments=deployments,
        metrics=metrics,
    )


# -- AWS --------------------------------------------------------------------------------------


def aws_api(
    settings: Settings,
    *,
    metrics: SubmitMetrics,
    endpoint_url: str | None = None,
    region: str | None = None,
    clock: Clock | None = None,
) -> HttpApi:
    """The API on DynamoDB, SQS, S3 and CloudWatch (boto3 clients of comfyfleet.aws)."""
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    from comfyfleet.aws import client
    from comfyfleet.store.dynamo import dynamo_stores

    sqs = client("sqs", endpoint_url=endpoint_url, region=region)
    queues = SqsJobQueues(sqs)
    shared_url = settings.shared_queue_url or queues.queue_url(SHARED_QUEUE.name(settings))
    return build_api(
        settings=settings,
        stores=dynamo_stores(settings, endpoint_url=endpoint_url, region=region),
        queues=queues,
        shared_url=shared_url,
        objects=S3Objects(client("s3", endpoint_url=endpoint_url, region=region)),
        queue_stats=SqsQueueInspector(
            sqs, client("cloudwatch", endpoint_url=endpoint_url, region=region)
        ),
        fixed_queues=_looked_up(settings, queues, shared_url),
        idempotency=DynamoDBPersistenceLayer(
            table_name=IDEMPOTENCY.name(settings),
            boto3_client=client("dynamodb", endpoint_url=endpoint_url, region=region),
        ),
        metrics=metrics,
        events=SnsJobEvents(client("sns", endpoint_url=endpoint_url, region=region), settings),
        clock=clock or SystemClock(),
    )


def _looked_up(
    settings: Settings, queues: SqsJobQueues, shared_url: str
) -> Callable[[], list[QueueRef]]:
    """The fixed queues' URLs, asked of SQS on first use (the admin path only) and kept."""
    found: dict[str, str] = {SHARED_QUEUE.logical: shared_url}
    lock = threading.Lock()

    def refs() -> list[QueueRef]:
        with lock:
            for queue in QUEUES:
                if queue.logical not in found:
                    try:
                        found[queue.logical] = queues.queue_url(queue.name(settings))
                    except StorageError:
                        continue  # not provisioned here; listed once it exists
            return [
                QueueRef(queue.name(settings), _KINDS[queue.logical], found[queue.logical])
                for queue in QUEUES
                if queue.logical in found
            ]

    return refs


# -- memory -----------------------------------------------------------------------------------


@dataclass
class MemoryWorld:
    """The in-memory state behind a memory_api, for tests to arrange and inspect."""

    settings: Settings
    clock: FakeClock
    stores: Stores
    queues: MemoryQueues
    objects: MemoryObjects
    metrics: RecordedMetrics
    idempotency: MemoryPersistenceLayer
    shared_url: str
    events: MemoryJobEvents


def memory_api(
    settings: Settings, clock: FakeClock | None = None
) -> tuple[HttpApi, KeyAuthorizer, MemoryWorld]:
    """The API and the authorizer on in-memory stores, queues and objects."""
    from comfyfleet.store.memory import memory_stores

    clock = clock or FakeClock()
    stores = memory_stores(settings)
    world = MemoryWorld(
        settings=settings,
        clock=clock,
        stores=stores,
        queues=MemoryQueues(clock.now),
        objects=MemoryObjects(clock),
        metrics=RecordedMetrics(),
        idempotency=MemoryPersistenceLayer(),
        shared_url=f"memory://{SHARED_QUEUE.name(settings)}",
        events=MemoryJobEvents(),
    )
    fixed = [
        QueueRef(q.name(settings), _KINDS[q.logical], f"memory://{q.name(settings)}")
        for q in QUEUES
    ]
    api = build_api(
        settings=settings,
        stores=stores,
        queues=world.queues,
        shared_url=world.shared_url,
        objects=world.objects,
        queue_stats=MemoryQueueInspector(world.queues, clock.now),
        fixed_queues=lambda: fixed,
        idempotency=world.idempotency,
        metrics=world.metrics,
        events=world.events,
        clock=clock,
    )
    return api, KeyAuthorizer(stores.keys, stores.accounts, settings), world
