"""Every AWS resource of a deployment, defined once: names, keys, indexes, TTLs, queues.

`provision` creates them on any endpoint (moto's server for tests and the dev stack);
the CDK stack reads the same definitions, so the two cannot drift apart.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from botocore.exceptions import ClientError

from comfyfleet.aws import client
from comfyfleet.settings import Settings

KeyType = Literal["S", "N", "B"]

# A message is received again after this long unless its agent extends it (it does, while
# the job runs); a dead agent's job is therefore redelivered within a minute.
QUEUE_VISIBILITY_SECONDS = 60
# Receives before SQS moves a ring message to the DLQ: attempts are capped by the job's own
# counter (max_attempts); this only catches messages that keep failing before any claim.
RING_MAX_RECEIVES = 10
# Webhook attempts are the first and one per step of the retry schedule (the setting
# webhook_retry_schedule, comfyfleet.delivery.retry_delay): the webhooks queue's redrive
# moves an event to its DLQ after exactly that many receives.
# The webhooks function POSTs for up to 30 s per event; AWS asks for a queue visibility of
# six times the function's timeout (one minute) so a slow batch is not received twice.
WEBHOOK_VISIBILITY_SECONDS = 360
MESSAGE_RETENTION_SECONDS = 4 * 24 * 3600
DLQ_RETENTION_SECONDS = 14 * 24 * 3600


@dataclass(frozen=True)
class Attribute:
    name: str
    type: KeyType = "S"


@dataclass(frozen=True)
class Index:
    name: str
    hash_key: Attribute
    range_key: Attribute | None = None
    projection: Literal["ALL", "KEYS_ONLY", "INCLUDE"] = "ALL"
    include: tuple[str, ...] = ()


@dataclass(frozen=True)
class Table:
    logical: str
    hash_key: Attribute
    range_key: Attribute | None = None
    indexes: tuple[Index, ...] = ()
    ttl_attribute: str | None = None
    point_in_time_recovery: bool = False

    def name(self, settings: Settings) -> str:
        return f"{settings.prefix}-{self.logical}"


ACCOUNTS = Table("accounts", Attribute("account_id"))
API_KEYS = Table(
    "api-keys",
    Attribute("key_hash"),
    indexes=(
        Index("by_account", Attribute("account_id"), Attribute("created_at", "N")),
        Index("by_key_id", Attribute("key_id")),
    ),
    point_in_time_recovery=True,
)
JOBS = Table(
    "jobs",
    Attribute("job_id"),
    indexes=(
        # Listing: ULIDs sort by time, so newest first is a reverse key order.
        Index("by_account", Attribute("account_id"), Attribute("job_id")),
        # The backlog: jobs waiting for a ring slot carry backlog_account; sparse.
        Index(
            "backlog",
            Attribute("backlog_account"),
            Attribute("job_id"),
            projection="INCLUDE",
            include=("account_id", "models", "tier"),
        ),
        # Ended jobs whose event is not published yet carry event_pending; sparse and small.
        Index(
            "pending_events",
            Attribute("event_pending"),
            Attribute("completed_at", "N"),
            projection="KEYS_ONLY",
        ),
        # Every job by the day it was created, for the operator's list of all accounts' jobs
        # (newest first, a day's partition at a time); the small fields a list shows only.
        Index(
            "by_day",
            Attribute("created_day"),
            Attribute("job_id"),
            projection="INCLUDE",
            include=(
                "account_id",
                "state",
                "created_at",
                "started_at",
                "completed_at",
                "progress",
                "outputs",
                "error",
                "attempt",
                "cancel_requested",
                "webhook",
                "metadata",
                "deployment",
                "tier",
            ),
        ),
        # Live jobs (in the ring or running) carry live_account; sparse, bounded by the ring
        # slots and concurrency of all accounts: the reaper scans it for lost leases and sends.
        Index(
            "live",
            Attribute("live_account"),
            Attribute("job_id"),
            projection="INCLUDE",
            include=(
                "account_id",
                "state",
                "in_ring",
                "route",
                "node_id",
                "lease_until",
                "ring_at",
                "tier",
            ),
        ),
    ),
    ttl_attribute="expires_at",
    point_in_time_recovery=True,
)
LIMITS = Table("limits", Attribute("account_id"), Attribute("sk"), ttl_attribute="expires_at")
NODES = Table("nodes", Attribute("node_id"))
MODELS = Table("models", Attribute("model_key"))
IDEMPOTENCY = Table("idempotency", Attribute("id"), ttl_attribute="expiration")
# An account's deployments: a head per name (sk "#<name>") and its versions ("<name>#<n>").
DEPLOYMENTS = Table(
    "deployments", Attribute("account_id"), Attribute("sk"), point_in_time_recovery=True
)

TABLES = (ACCOUNTS, API_KEYS, JOBS, LIMITS, NODES, MODELS, IDEMPOTENCY, DEPLOYMENTS)


@dataclass(frozen=True)
class Queue:
    logical: str
    fifo: bool
    dlq_logical: str | None = None
    max_receives: int = RING_MAX_RECEIVES
    attributes: dict[str, str] = field(default_factory=dict)
    receives_per_webhook_schedule: bool = False  # max_receives: the webhook attempts instead

    def name(self, settings: Settings) -> str:
        return f"{settings.prefix}-{self.logical}" + (".fifo" if self.fifo else "")

    def max_receives_for(self, settings: Settings) -> int:
        """Receives of one message before SQS moves it to the DLQ."""
        if self.receives_per_webhook_schedule:
            return settings.webhook_attempts
        return self.max_receives


SHARED_DLQ = Queue("shared-dlq", fifo=True)
SHARED_QUEUE = Queue("shared", fifo=True, dlq_logical="shared-dlq")
WEBHOOKS_DLQ = Queue("webhooks-dlq", fifo=False)
WEBHOOKS_QUEUE = Queue(
    "webhooks",
    fifo=False,
    dlq_logical="webhooks-dlq",
    attributes={"VisibilityTimeout": str(WEBHOOK_VISIBILITY_SECONDS)},
    receives_per_webhook_schedule=True,
)
QUEUES = (SHARED_DLQ, SHARED_QUEUE, WEBHOOKS_DLQ, WEBHOOKS_QUEUE)

JOB_EVENTS_TOPIC = "job-events"
_NODE_QUEUE_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def node_queue_name(settings: Settings, node_id: str) -> str:
    """The FIFO queue of one node: ``<prefix>-node-<id>.fifo`` (id made queue-name safe)."""
    return f"{settings.prefix}-node-{_NODE_QUEUE_UNSAFE.sub('-', node_id)[:56]}.fifo"


def topic_name(settings: Settings) -> str:
    return f"{settings.prefix}-{JOB_EVENTS_TOPIC}"


def model_bucket(settings: Settings) -> str:
    return settings.model_bucket_name


def output_bucket(settings: Settings) -> str:
    return settings.output_bucket_name


def queue_attributes(
    queue: Queue, dlq_arn: str | None = None, max_receives: int | None = None
) -> dict[str, str]:
    """SQS attributes of a queue (and its redrive to ``dlq_arn`` after ``max_receives``,
    by default the queue's own)."""
    attributes = {
        "VisibilityTimeout": str(QUEUE_VISIBILITY_SECONDS),
        "MessageRetentionPeriod": str(
            DLQ_RETENTION_SECONDS if queue.dlq_logical is None else MESSAGE_RETENTION_SECONDS
        ),
        **queue.attributes,
    }
    if queue.fifo:
        attributes["FifoQueue"] = "true"
        # Deduplication is by job id (MessageDeduplicationId), never by content.
        attributes["ContentBasedDeduplication"] = "false"
        # High-throughput FIFO: the limits are per message group (an account), not 300
        # calls a second per queue, which the agents' long polls of the shared queue alone
        # pass beyond ~3,000 nodes (docs/capacity.md, quotas). A job's ids stay in its group.
        attributes["DeduplicationScope"] = "messageGroup"
        attributes["FifoThroughputLimit"] = "perMessageGroupId"
    if dlq_arn is not None:
        attributes["RedrivePolicy"] = json.dumps(
            {
                "deadLetterTargetArn": dlq_arn,
                "maxReceiveCount": str(max_receives or queue.max_receives),
            }
        )
    return attributes


@dataclass(frozen=True)
class Provisioned:
    """What provision made: queue URLs by logical name, the topic ARN, bucket names."""

    queue_urls: dict[str, str]
    topic_arn: str
    buckets: tuple[str, ...]


def provision(settings: Settings, *, endpoint_url: str | None, region: str) -> Provisioned:
    """Create every table, queue, bucket and the topic on ``endpoint_url``; idempotent."""
    dynamodb = client("dynamodb", endpoint_url=endpoint_url, region=region)
    existing = set(dynamodb.list_tables()["TableNames"])
    for table in TABLES:
        if table.name(settings) not in existing:
            _create_table(dynamodb, table, settings)

    sqs = client("sqs", endpoint_url=endpoint_url, region=region)
    urls: dict[str, str] = {}
    arns: dict[str, str] = {}
    for queue in QUEUES:  # DLQs first: their ARNs go into the redrive policies
        dlq_arn = arns[queue.dlq_logical] if queue.dlq_logical else None
        url = sqs.create_queue(
            QueueName=queue.name(settings),
            Attributes=queue_attributes(queue, dlq_arn, queue.max_receives_for(settings)),
        )["QueueUrl"]
        urls[queue.logical] = url
        arns[queue.logical] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]

    sns = client("sns", endpoint_url=endpoint_url, region=region)
    topic_arn = sns.create_topic(Name=topic_name(settings))["TopicArn"]
    sns.subscribe(
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=arns[WEBHOOKS_QUEUE.logical],
        Attributes={"RawMessageDelivery": "true"},
        ReturnSubscriptionArn=True,
    )

    s3 = client("s3", endpoint_url=endpoint_url, region=region)
    buckets = (model_bucket(settings), output_bucket(settings))
    for bucket in buckets:
        try:
            if region == "us-east-1":
                s3.create_bucket(Bucket=bucket)
            else:
                s3.create_bucket(
                    Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region}
                )
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou",):
                raise
    return Provisioned(queue_urls=urls, topic_arn=topic_arn, buckets=buckets)


def _create_table(dynamodb: Any, table: Table, settings: Settings) -> None:
    attributes = {table.hash_key}
    keys = [{"AttributeName": table.hash_key.name, "KeyType": "HASH"}]
    if table.range_key:
        attributes.add(table.range_key)
        keys.append({"AttributeName": table.range_key.name, "KeyType": "RANGE"})
    indexes = []
    for index in table.indexes:
        attributes.add(index.hash_key)
        schema = [{"AttributeName": index.hash_key.name, "KeyType": "HASH"}]
        if index.range_key:
            attributes.add(index.range_key)
            schema.append({"AttributeName": index.range_key.name, "KeyType": "RANGE"})
        projection: dict[str, Any] = {"ProjectionType": index.projection}
        if index.include:
            projection["NonKeyAttributes"] = list(index.include)
        indexes.append({"IndexName": index.name, "KeySchema": schema, "Projection": projection})
    request: dict[str, Any] = {
        "TableName": table.name(settings),
        "KeySchema": keys,
        "AttributeDefinitions": [
            {"AttributeName": a.name, "AttributeType": a.type}
            for a in sorted(attributes, key=lambda a: a.name)
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if indexes:
        request["GlobalSecondaryIndexes"] = indexes
    dynamodb.create_table(**request)
    if table.ttl_attribute:
        dynamodb.update_time_to_live(
            TableName=table.name(settings),
            TimeToLiveSpecification={"Enabled": True, "AttributeName": table.ttl_attribute},
        )


# Objects with fixed keys.
CATALOGUE_PREFIX = "catalogue/"  # in the model bucket: the node catalogues
# The catalogue of the node that started last: the API's fallback while no node is in
# service, and the catalogue of nodes that report no environment (agents from before them).
CATALOGUE_KEY = f"{CATALOGUE_PREFIX}object_info.json"
MODEL_MIRROR_PREFIX = "models/"  # models/<model key> in the model bucket


def catalogue_key(environment_id: str) -> str:
    """Where the nodes of an environment publish ComfyUI's ``/object_info``."""
    if not environment_id:
        return CATALOGUE_KEY
    return f"{CATALOGUE_PREFIX}{environment_id}/object_info.json"


def output_key(account_id: str, job_id: str, filename: str) -> str:
    """Where an output file of a job lives in the output bucket."""
    return f"outputs/{account_id}/{job_id}/{filename}"


def preview_key(job_id: str, extension: str) -> str:
    """The latest preview frame of a running job, in the output bucket."""
    return f"previews/{job_id}/latest.{extension}"
