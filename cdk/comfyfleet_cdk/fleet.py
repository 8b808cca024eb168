"""Fleet: the GPU nodes. A VPC, a launch template (IMDSv2 only, encrypted disks), the
instance role (its queues, buckets and tables; nothing broader), user data that runs
ComfyUI and the agent as systemd services (one of each per GPU), and the auto scaling
group: optional spot mix, a launch hook held until a node's boot is done, a termination hook
that lets a node drain, an optional warm pool and baked image (NodeImage), the scaling
policies (comfyfleet_cdk.scaling), the environment id as an instance tag."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from aws_cdk import Duration, Stack, Tags
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from comfyfleet import resources
from comfyfleet_cdk import access
from comfyfleet_cdk.bootstrap import render_user_data
from comfyfleet_cdk.config import ROOT, DeploymentConfig, settings_environment
from comfyfleet_cdk.data import OUTPUTS_PREFIX, PREVIEWS_PREFIX, Data
from comfyfleet_cdk.functions import retention
from comfyfleet_cdk.node_environment import ENVIRONMENT_FILE, ENVIRONMENT_TAG
from comfyfleet_cdk.node_image import NodeImage
from comfyfleet_cdk.queues import Queues
from comfyfleet_cdk.scaling import FleetScaling
from gpu_agent.settings import AgentSettings

# Extra time the termination hook and systemd give beyond the agent's drain grace.
HOOK_MARGIN_SECONDS = 120
# Launch to taking jobs (target tracking's instance warmup): the bootstrap from scratch
# installs ComfyUI and CUDA PyTorch; a baked image boots and starts ComfyUI (docs/capacity.md).
WARMUP_BOOTSTRAP_SECONDS = 600
WARMUP_BAKED_SECONDS = 180
# How long the launch hook waits for a boot to say it is done, before the node is abandoned
# (terminated and replaced): a bootstrap that hangs must not hold a paid GPU for ever.
LAUNCH_TIMEOUT_BOOTSTRAP_SECONDS = 2700
LAUNCH_TIMEOUT_BAKED_SECONDS = 900
# What an agent install needs from this repository (the rest stays out of the asset).
AGENT_SOURCE = ("pyproject.toml", "README.md", "layers/common/python/comfyfleet", "gpu_agent")


def agent_source_dir(environment_text: str | None = None) -> Path:
    """A copy of the files ``pip install .[agent]`` needs, for the instances' asset; with
    the nodes' environment file beside them (ENVIRONMENT_FILE) when given."""
    staging = Path(tempfile.mkdtemp(prefix="comfyfleet-agent-source-"))
    atexit.register(shutil.rmtree, staging, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "tests")
    for relative in AGENT_SOURCE:
        source, target = ROOT / relative, staging / relative
        if source.is_dir():
            shutil.copytree(source, target, ignore=ignore)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    if environment_text is not None:
        (staging / ENVIRONMENT_FILE).write_text(environment_text, encoding="utf-8")
    return staging


class Fleet(Construct):
    """The GPU fleet: ``asg`` and its ``instance_role``."""

    def __init__(
        self, scope: Construct, id: str, *, config: DeploymentConfig, data: Data, queues: Queues
    ) -> None:
        super().__init__(scope, id)
        settings = config.settings
        self.vpc, security_group = self._network(config)
        self.instance_role = iam.Role(
            self,
            "InstanceRole",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description=f"{settings.prefix} GPU node (agent)",
        )
        self._grant(config, data, queues)
        self.group_name = f"{settings.prefix}-gpu-nodes"
        self.launch_hook_name = f"{settings.prefix}-launch"
        source = self._agent_source(config)
        user_data = self._user_data(config, data, queues, source)
        self.node_image = self._node_image(config, source, security_group) if config.bake else None
        self.launch_template = self._launch_template(config, security_group, user_data)
        self.asg = self._group(config)
        if self.node_image is not None:
            self.asg.node.add_dependency(self.node_image.image)  # its parameter, then nodes
        Tags.of(self.asg).add(ENVIRONMENT_TAG, config.node_environment.environment_id)
        self._hooks(config)
        self.warm_pool = None
        if config.warm_pool:
            # Exactly N stopped, set up and paid only for their disks; refilled as they start.
            self.warm_pool = self.asg.add_warm_pool(
                min_size=config.warm_pool,
                max_group_prepared_capacity=config.warm_pool,
                pool_state=autoscaling.PoolState.STOPPED,
            )
        self.scaling = FleetScaling(
            self,
            "Scaling",
            scaling=config.scaling,
            group=self.asg,
            shared_queue_name=queues.shared.queue_name,
            warmup_seconds=WARMUP_BAKED_SECONDS if config.bake else WARMUP_BOOTSTRAP_SECONDS,
        )
        # Its own group only: protection while a job runs, the launch hook when booted.
        access.group_access(
            self.instance_role,
            self.group_name,
            ("autoscaling:CompleteLifecycleAction", *access.GROUP_PROTECTION),
        )

    def _hooks(self, config: DeploymentConfig) -> None:
        """Launch: held until the boot says it is done (a warm-pool instance is stopped only
        then). Termination: the drain, as the lifecycle function answers it."""
        self.launch_hook = self.asg.add_lifecycle_hook(
            "Launch",
            lifecycle_hook_name=self.launch_hook_name,
            lifecycle_transition=autoscaling.LifecycleTransition.INSTANCE_LAUNCHING,
            heartbeat_timeout=Duration.seconds(
                LAUNCH_TIMEOUT_BAKED_SECONDS if config.bake else LAUNCH_TIMEOUT_BOOTSTRAP_SECONDS
            ),
            default_result=autoscaling.DefaultResult.ABANDON,
        )
        self.drain_hook = self.asg.add_lifecycle_hook(
            "Drain",
            lifecycle_hook_name=f"{config.settings.prefix}-drain",
            lifecycle_transition=autoscaling.LifecycleTransition.INSTANCE_TERMINATING,
            heartbeat_timeout=Duration.seconds(
                config.agent.drain_grace_seconds + HOOK_MARGIN_SECONDS
            ),
            default_result=autoscaling.DefaultResult.CONTINUE,
        )

    def _network(self, config: DeploymentConfig) -> tuple[ec2.Vpc, ec2.SecurityGroup]:
        """The VPC (public subnets, gateway endpoints, rejected traffic logged) and the nodes'
        security group."""
        vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=3,
            nat_gateways=0,  # nodes reach out through their public address; nothing reaches in
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="nodes", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=20
                )
            ],
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3),
                "DynamoDB": ec2.GatewayVpcEndpointOptions(
                    service=ec2.GatewayVpcEndpointAwsService.DYNAMODB
                ),
            },
        )
        vpc.add_flow_log(
            "FlowLogs",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(
                logs.LogGroup(self, "FlowLogGroup", retention=retention(config.log_retention_days))
            ),
            traffic_type=ec2.FlowLogTrafficType.REJECT,
        )
        security_group = ec2.SecurityGroup(
            self,
            "NodeSecurityGroup",
            vpc=vpc,
            description="comfyfleet GPU nodes: no inbound, all outbound",
            allow_all_outbound=True,
        )
        return vpc, security_group

    def _agent_source(self, config: DeploymentConfig) -> s3_assets.Asset:
        """The agent's source (and the environment file) as an asset only the nodes (and the
        image build) may read."""
        staged = agent_source_dir(config.node_environment.text)
        source = s3_assets.Asset(self, "AgentSource", path=str(staged))
        # The one object, not the asset bucket: Asset.grant_read would open all of it.
        self.source_object_arn = Stack.of(self).format_arn(
            service="s3",
            region="",
            account="",
            resource=source.s3_bucket_name,
            resource_name=source.s3_object_key,
        )
        self.instance_role.add_to_principal_policy(
            iam.PolicyStatement(actions=["s3:GetObject"], resources=[self.source_object_arn])
        )
        return source

    def _agent_environment(
        self, config: DeploymentConfig, resolved: dict[str, str]
    ) -> dict[str, str]:
        """The agents' COMFYFLEET_* settings: the deployment's, the fleet's own names, and
        ``resolved`` (values known only at deploy)."""
        own = {"node_group_name": self.group_name, "launch_hook_name": self.launch_hook_name}
        environment = settings_environment(config.agent, {**own, **resolved}, model=AgentSettings)
        environment["AWS_DEFAULT_REGION"] = Stack.of(self).region
        return environment

    def _user_data(
        self, config: DeploymentConfig, data: Data, queues: Queues, source: s3_assets.Asset
    ) -> ec2.UserData:
        """The bootstrap script with every setting the agents need."""
        resolved = {
            "shared_queue_url": queues.shared.queue_url,
            "events_topic_arn": queues.events.topic_arn,
            "cdn_domain": (data.distribution.distribution_domain_name if data.distribution else ""),
        }
        script = render_user_data(
            config,
            self._agent_environment(config, resolved),
            source_bucket=source.s3_bucket_name,
            source_key=source.s3_object_key,
            region=Stack.of(self).region,
        )
        return ec2.UserData.custom(script)

    def _node_image(
        self, config: DeploymentConfig, source: s3_assets.Asset, security_group: ec2.SecurityGroup
    ) -> NodeImage:
        """The same script for Image Builder: its install needs only the settings known at
        synth (node setup's URL rules), so a queue or topic never rebakes an image."""
        environment = self._agent_environment(config, {})
        bake = render_user_data(
            config,
            environment,
            source_bucket=source.s3_bucket_name,
            source_key=source.s3_object_key,
            region=Stack.of(self).region,
        )
        # The version follows the script as rendered, with the asset's hash for its tokens.
        key = render_user_data(
            config, environment, source_bucket="", source_key=source.asset_hash, region=""
        )
        return NodeImage(
            self,
            "NodeImage",
            config=config,
            script=bake,
            script_version_key=key,
            source_object_arn=self.source_object_arn,
            subnet=self.vpc.public_subnets[0],
            security_group=security_group,
        )

    def _launch_template(
        self,
        config: DeploymentConfig,
        security_group: ec2.SecurityGroup,
        user_data: ec2.UserData,
    ) -> ec2.LaunchTemplate:
        """IMDSv2 only, an encrypted gp3 disk, the configured image and instance type."""
        stack = Stack.of(self)
        image: ec2.IMachineImage
        if self.node_image is not None:
            # Resolved at each launch: the pipeline's newest image.
            image = ec2.MachineImage.resolve_ssm_parameter_at_launch(
                self.node_image.parameter_name, os=ec2.OperatingSystemType.LINUX
            )
        elif config.ami_id:
            image = ec2.MachineImage.generic_linux({stack.region: config.ami_id})
        else:
            image = ec2.MachineImage.from_ssm_parameter(
                config.ami_parameter, os=ec2.OperatingSystemType.LINUX
            )
        return ec2.LaunchTemplate(
            self,
            "LaunchTemplate",
            launch_template_name=f"{config.settings.prefix}-gpu-node",
            instance_type=ec2.InstanceType(config.instance_type),
            machine_image=image,
            role=self.instance_role,
            security_group=security_group,
            user_data=user_data,
            require_imdsv2=True,
            http_put_response_hop_limit=1,
            detailed_monitoring=True,
            associate_public_ip_address=True,
            block_devices=[
                ec2.BlockDevice(
                    device_name="/dev/sda1",
                    volume=ec2.BlockDeviceVolume.ebs(
                        config.volume_gb,
                        encrypted=True,
                        volume_type=ec2.EbsDeviceVolumeType.GP3,
                        delete_on_termination=True,
                    ),
                )
            ],
        )

    def _spot_mix(self, config: DeploymentConfig) -> autoscaling.MixedInstancesPolicy | None:
        """With ``spot``: the instance type and its alternatives, spot above the minimum."""
        if not config.spot:
            return None
        types = [config.instance_type, *config.spot_instance_types]
        return autoscaling.MixedInstancesPolicy(
            launch_template=self.launch_template,
            launch_template_overrides=[
                autoscaling.LaunchTemplateOverrides(instance_type=ec2.InstanceType(t))
                for t in dict.fromkeys(types)
            ],
            # The minimum stays on demand; everything above it is spot.
            instances_distribution=autoscaling.InstancesDistribution(
                on_demand_base_capacity=config.min_nodes,
                on_demand_percentage_above_base_capacity=0,
                spot_allocation_strategy=(
                    autoscaling.SpotAllocationStrategy.PRICE_CAPACITY_OPTIMIZED
                ),
            ),
        )

    def _group(self, config: DeploymentConfig) -> autoscaling.AutoScalingGroup:
        mix = self._spot_mix(config)
        return autoscaling.AutoScalingGroup(
            self,
            "Nodes",
            auto_scaling_group_name=self.group_name,
            vpc=self.vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            launch_template=None if mix else self.launch_template,
            mixed_instances_policy=mix,
            capacity_rebalance=True if mix else None,
            min_capacity=config.min_nodes,
            max_capacity=config.max_nodes,
            desired_capacity=config.desired_nodes,
            group_metrics=[autoscaling.GroupMetrics.all()],
        )

    def _grant(self, config: DeploymentConfig, data: Data, queues: Queues) -> None:
        role, stack, settings = self.instance_role, Stack.of(self), config.settings
        tables = data.tables
        used = [
            (definition, tables[definition.logical])
            for definition in (
                resources.JOBS,
                resources.NODES,
                resources.MODELS,
                resources.ACCOUNTS,
                resources.LIMITS,
            )
        ]
        access.table_access(role, used, access.TABLE_READ + access.TABLE_WRITE)
        access.table_access(
            role, [(resources.NODES, tables[resources.NODES.logical])], access.TABLE_SCAN
        )
        access.queue_access(
            role,
            [access.queues_by_prefix(stack, settings)],
            access.QUEUE_SEND + access.QUEUE_CONSUME,
        )
        access.queue_access(
            role,
            [access.queues_by_prefix(stack, settings, node_only=True)],
            access.NODE_QUEUE_MANAGE,
        )
        mirror = resources.MODEL_MIRROR_PREFIX
        access.object_access(
            role,
            data.models,
            [f"{mirror}*", f"{resources.CATALOGUE_PREFIX}*"],
            access.OBJECT_READ + access.OBJECT_WRITE,
        )
        access.bucket_listing(role, data.models, mirror)
        access.object_access(
            role,
            data.outputs,
            [f"{OUTPUTS_PREFIX}*", f"{PREVIEWS_PREFIX}*"],
            access.OBJECT_READ + access.OBJECT_WRITE,
        )
        access.topic_publish(role, queues.events)
        access.metric_publish(role)
