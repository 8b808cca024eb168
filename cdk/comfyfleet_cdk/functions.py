"""Functions: one small factory for every Lambda function, and the five functions wired to
their triggers with one least-privilege role each.

Each function is ``functions/<name>/app.handler`` on Python 3.12, arm64, with the
``layers/common`` layer (the comfyfleet package) and the dependencies layer; its settings
are its ``COMFYFLEET_*`` environment. Triggers call the ``live`` alias: SnapStart only
applies to published versions.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Annotations, Duration, RemovalPolicy, Stack
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from constructs import Construct

from comfyfleet import resources
from comfyfleet.observability import NAMESPACE
from comfyfleet_cdk import access
from comfyfleet_cdk.bundling import dependencies_layer_code
from comfyfleet_cdk.config import ROOT, DeploymentConfig, settings_environment
from comfyfleet_cdk.data import Data
from comfyfleet_cdk.queues import Queues

FUNCTIONS_DIR = ROOT / "functions"
COMMON_LAYER_DIR = ROOT / "layers" / "common"
RUNTIME = lambda_.Runtime.PYTHON_3_12
ARCHITECTURE = lambda_.Architecture.ARM_64
ALIAS = "live"
# Events the EventBridge rule of the lifecycle function matches (the ASG's hook emits them).
TERMINATE_ACTION = "EC2 Instance-terminate Lifecycle Action"
REAPER_SCHEDULE = "rate(1 minute)"
_ASSET_EXCLUDE = ["**/__pycache__", "**/*.pyc", "README.md", "tests"]


def service_name(function: str) -> str:
    """The Powertools ``service`` of a function (its metrics' dimension): comfyfleet-<name>."""
    return f"comfyfleet-{function}"


@dataclass(frozen=True)
class Built:
    """A function and the alias its triggers call."""

    function: lambda_.Function
    alias: lambda_.Alias
    role: iam.Role


class FunctionFactory(Construct):
    """Builds functions alike; a folder that does not exist yet is skipped with a warning."""

    def __init__(
        self, scope: Construct, id: str, *, config: DeploymentConfig, environment: dict[str, str]
    ) -> None:
        super().__init__(scope, id)
        self.config = config
        self.environment = environment
        self.common_layer = lambda_.LayerVersion(
            self,
            "CommonLayer",
            description="comfyfleet: the shared domain package",
            code=lambda_.Code.from_asset(str(COMMON_LAYER_DIR), exclude=_ASSET_EXCLUDE),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[ARCHITECTURE],
        )
        self.dependencies_layer = lambda_.LayerVersion(
            self,
            "DependenciesLayer",
            description="comfyfleet: third-party dependencies (Powertools, pydantic, ...)",
            code=dependencies_layer_code(),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[ARCHITECTURE],
        )

    def build(
        self, name: str, *, description: str, memory_mb: int, timeout: Duration
    ) -> Built | None:
        folder = FUNCTIONS_DIR / name
        if not (folder / "app.py").is_file():
            Annotations.of(self).add_warning_v2(
                f"comfyfleet:missing-function-{name}",
                f"functions/{name}/app.py does not exist: the {name} function is left out",
            )
            return None
        settings = self.config.settings
        role = iam.Role(
            self,
            f"{name.title()}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"{settings.prefix} {name} function",
        )
        log_group = logs.LogGroup(
            self,
            f"{name.title()}Logs",
            log_group_name=f"/aws/lambda/{settings.prefix}-{name}",
            retention=retention(self.config.log_retention_days),
            removal_policy=RemovalPolicy.DESTROY,
        )
        function = lambda_.Function(
            self,
            f"{name.title()}Function",
            function_name=f"{settings.prefix}-{name}",
            description=description,
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            handler="app.handler",
            code=lambda_.Code.from_asset(str(folder), exclude=_ASSET_EXCLUDE),
            layers=[self.common_layer, self.dependencies_layer],
            memory_size=memory_mb,
            timeout=timeout,
            role=role,
            log_group=log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            tracing=lambda_.Tracing.ACTIVE,
            snap_start=lambda_.SnapStartConf.ON_PUBLISHED_VERSIONS,
            environment={
                **self.environment,
                "POWERTOOLS_SERVICE_NAME": service_name(name),
                "POWERTOOLS_METRICS_NAMESPACE": NAMESPACE,
            },
        )
        log_group.grant_write(role)
        # Active tracing adds X-Ray's upload actions, which take no resource scope.
        access.acknowledge(role, "Resource::*", access.UNSCOPED_REASON)
        alias = function.add_alias(ALIAS)
        Annotations.of(function).acknowledge_warning(
            "@aws-cdk/aws-lambda:snapStartRequirePublish",
            f"every deploy publishes a version for the {ALIAS!r} alias, which triggers call",
        )
        return Built(function, alias, role)


_RETENTIONS = (
    (1, logs.RetentionDays.ONE_DAY),
    (3, logs.RetentionDays.THREE_DAYS),
    (7, logs.RetentionDays.ONE_WEEK),
    (14, logs.RetentionDays.TWO_WEEKS),
    (30, logs.RetentionDays.ONE_MONTH),
    (60, logs.RetentionDays.TWO_MONTHS),
    (90, logs.RetentionDays.THREE_MONTHS),
    (180, logs.RetentionDays.SIX_MONTHS),
    (365, logs.RetentionDays.ONE_YEAR),
    (731, logs.RetentionDays.TWO_YEARS),
    (1827, logs.RetentionDays.FIVE_YEARS),
    (3653, logs.RetentionDays.TEN_YEARS),
)


def retention(days: int) -> logs.RetentionDays:
    """The shortest CloudWatch Logs retention of at least ``days``."""
    for limit, member in _RETENTIONS:
        if limit >= days:
            return member
    return _RETENTIONS[-1][1]


class Functions(Construct):
    """api, authorizer, webhooks, reaper and lifecycle, each with what it touches and no more."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: DeploymentConfig,
        data: Data,
        queues: Queues,
        fleet: autoscaling.AutoScalingGroup,
        drain_grace_seconds: int,
    ) -> None:
        super().__init__(scope, id)
        stack = Stack.of(self)
        settings = config.settings
        environment = settings_environment(
            settings,
            {
                "shared_queue_url": queues.shared.queue_url,
                "events_topic_arn": queues.events.topic_arn,
            },
        )
        self.factory = FunctionFactory(self, "Factory", config=config, environment=environment)
        self._tables = data.tables
        self._every_queue = [access.queues_by_prefix(stack, settings)]
        self._node_queues = [access.queues_by_prefix(stack, settings, node_only=True)]
        made = {  # built in this order: each one's grants and trigger right after it
            "api": self._api(data, queues),
            "authorizer": self._authorizer(),
            "webhooks": self._webhooks(queues),
            "reaper": self._reaper(queues),
            "lifecycle": self._lifecycle(queues, fleet, drain_grace_seconds),
        }
        self.built = {name: built for name, built in made.items() if built is not None}

    def _table(
        self, *definitions: resources.Table
    ) -> list[tuple[resources.Table, dynamodb.TableV2]]:
        return [(d, self._tables[d.logical]) for d in definitions]

    def _api(self, data: Data, queues: Queues) -> Built | None:
        api = self.factory.build(
            "api",
            description="comfyfleet HTTP API (REST proxy)",
            memory_mb=1024,
            timeout=Duration.seconds(15),
        )
        if api:
            access.table_access(api.role, self._table(*resources.TABLES), access.TABLE_READ)
            access.table_access(
                api.role,
                self._table(
                    resources.API_KEYS,
                    resources.ACCOUNTS,
                    resources.JOBS,
                    resources.LIMITS,
                    resources.NODES,
                    resources.IDEMPOTENCY,
                    resources.DEPLOYMENTS,
                ),
                access.TABLE_WRITE,
            )
            access.table_access(api.role, self._table(resources.NODES), access.TABLE_SCAN)
            # A deleted deployment's versions go in batches of 25.
            access.table_access(
                api.role, self._table(resources.DEPLOYMENTS), ("dynamodb:BatchWriteItem",)
            )
            access.queue_access(api.role, self._every_queue, access.QUEUE_SEND)
            access.object_access(api.role, data.outputs, ["*"], access.OBJECT_READ)
            access.object_access(  # every environment's node catalogue
                api.role, data.models, [f"{resources.CATALOGUE_PREFIX}*"], access.OBJECT_READ
            )
            access.topic_publish(api.role, queues.events)
            # Queue depths for the admin view; GetMetricData has no resource-level scope.
            access.unscoped(api.role, ["cloudwatch:GetMetricData"])
        return api

    def _authorizer(self) -> Built | None:
        authorizer = self.factory.build(
            "authorizer",
            description="comfyfleet API key authorizer (REQUEST)",
            memory_mb=512,
            timeout=Duration.seconds(10),
        )
        if authorizer:
            access.table_access(
                authorizer.role,
                self._table(resources.API_KEYS, resources.ACCOUNTS),
                ("dynamodb:GetItem",),
            )
        return authorizer

    def _webhooks(self, queues: Queues) -> Built | None:
        visibility = int(resources.queue_attributes(resources.WEBHOOKS_QUEUE)["VisibilityTimeout"])
        webhooks = self.factory.build(
            "webhooks",
            description="comfyfleet webhook delivery (signed, retried)",
            memory_mb=512,
            # Lambda refuses an SQS trigger whose visibility is shorter than the timeout.
            timeout=Duration.seconds(visibility),
        )
        if webhooks:
            access.table_access(
                webhooks.role, self._table(resources.JOBS, resources.ACCOUNTS), access.TABLE_READ
            )
            access.table_access(webhooks.role, self._table(resources.JOBS), access.TABLE_WRITE)
            webhooks.alias.add_event_source(
                sources.SqsEventSource(
                    queues.webhooks,
                    batch_size=5,
                    report_batch_item_failures=True,
                )
            )
            access.exact_queue_access(
                webhooks.role, queues.webhooks, ("sqs:ChangeMessageVisibility",)
            )
        return webhooks

    def _upkeep_access(
        self, role: iam.Role, scanned: list[resources.Table], queues: Queues
    ) -> None:
        """The reaper's and the drain's grants: both run the Dispatcher, and promoting a job
        routes it, which reads the models' sizes."""
        upkeep = self._table(resources.JOBS, resources.NODES, resources.ACCOUNTS, resources.LIMITS)
        access.table_access(role, upkeep, access.TABLE_READ + access.TABLE_WRITE)
        access.table_access(role, self._table(resources.MODELS), access.TABLE_READ)
        access.table_access(role, self._table(*scanned), access.TABLE_SCAN)
        access.queue_access(role, self._every_queue, access.QUEUE_SEND + access.QUEUE_CONSUME)
        access.queue_access(role, self._node_queues, access.NODE_QUEUE_DELETE)
        access.topic_publish(role, queues.events)

    def _reaper(self, queues: Queues) -> Built | None:
        reaper = self.factory.build(
            "reaper",
            description="comfyfleet reaper: offline nodes, expired leases, stuck jobs, DLQs",
            memory_mb=512,
            timeout=Duration.seconds(55),  # under its one-minute schedule
        )
        if reaper:
            # The registry, the jobs' sparse `live` index (leases, unsent ring jobs) and the
            # limits (accounts with a backlog and a free slot) are scanned, each bounded.
            self._upkeep_access(
                reaper.role, [resources.NODES, resources.JOBS, resources.LIMITS], queues
            )
            self.reaper_schedule = events.Rule(
                self,
                "ReaperSchedule",
                description="comfyfleet reaper, every minute",
                schedule=events.Schedule.expression(REAPER_SCHEDULE),
                targets=[targets.LambdaFunction(reaper.alias, retry_attempts=0)],
            )
        return reaper

    def _lifecycle(
        self, queues: Queues, fleet: autoscaling.AutoScalingGroup, drain_grace_seconds: int
    ) -> Built | None:
        lifecycle = self.factory.build(
            "lifecycle",
            description="comfyfleet node drain on the fleet's termination hook",
            memory_mb=256,
            timeout=Duration.seconds(min(900, drain_grace_seconds + 120)),
        )
        if lifecycle:
            # The registry, and the jobs' `live` index for the jobs still running on the node.
            self._upkeep_access(lifecycle.role, [resources.NODES, resources.JOBS], queues)
            self._hook_access(lifecycle.role, fleet)
            self.terminate_rule = events.Rule(
                self,
                "TerminateHook",
                description="comfyfleet: drain a node the fleet is terminating",
                event_pattern=events.EventPattern(
                    source=["aws.autoscaling"],
                    detail_type=[TERMINATE_ACTION],
                    detail={"AutoScalingGroupName": [fleet.auto_scaling_group_name]},
                ),
                targets=[targets.LambdaFunction(lifecycle.alias, retry_attempts=2)],
            )
        return lifecycle

    def _hook_access(self, role: iam.Role, fleet: autoscaling.AutoScalingGroup) -> None:
        """The drain answers the fleet's termination hook: on that one group only."""
        access.group_access(role, fleet.auto_scaling_group_name, access.GROUP_HOOKS)
