"""Least-privilege IAM statements on the data plane: named actions, named resources.

No statement here grants a ``*`` action. Where a resource must be a pattern (node queues
are created at run time, objects are many), the grant acknowledges cdk-nag's wildcard
finding on the spot, with the reason; nothing else is acknowledged for IAM.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from aws_cdk import Acknowledgment, ArnFormat, Stack, Token, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs

from comfyfleet import resources
from comfyfleet.observability import NAMESPACE
from comfyfleet.settings import Settings

# Transactions need the per-item action of each part (ConditionCheckItem for checks).
TABLE_READ = ("dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query")
TABLE_WRITE = (
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:ConditionCheckItem",
)
TABLE_SCAN = ("dynamodb:Scan",)
QUEUE_SEND = ("sqs:SendMessage", "sqs:GetQueueUrl", "sqs:GetQueueAttributes")
QUEUE_CONSUME = (
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueUrl",
    "sqs:GetQueueAttributes",
)
NODE_QUEUE_MANAGE = ("sqs:CreateQueue", "sqs:SetQueueAttributes", "sqs:TagQueue")
NODE_QUEUE_DELETE = ("sqs:DeleteQueue",)
OBJECT_READ = ("s3:GetObject",)
OBJECT_WRITE = ("s3:PutObject", "s3:AbortMultipartUpload")

QUEUE_PATTERN_REASON = (
    "Node queues are created at run time by the agents (<prefix>-node-<id>.fifo), so queues "
    "are granted by this deployment's name prefix, never beyond it"
)
OBJECT_PATTERN_REASON = (
    "Objects are written and read under fixed key prefixes of this deployment's own bucket "
    "(models/, outputs/, previews/), one object per model or output"
)
UNSCOPED_REASON = (
    "Actions that accept no resource scope: X-Ray trace upload (active tracing), CloudWatch "
    "GetMetricData (queue depths) and PutMetricData (held to the ComfyFleet namespace by a "
    "condition)"
)


def acknowledge(role: iam.Role, finding: str, reason: str) -> None:
    """Acknowledge one cdk-nag AwsSolutions-IAM5 finding on ``role``, with its reason."""
    reasons: dict[str, list[str]] = role.__dict__.setdefault("_nag_reasons", {})
    given = reasons.setdefault(finding, [])
    if reason not in given:
        given.append(reason)
    Validations.of(role).acknowledge(
        Acknowledgment(id=f"AwsSolutions-IAM5[{finding}]", reason="; ".join(given))
    )


def nag_text(stack: Stack, value: Any) -> str:
    """How cdk-nag prints a resolved ARN: Ref → <Id>, GetAtt → <Id.Attr>, joins flattened."""
    resolved = stack.resolve(value) if Token.is_unresolved(value) else value
    if isinstance(resolved, str):
        return resolved
    if isinstance(resolved, dict):
        if "Ref" in resolved:
            return f"<{resolved['Ref']}>"
        if "Fn::GetAtt" in resolved:
            return f"<{'.'.join(resolved['Fn::GetAtt'])}>"
        if "Fn::Join" in resolved:
            separator, parts = resolved["Fn::Join"]
            return str(separator).join(nag_text(stack, part) for part in parts)
    raise ValueError(f"cannot render {resolved!r} as cdk-nag does")


def _statement(
    role: iam.Role, actions: Sequence[str], arns: Sequence[str], reason: str | None, **extra: Any
) -> None:
    role.add_to_principal_policy(
        iam.PolicyStatement(actions=list(actions), resources=list(arns), **extra)
    )
    stack = Stack.of(role)
    for arn in arns:
        text = nag_text(stack, arn)
        if "*" in text and reason:
            acknowledge(role, f"Resource::{text}", reason)


def table_access(
    role: iam.Role,
    tables: Iterable[tuple[resources.Table, Any]],
    actions: Sequence[str],
) -> None:
    """``actions`` on the tables (definition, CDK table) and, for reads, their named indexes."""
    arns: list[str] = []
    for definition, table in tables:
        arns.append(table.table_arn)
        if "dynamodb:Query" in actions or "dynamodb:Scan" in actions:
            arns += [f"{table.table_arn}/index/{index.name}" for index in definition.indexes]
    _statement(role, actions, arns, None)


def queue_arn(stack: Stack, pattern: str) -> str:
    return stack.format_arn(service="sqs", resource=pattern)


def queues_by_prefix(stack: Stack, settings: Settings, node_only: bool = False) -> str:
    """The ARN pattern of the deployment's queues (or of its node queues only)."""
    return queue_arn(stack, f"{settings.prefix}-node-*" if node_only else f"{settings.prefix}-*")


def queue_access(role: iam.Role, arns: Sequence[str], actions: Sequence[str]) -> None:
    _statement(role, actions, arns, QUEUE_PATTERN_REASON)


def exact_queue_access(role: iam.Role, queue: sqs.IQueue, actions: Sequence[str]) -> None:
    _statement(role, actions, [queue.queue_arn], None)


def object_access(
    role: iam.Role, bucket: s3.IBucket, patterns: Sequence[str], actions: Sequence[str]
) -> None:
    """``actions`` on the objects of ``bucket`` matching the key patterns."""
    _statement(role, actions, [bucket.arn_for_objects(p) for p in patterns], OBJECT_PATTERN_REASON)


def bucket_listing(role: iam.Role, bucket: s3.IBucket, prefix: str) -> None:
    """ListBucket under ``prefix``: without it a missing object reads as 403, not 404."""
    _statement(
        role,
        ["s3:ListBucket"],
        [bucket.bucket_arn],
        None,
        conditions={"StringLike": {"s3:prefix": [f"{prefix}*"]}},
    )


def topic_publish(role: iam.Role, topic: sns.ITopic) -> None:
    """Publish to an encrypted topic: sns:Publish and the key's data-key actions."""
    topic.grant_publish(role)
    acknowledge(
        role,
        "Action::kms:GenerateDataKey*",
        "CDK's grant to publish to a KMS-encrypted topic: GenerateDataKey* on that one key",
    )


def unscoped(role: iam.Role, actions: Sequence[str], **extra: Any) -> None:
    """Actions that take no resource scope (``Resource: *``); see UNSCOPED_REASON."""
    _statement(role, actions, ["*"], UNSCOPED_REASON, **extra)


def metric_publish(role: iam.Role) -> None:
    """PutMetricData, held to comfyfleet's namespace (the action has no resource scope)."""
    unscoped(
        role,
        ["cloudwatch:PutMetricData"],
        conditions={"StringEquals": {"cloudwatch:namespace": NAMESPACE}},
    )


# What the drain function and the agents may do to their Auto Scaling group, and no other.
GROUP_HOOKS = ("autoscaling:CompleteLifecycleAction", "autoscaling:RecordLifecycleActionHeartbeat")
GROUP_PROTECTION = ("autoscaling:SetInstanceProtection",)


def group_access(role: iam.Role, group_name: str, actions: Sequence[str]) -> None:
    """``actions`` on the fleet's Auto Scaling group, named by its name."""
    stack = Stack.of(role)
    group_arn = stack.format_arn(
        service="autoscaling",
        resource="autoScalingGroup",
        resource_name=f"*:autoScalingGroupName/{group_name}",
        arn_format=ArnFormat.COLON_RESOURCE_NAME,
    )
    _statement(
        role,
        actions,
        [group_arn],
        "An auto scaling group's ARN holds a generated id; the grant names the fleet's group "
        "by its name and leaves only that id open",
    )
