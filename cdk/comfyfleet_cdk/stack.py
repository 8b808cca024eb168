"""The one stack: Data, Queues, Fleet, Functions, Api and Observability, composed."""

from __future__ import annotations

from typing import Any

from aws_cdk import App, CfnOutput, Environment, Stack, Validations
from cdk_nag import AwsSolutionsChecks
from constructs import Construct

from comfyfleet_cdk.api import Api
from comfyfleet_cdk.config import CONTEXT_KEYS, RETIRED_KEYS, DeploymentConfig, read_config
from comfyfleet_cdk.data import Data
from comfyfleet_cdk.fleet import Fleet
from comfyfleet_cdk.functions import Functions
from comfyfleet_cdk.nag import acknowledge
from comfyfleet_cdk.observability import Observability
from comfyfleet_cdk.queues import Queues


class ComfyFleetStack(Stack):
    """A whole comfyfleet deployment."""

    def __init__(self, scope: Construct, id: str, *, config: DeploymentConfig) -> None:
        super().__init__(
            scope,
            id,
            env=Environment(account=config.account, region=config.region),
            description=f"comfyfleet ({config.stage}): ComfyUI workflows on a GPU fleet",
        )
        self.config = config
        self.data = Data(self, "Data", config=config)
        self.queues = Queues(self, "Queues", config=config)
        self.fleet = Fleet(self, "Fleet", config=config, data=self.data, queues=self.queues)
        self.functions = Functions(
            self,
            "Functions",
            config=config,
            data=self.data,
            queues=self.queues,
            fleet=self.fleet.asg,
            drain_grace_seconds=config.settings.drain_grace_seconds,
        )
        built = self.functions.built
        self.api: Api | None = None
        if "api" in built and "authorizer" in built:
            self.api = Api(
                self,
                "Api",
                config=config,
                handler=built["api"].alias,
                authorizer=built["authorizer"].alias,
            )
        self.observability = Observability(
            self,
            "Observability",
            config=config,
            queues=self.queues,
            rest_api=self.api.rest_api if self.api else None,
            functions={name: b.function for name, b in built.items()},
            fleet=self.fleet.asg,
        )
        self._outputs()
        acknowledge(self)

    def _outputs(self) -> None:
        """Stable output names, read by the CLI and the tests."""
        values: dict[str, Any] = {
            "SharedQueueUrl": self.queues.shared.queue_url,
            "EventsTopicArn": self.queues.events.topic_arn,
            "AlarmTopicArn": self.observability.alarm_topic.topic_arn,
            "ModelBucket": self.data.models.bucket_name,
            "OutputBucket": self.data.outputs.bucket_name,
            "DashboardName": self.observability.dashboard.dashboard_name,
            "FleetGroupName": self.fleet.asg.auto_scaling_group_name,
        }
        if self.api:
            values["ApiUrl"] = self.api.rest_api.url
        if self.data.distribution:
            values["OutputsCdnDomain"] = self.data.distribution.distribution_domain_name
        for name, value in values.items():
            CfnOutput(self, name, value=value).override_logical_id(name)


def build_app(context: dict[str, Any] | None = None, *, outdir: str | None = None) -> App:
    """The CDK app with the stack and cdk-nag's AwsSolutions checks (a failed check fails
    the synth). ``context``: cdk.json's and cdk.context.json's values, when run without the
    ``cdk`` command, which passes them itself."""
    app = App(context=context, outdir=outdir) if context is not None else App(outdir=outdir)
    config = read_config(_context_of(app))
    ComfyFleetStack(app, config.stack_name, config=config)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app


def _context_of(app: App) -> dict[str, Any]:
    """The context values the config reads (tryGetContext, key by key)."""
    return {
        key: value
        for key in (*CONTEXT_KEYS, *RETIRED_KEYS)
        if (value := app.node.try_get_context(key)) is not None
    }
