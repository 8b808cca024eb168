"""Data and Queues: what comfyfleet.resources defines is what the template holds."""

from __future__ import annotations

import json

from aws_cdk.assertions import Match

from comfyfleet import resources
from tests.infra.conftest import Synthesised, logical_id


def _table(synthesised: Synthesised, definition: resources.Table) -> dict:
    name = definition.name(synthesised.stack.config.settings)
    tables = synthesised.resources("AWS::DynamoDB::GlobalTable")
    found = [t["Properties"] for t in tables.values() if t["Properties"]["TableName"] == name]
    assert len(found) == 1, f"no table {name}"
    return found[0]


def test_every_shared_table_definition_is_a_table_with_its_keys_indexes_and_ttl(
    synthesised: Synthesised,
) -> None:
    # given the shared definitions, when synthesised, then each is an on-demand table as defined
    assert len(synthesised.resources("AWS::DynamoDB::GlobalTable")) == len(resources.TABLES)
    for definition in resources.TABLES:
        table = _table(synthesised, definition)
        assert table["BillingMode"] == "PAY_PER_REQUEST"
        keys = {k["AttributeName"]: k["KeyType"] for k in table["KeySchema"]}
        expected = {definition.hash_key.name: "HASH"}
        if definition.range_key:
            expected[definition.range_key.name] = "RANGE"
        assert keys == expected
        indexes = {i["IndexName"]: i for i in table.get("GlobalSecondaryIndexes", [])}
        assert set(indexes) == {index.name for index in definition.indexes}
        for index in definition.indexes:
            assert indexes[index.name]["Projection"]["ProjectionType"] == index.projection
            if index.include:
                assert sorted(indexes[index.name]["Projection"]["NonKeyAttributes"]) == sorted(
                    index.include
                )
        ttl = table.get("TimeToLiveSpecification")
        if definition.ttl_attribute:
            assert ttl == {"AttributeName": definition.ttl_attribute, "Enabled": True}
        else:
            assert ttl is None
        assert table["SSESpecification"]["SSEEnabled"] is True


def test_jobs_and_api_keys_have_point_in_time_recovery(synthesised: Synthesised) -> None:
    for definition in (resources.JOBS, resources.API_KEYS):
        replica = _table(synthesised, definition)["Replicas"][0]
        assert replica["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
        assert replica["DeletionProtectionEnabled"] is True
    replica = _table(synthesised, resources.NODES)["Replicas"][0]
    assert not replica.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled")


def _queue(synthesised: Synthesised, definition: resources.Queue) -> dict:
    name = definition.name(synthesised.stack.config.settings)
    found = [
        q["Properties"]
        for q in synthesised.resources("AWS::SQS::Queue").values()
        if q["Properties"]["QueueName"] == name
    ]
    assert len(found) == 1, f"no queue {name}"
    return found[0]


def test_shared_queue_is_fifo_without_content_dedup_and_redrives_to_its_dlq(
    synthesised: Synthesised,
) -> None:
    shared = _queue(synthesised, resources.SHARED_QUEUE)
    assert shared["FifoQueue"] is True
    assert shared["ContentBasedDeduplication"] is False
    # High-throughput FIFO: per-account limits, not 300 calls/s for the whole fleet.
    assert shared["DeduplicationScope"] == "messageGroup"
    assert shared["FifoThroughputLimit"] == "perMessageGroupId"
    assert shared["VisibilityTimeout"] == resources.QUEUE_VISIBILITY_SECONDS
    assert shared["RedrivePolicy"] == {
        "deadLetterTargetArn": {
            "Fn::GetAtt": [logical_id(synthesised, synthesised.stack.queues.shared_dlq), "Arn"]
        },
        "maxReceiveCount": resources.RING_MAX_RECEIVES,
    }
    dlq = _queue(synthesised, resources.SHARED_DLQ)
    assert dlq["FifoQueue"] is True
    assert dlq["DeduplicationScope"] == "messageGroup"
    assert dlq["FifoThroughputLimit"] == "perMessageGroupId"


def test_webhooks_queue_redrives_after_the_retry_schedules_attempts(
    synthesised: Synthesised,
) -> None:
    webhooks = _queue(synthesised, resources.WEBHOOKS_QUEUE)
    settings = synthesised.stack.config.settings
    # The first attempt and one per retry of the schedule: 8 by default.
    assert webhooks["RedrivePolicy"]["maxReceiveCount"] == settings.webhook_attempts == 8


def test_webhooks_queue_is_a_standard_queue_without_fifo_attributes(
    synthesised: Synthesised,
) -> None:
    webhooks = _queue(synthesised, resources.WEBHOOKS_QUEUE)
    for attribute in (
        "FifoQueue",
        "ContentBasedDeduplication",
        "DeduplicationScope",
        "FifoThroughputLimit",
    ):
        assert attribute not in webhooks
    assert "FifoQueue" not in _queue(synthesised, resources.WEBHOOKS_DLQ)


def test_every_queue_is_encrypted_and_refuses_plain_http(synthesised: Synthesised) -> None:
    for definition in resources.QUEUES:
        assert _queue(synthesised, definition)["SqsManagedSseEnabled"] is True
    policies = synthesised.resources("AWS::SQS::QueuePolicy")
    denied = [
        p
        for p in policies.values()
        for s in p["Properties"]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    ]
    assert len(denied) == len(resources.QUEUES)


def test_job_events_topic_is_encrypted_and_feeds_the_webhooks_queue_raw(
    synthesised: Synthesised,
) -> None:
    queues = synthesised.stack.queues
    synthesised.template.has_resource_properties(
        "AWS::SNS::Topic",
        {
            "TopicName": resources.topic_name(synthesised.stack.config.settings),
            "KmsMasterKeyId": Match.any_value(),
        },
    )
    synthesised.template.has_resource_properties(
        "AWS::SNS::Subscription",
        {
            "Protocol": "sqs",
            "RawMessageDelivery": True,
            "TopicArn": {"Ref": logical_id(synthesised, queues.events)},
            "Endpoint": {"Fn::GetAtt": [logical_id(synthesised, queues.webhooks), "Arn"]},
        },
    )
    synthesised.template.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})


def _bucket(synthesised: Synthesised, name: str) -> tuple[str, dict]:
    for logical, bucket in synthesised.resources("AWS::S3::Bucket").items():
        if bucket["Properties"].get("BucketName") == name:
            return logical, bucket["Properties"]
    raise AssertionError(f"no bucket {name}")


def test_buckets_are_encrypted_private_and_tls_only(synthesised: Synthesised) -> None:
    settings = synthesised.stack.config.settings
    policies = synthesised.resources("AWS::S3::BucketPolicy")
    for name in (resources.model_bucket(settings), resources.output_bucket(settings)):
        logical, bucket = _bucket(synthesised, name)
        assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
            "ServerSideEncryptionByDefault"
        ] == {"SSEAlgorithm": "AES256"}
        assert bucket["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        statements = [
            s
            for p in policies.values()
            if p["Properties"]["Bucket"] == {"Ref": logical}
            for s in p["Properties"]["PolicyDocument"]["Statement"]
        ]
        assert any(
            s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
            for s in statements
        ), f"{name} accepts plain HTTP"


def test_outputs_and_previews_expire_models_do_not(synthesised: Synthesised) -> None:
    settings = synthesised.stack.config.settings
    _, outputs = _bucket(synthesised, resources.output_bucket(settings))
    expiring = {
        rule["Prefix"]: rule["ExpirationInDays"]
        for rule in outputs["LifecycleConfiguration"]["Rules"]
        if "ExpirationInDays" in rule
    }
    assert expiring == {"outputs/": settings.history_retention_days, "previews/": 1}
    _, models = _bucket(synthesised, resources.model_bucket(settings))
    assert all("ExpirationInDays" not in r for r in models["LifecycleConfiguration"]["Rules"])


def test_outputs_cdn_reads_the_bucket_through_origin_access_control(
    synthesised: Synthesised,
) -> None:
    synthesised.template.resource_count_is("AWS::CloudFront::OriginAccessControl", 1)
    distribution = next(iter(synthesised.resources("AWS::CloudFront::Distribution").values()))
    config = distribution["Properties"]["DistributionConfig"]
    assert config["DefaultCacheBehavior"]["ViewerProtocolPolicy"] == "redirect-to-https"
    assert config["Origins"][0]["OriginAccessControlId"]
    settings = synthesised.stack.config.settings
    logical, _ = _bucket(synthesised, resources.output_bucket(settings))
    policy = json.dumps(
        [
            p["Properties"]["PolicyDocument"]
            for p in synthesised.resources("AWS::S3::BucketPolicy").values()
            if p["Properties"]["Bucket"] == {"Ref": logical}
        ]
    )
    assert "cloudfront.amazonaws.com" in policy
