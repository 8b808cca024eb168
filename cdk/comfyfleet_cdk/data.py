"""Data: the DynamoDB tables (from comfyfleet.resources, defined once), the model and output
buckets, and the CDN in front of the outputs."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudfront_origins as origins
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_s3 as s3
from constructs import Construct

from comfyfleet import resources
from comfyfleet_cdk.config import DeploymentConfig

# Preview frames only matter while a job runs.
PREVIEW_RETENTION_DAYS = 1


def _folder(key: str) -> str:
    """The top folder of an object key, for a lifecycle rule's prefix."""
    return key.split("/", 1)[0] + "/"


# Read off the key functions (defined once in comfyfleet.resources), not restated.
OUTPUTS_PREFIX = _folder(resources.output_key("account", "job", "file"))
PREVIEWS_PREFIX = _folder(resources.preview_key("job", "png"))
_KEY_TYPES = {
    "S": dynamodb.AttributeType.STRING,
    "N": dynamodb.AttributeType.NUMBER,
    "B": dynamodb.AttributeType.BINARY,
}
_PROJECTIONS = {
    "ALL": dynamodb.ProjectionType.ALL,
    "KEYS_ONLY": dynamodb.ProjectionType.KEYS_ONLY,
    "INCLUDE": dynamodb.ProjectionType.INCLUDE,
}


def _attribute(attribute: resources.Attribute) -> dynamodb.Attribute:
    return dynamodb.Attribute(name=attribute.name, type=_KEY_TYPES[attribute.type])


def _optional(attribute: resources.Attribute | None) -> dynamodb.Attribute | None:
    return _attribute(attribute) if attribute else None


class Data(Construct):
    """Tables by logical name, the two buckets and (optionally) the outputs distribution."""

    def __init__(self, scope: Construct, id: str, *, config: DeploymentConfig) -> None:
        super().__init__(scope, id)
        settings = config.settings
        self.tables: dict[str, dynamodb.TableV2] = {}
        for definition in resources.TABLES:
            self.tables[definition.logical] = self._table(definition, config)

        # S3 server access logs of both buckets (and the CDN's logs) land here.
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(90))],
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.models = self._bucket("Models", resources.model_bucket(settings), [])
        self.outputs = self._bucket(
            "Outputs",
            resources.output_bucket(settings),
            [
                s3.LifecycleRule(
                    id="outputs-expire-with-history",
                    prefix=OUTPUTS_PREFIX,
                    expiration=Duration.days(settings.history_retention_days),
                ),
                s3.LifecycleRule(
                    id="previews-expire",
                    prefix=PREVIEWS_PREFIX,
                    expiration=Duration.days(PREVIEW_RETENTION_DAYS),
                ),
            ],
        )
        self.distribution: cloudfront.Distribution | None = None
        if config.cloudfront:
            self.distribution = cloudfront.Distribution(
                self,
                "OutputsCdn",
                comment=f"{settings.prefix} job outputs",
                default_behavior=cloudfront.BehaviorOptions(
                    origin=origins.S3BucketOrigin.with_origin_access_control(self.outputs),
                    viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.REDIRECT_TO_HTTPS,
                    allowed_methods=cloudfront.AllowedMethods.ALLOW_GET_HEAD,
                    cache_policy=cloudfront.CachePolicy.CACHING_OPTIMIZED,
                ),
                http_version=cloudfront.HttpVersion.HTTP2_AND_3,
                price_class=cloudfront.PriceClass.PRICE_CLASS_100,
                enable_logging=True,
                log_bucket=self.access_logs,
                log_file_prefix="cloudfront/",
            )

    def _table(self, definition: resources.Table, config: DeploymentConfig) -> dynamodb.TableV2:
        indexes = [
            dynamodb.GlobalSecondaryIndexPropsV2(
                index_name=index.name,
                partition_key=_attribute(index.hash_key),
                sort_key=_optional(index.range_key),
                projection_type=_PROJECTIONS[index.projection],
                non_key_attributes=list(index.include) or None,
            )
            for index in definition.indexes
        ]
        return dynamodb.TableV2(
            self,
            "".join(part.title() for part in definition.logical.split("-")) + "Table",
            table_name=definition.name(config.settings),
            partition_key=_attribute(definition.hash_key),
            sort_key=_optional(definition.range_key),
            billing=dynamodb.Billing.on_demand(),
            global_secondary_indexes=indexes or None,
            time_to_live_attribute=definition.ttl_attribute,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=definition.point_in_time_recovery
            ),
            encryption=dynamodb.TableEncryptionV2.aws_managed_key(),
            # The tables worth point-in-time recovery (jobs, keys) are the ones a stray
            # delete must not take either.
            deletion_protection=definition.point_in_time_recovery,
            removal_policy=RemovalPolicy.RETAIN,
        )

    def _bucket(self, id: str, name: str, rules: list[s3.LifecycleRule]) -> s3.Bucket:
        return s3.Bucket(
            self,
            id,
            bucket_name=name,
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=False,
            lifecycle_rules=[
                *rules,
                s3.LifecycleRule(
                    id="abort-incomplete-uploads",
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                ),
            ],
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix=f"s3/{name}/",
            removal_policy=RemovalPolicy.RETAIN,
        )
