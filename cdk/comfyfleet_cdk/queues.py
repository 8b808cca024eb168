"""Queues: the shared FIFO ring queue and the webhooks queue with their DLQs (from
comfyfleet.resources), the job-events topic and its subscription; all encrypted.

Node queues are not here: each agent creates its own (``<prefix>-node-<id>.fifo``) at start.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from comfyfleet import resources
from comfyfleet.settings import Settings
from comfyfleet_cdk.config import DeploymentConfig


@dataclass(frozen=True)
class QueueProps:
    """CDK properties of a queue, read off the SQS attributes provision() also uses."""

    visibility_timeout: Duration
    retention_period: Duration
    fifo: bool | None
    content_based_deduplication: bool | None
    deduplication_scope: sqs.DeduplicationScope | None = None
    fifo_throughput_limit: sqs.FifoThroughputLimit | None = None


def queue_props(definition: resources.Queue) -> QueueProps:
    attributes = resources.queue_attributes(definition)
    fifo = attributes.get("FifoQueue") == "true"
    return QueueProps(
        visibility_timeout=Duration.seconds(int(attributes["VisibilityTimeout"])),
        retention_period=Duration.seconds(int(attributes["MessageRetentionPeriod"])),
        fifo=True if fifo else None,
        content_based_deduplication=(
            attributes["ContentBasedDeduplication"] == "true" if fifo else None
        ),
        deduplication_scope=_SCOPES.get(attributes.get("DeduplicationScope", "")),
        fifo_throughput_limit=_LIMITS.get(attributes.get("FifoThroughputLimit", "")),
    )


_SCOPES = {
    "messageGroup": sqs.DeduplicationScope.MESSAGE_GROUP,
    "queue": sqs.DeduplicationScope.QUEUE,
}
_LIMITS = {
    "perMessageGroupId": sqs.FifoThroughputLimit.PER_MESSAGE_GROUP_ID,
    "perQueue": sqs.FifoThroughputLimit.PER_QUEUE,
}


class Queues(Construct):
    """Queues by logical name, the events topic and the key that encrypts topics."""

    def __init__(self, scope: Construct, id: str, *, config: DeploymentConfig) -> None:
        super().__init__(scope, id)
        settings = config.settings
        self.topic_key = self._topic_key(settings)
        self.queues = self._queues(settings)
        self.shared = self.queues[resources.SHARED_QUEUE.logical]
        self.shared_dlq = self.queues[resources.SHARED_DLQ.logical]
        self.webhooks = self.queues[resources.WEBHOOKS_QUEUE.logical]
        self.webhooks_dlq = self.queues[resources.WEBHOOKS_DLQ.logical]
        self.dead_letter_queues = {
            name: queue
            for name, queue in self.queues.items()
            if not any(d.logical == name and d.dlq_logical for d in resources.QUEUES)
        }

        self.events = sns.Topic(
            self,
            "JobEvents",
            topic_name=resources.topic_name(settings),
            master_key=self.topic_key,
            enforce_ssl=True,
        )
        self.events.add_subscription(
            subscriptions.SqsSubscription(self.webhooks, raw_message_delivery=True)
        )

    def _topic_key(self, settings: Settings) -> kms.Key:
        # SNS encrypts only with KMS; one customer key for the events and alarm topics, so
        # CloudWatch (alarms) and SNS may use it where AWS's own key would refuse them.
        key = kms.Key(
            self,
            "TopicKey",
            description=f"{settings.prefix}: job-events and alarm topics",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AlarmsPublish",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],  # a key policy's resource is the key itself
            )
        )
        return key

    def _queues(self, settings: Settings) -> dict[str, sqs.Queue]:
        """Every queue of comfyfleet.resources by logical name, each wired to its DLQ."""
        queues: dict[str, sqs.Queue] = {}
        for definition in resources.QUEUES:  # DLQs first, as provision() creates them
            dead_letter = None
            if definition.dlq_logical:
                dead_letter = sqs.DeadLetterQueue(
                    queue=queues[definition.dlq_logical],
                    max_receive_count=definition.max_receives_for(settings),
                )
            props = queue_props(definition)
            queues[definition.logical] = sqs.Queue(
                self,
                "".join(part.title() for part in definition.logical.split("-")) + "Queue",
                queue_name=definition.name(settings),
                encryption=sqs.QueueEncryption.SQS_MANAGED,
                enforce_ssl=True,
                dead_letter_queue=dead_letter,
                removal_policy=RemovalPolicy.DESTROY,
                visibility_timeout=props.visibility_timeout,
                retention_period=props.retention_period,
                fifo=props.fifo,
                content_based_deduplication=props.content_based_deduplication,
                deduplication_scope=props.deduplication_scope,
                fifo_throughput_limit=props.fifo_throughput_limit,
            )
        return queues
