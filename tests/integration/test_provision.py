"""provision() through moto's server (the HTTP path the dev stack uses): every resource,
with the keys, indexes, TTLs, FIFO and redrive settings of the shared definitions."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest

from comfyfleet.aws import client, reset_clients
from comfyfleet.clock import SystemClock
from comfyfleet.dev.local_aws import LocalAws
from comfyfleet.domain import Limits
from comfyfleet.errors import LimitExceeded
from comfyfleet.events import MemoryJobEvents
from comfyfleet.queues import SqsJobQueues
from comfyfleet.resources import JOBS, RING_MAX_RECEIVES, TABLES, provision
from comfyfleet.scheduling import Dispatcher, JobRequest
from comfyfleet.settings import Settings
from comfyfleet.store.dynamo import dynamo_stores

REGION = "us-east-1"
HIGH_THROUGHPUT = ("messageGroup", "perMessageGroupId")


@pytest.fixture(scope="module")
def local_aws() -> Iterator[LocalAws]:
    with LocalAws() as server:
        yield server
    reset_clients()


def test_provision_creates_every_resource_and_is_idempotent(
    local_aws: LocalAws, settings: Settings
) -> None:
    first = provision(settings, endpoint_url=local_aws.url, region=REGION)
    again = provision(settings, endpoint_url=local_aws.url, region=REGION)

    assert first == again
    db = client("dynamodb", endpoint_url=local_aws.url, region=REGION)
    assert {t.name(settings) for t in TABLES} <= set(db.list_tables()["TableNames"])
    jobs = db.describe_table(TableName=JOBS.name(settings))["Table"]
    indexes = {i["IndexName"] for i in jobs["GlobalSecondaryIndexes"]}
    assert {"by_account", "backlog", "pending_events"} <= indexes
    ttl = db.describe_time_to_live(TableName=JOBS.name(settings))["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at"

    sqs = client("sqs", endpoint_url=local_aws.url, region=REGION)
    shared = sqs.get_queue_attributes(QueueUrl=first.queue_urls["shared"], AttributeNames=["All"])[
        "Attributes"
    ]
    assert shared["FifoQueue"] == "true" and shared["ContentBasedDeduplication"] == "false"
    assert json.loads(shared["RedrivePolicy"])["deadLetterTargetArn"].endswith("shared-dlq.fifo")
    assert (shared["DeduplicationScope"], shared["FifoThroughputLimit"]) == HIGH_THROUGHPUT
    webhooks = sqs.get_queue_attributes(
        QueueUrl=first.queue_urls["webhooks"], AttributeNames=["All"]
    )["Attributes"]
    assert "FifoQueue" not in webhooks and "RedrivePolicy" in webhooks
    redrive = json.loads(webhooks["RedrivePolicy"])
    assert int(redrive["maxReceiveCount"]) == settings.webhook_attempts  # the retry schedule's

    sns = client("sns", endpoint_url=local_aws.url, region=REGION)
    subscriptions = sns.list_subscriptions_by_topic(TopicArn=first.topic_arn)["Subscriptions"]
    assert [s["Protocol"] for s in subscriptions] == ["sqs"]
    s3 = client("s3", endpoint_url=local_aws.url, region=REGION)
    assert set(first.buckets) <= {b["Name"] for b in s3.list_buckets()["Buckets"]}


def test_node_queues_follow_the_naming_rule(local_aws: LocalAws, settings: Settings) -> None:
    provision(settings, endpoint_url=local_aws.url, region=REGION)
    queues = SqsJobQueues(client("sqs", endpoint_url=local_aws.url, region=REGION))

    url = queues.create_node_queue(settings, "ip-10-0-0-1.ec2.internal")

    assert url.endswith("/comfyfleet-node-ip-10-0-0-1-ec2-internal.fifo")
    assert queues.create_node_queue(settings, "ip-10-0-0-1.ec2.internal") == url


def test_a_node_queue_is_a_high_throughput_fifo_queue_like_the_shared_one(
    local_aws: LocalAws, settings: Settings
) -> None:
    provisioned = provision(settings, endpoint_url=local_aws.url, region=REGION)
    sqs = client("sqs", endpoint_url=local_aws.url, region=REGION)

    url = SqsJobQueues(sqs).create_node_queue(settings, "i-0123456789abcdef0")

    node = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    shared = sqs.get_queue_attributes(
        QueueUrl=provisioned.queue_urls["shared"], AttributeNames=["All"]
    )["Attributes"]
    assert node["FifoQueue"] == "true" and node["ContentBasedDeduplication"] == "false"
    # Limits per message group (each job has its own), not 300 calls a second per queue.
    assert (node["DeduplicationScope"], node["FifoThroughputLimit"]) == HIGH_THROUGHPUT
    redrive = json.loads(node["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"].endswith("shared-dlq.fifo")
    assert int(redrive["maxReceiveCount"]) == RING_MAX_RECEIVES
    fifo = ("FifoQueue", "ContentBasedDeduplication", "DeduplicationScope", "FifoThroughputLimit")
    assert {name: node[name] for name in fifo} == {name: shared[name] for name in fifo}


def test_concurrent_submits_through_the_server_respect_the_limit(
    local_aws: LocalAws, settings: Settings
) -> None:
    provisioned = provision(settings, endpoint_url=local_aws.url, region=REGION)
    stores = dynamo_stores(settings, endpoint_url=local_aws.url, region=REGION)
    queues = SqsJobQueues(client("sqs", endpoint_url=local_aws.url, region=REGION))
    dispatcher = Dispatcher(
        stores,
        queues,
        settings,
        SystemClock(),
        shared_url=provisioned.queue_urls["shared"],
        events=MemoryJobEvents(),
    )
    account = stores.accounts.create(tier="free", name="", now=SystemClock().now())
    limits = Limits(requests_per_minute=6, concurrency=2, queue_depth=50, ring_slots=2)
    outcomes: list[object] = []
    barrier = threading.Barrier(20)

    def submit() -> None:
        barrier.wait()
        try:
            outcomes.append(
                dispatcher.submit(account.account_id, "free", limits, JobRequest({"1": {}}, []))
            )
        except LimitExceeded as refused:
            outcomes.append(refused)

    threads = [threading.Thread(target=submit) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(not isinstance(o, LimitExceeded) for o in outcomes) == 6
    assert len(outcomes) == 20
