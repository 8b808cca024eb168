"""NodeImage (context ``bake=true``): an EC2 Image Builder pipeline that bakes the node setup
into an image, so a new node takes jobs about a minute after launch instead of installing
ComfyUI and CUDA PyTorch while the queue waits.

The build runs the node bootstrap itself (userdata/node.sh, ``bake``: the install half), so
both paths are one script. The image's name and tags carry the environment id; the component
and recipe versions follow the script, which holds the environment id and the agent source's
asset key, so a changed environment or agent bakes a new image at ``cdk deploy``. Every image
of the pipeline (the one built at deploy, and each later run) writes its AMI id to one SSM
parameter, which the launch template resolves at each launch: new nodes start on the newest
image, and an instance refresh rolls the running ones (docs/upkeep.md).
"""

from __future__ import annotations

import hashlib
import json

from aws_cdk import Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_imagebuilder as imagebuilder
from aws_cdk import aws_logs as logs
from constructs import Construct

from comfyfleet_cdk import access
from comfyfleet_cdk.config import DeploymentConfig
from comfyfleet_cdk.functions import retention
from comfyfleet_cdk.node_environment import ENVIRONMENT_TAG

# EC2 Image Builder refuses a component document longer than this (inline data).
COMPONENT_DATA_LIMIT = 16_000
_MANAGED = ("EC2InstanceProfileForImageBuilder", "AmazonSSMManagedInstanceCore")


def component_document(script: str) -> str:
    """The Image Builder component: one ExecuteBash step running the bootstrap's install.
    JSON is YAML, and JSON's escapes keep the script byte for byte."""
    command = (
        "cat > /tmp/comfyfleet-node.sh <<'COMFYFLEET_NODE_SH'\n"
        f"{script.rstrip()}\n"
        "COMFYFLEET_NODE_SH\n"
        "bash /tmp/comfyfleet-node.sh bake"
    )
    document = {
        "name": "comfyfleet-node-setup",
        "description": "ComfyUI, CUDA PyTorch, the custom nodes and the comfyfleet agent",
        "schemaVersion": 1.0,
        "phases": [
            {
                "name": "build",
                "steps": [
                    {
                        "name": "NodeSetup",
                        "action": "ExecuteBash",
                        "timeoutSeconds": 3600,
                        "inputs": {"commands": [command]},
                    }
                ],
            }
        ],
    }
    return json.dumps(document, separators=(",", ":"))


def content_version(*parts: str) -> str:
    """A semantic version that changes with the content (Image Builder versions are
    immutable: new content under an old version fails the update)."""
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()
    return f"1.0.{int(digest[:6], 16)}"


class NodeImage(Construct):
    """The pipeline, its recipe, component, infrastructure and distribution, and the image
    built at deploy (``image``); the launch template resolves ``parameter_name``."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: DeploymentConfig,
        script: str,
        script_version_key: str,
        source_object_arn: str,
        subnet: ec2.ISubnet,
        security_group: ec2.ISecurityGroup,
    ) -> None:
        super().__init__(scope, id)
        prefix = config.settings.prefix
        environment_id = config.node_environment.environment_id
        self.name = f"{prefix}-node-{environment_id}".replace(".", "-")
        self.parameter_name = f"/{prefix}/node-image-id"
        self.version = content_version(script_version_key, config.instance_type)
        tags = {ENVIRONMENT_TAG: environment_id}
        recipe = self._recipe(config, script, tags)
        infrastructure = self._infrastructure(config, source_object_arn, subnet, security_group)
        distribution = self._distribution(config, environment_id, tags)
        no_tests = imagebuilder.CfnImagePipeline.ImageTestsConfigurationProperty(
            image_tests_enabled=False  # the nodes' own start checks the lock and ComfyUI
        )
        self.pipeline = imagebuilder.CfnImagePipeline(
            self,
            "Pipeline",
            name=self.name,
            description="comfyfleet GPU node image: run it to bake a fresh one (docs/upkeep.md)",
            image_recipe_arn=recipe.attr_arn,
            infrastructure_configuration_arn=infrastructure.attr_arn,
            distribution_configuration_arn=distribution.attr_arn,
            image_tests_configuration=no_tests,
            status="ENABLED",
            tags=tags,
        )
        # The first image, built while the stack deploys: the parameter exists before a node
        # launches (the group depends on this).
        self.image = imagebuilder.CfnImage(
            self,
            "Image",
            image_recipe_arn=recipe.attr_arn,
            infrastructure_configuration_arn=infrastructure.attr_arn,
            distribution_configuration_arn=distribution.attr_arn,
            image_tests_configuration=imagebuilder.CfnImage.ImageTestsConfigurationProperty(
                image_tests_enabled=False
            ),
            tags=tags,
        )
        self.infrastructure, self.distribution = infrastructure, distribution

    def _recipe(
        self, config: DeploymentConfig, script: str, tags: dict[str, str]
    ) -> imagebuilder.CfnImageRecipe:
        """The component (the bootstrap's install) on the GPU base image."""
        data = component_document(script)
        component = imagebuilder.CfnComponent(
            self,
            "Component",
            name=self.name,
            platform="Linux",
            version=self.version,
            data=data,
            description="The comfyfleet node bootstrap's install (userdata/node.sh bake)",
            tags=tags,
        )
        parent = config.ami_id or f"ssm:{config.ami_parameter}"
        recipe = imagebuilder.CfnImageRecipe(
            self,
            "Recipe",
            name=self.name,
            version=self.version,
            parent_image=parent,
            components=[
                imagebuilder.CfnImageRecipe.ComponentConfigurationProperty(
                    component_arn=component.attr_arn
                )
            ],
            tags=tags,
        )
        self.component, self.recipe, self.component_data = component, recipe, data
        return recipe

    def _infrastructure(
        self,
        config: DeploymentConfig,
        source_object_arn: str,
        subnet: ec2.ISubnet,
        security_group: ec2.ISecurityGroup,
    ) -> imagebuilder.CfnInfrastructureConfiguration:
        """The build instance: the node's type, IMDSv2 only, the nodes' subnet and security
        group, a role that reads the agent's source and writes the build's logs."""
        self.role = iam.Role(
            self,
            "BuildRole",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description=f"{config.settings.prefix} node image build (Image Builder)",
            managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name(n) for n in _MANAGED],
        )
        self.role.add_to_principal_policy(
            iam.PolicyStatement(actions=list(access.OBJECT_READ), resources=[source_object_arn])
        )
        self.log_group = logs.LogGroup(
            self,
            "BuildLogs",
            log_group_name=f"/aws/imagebuilder/{self.name}",
            retention=retention(config.log_retention_days),
        )
        self.log_group.grant_write(self.role)
        profile = iam.CfnInstanceProfile(self, "BuildProfile", roles=[self.role.role_name])
        return imagebuilder.CfnInfrastructureConfiguration(
            self,
            "Infrastructure",
            name=self.name,
            instance_profile_name=profile.ref,
            instance_types=[config.instance_type],
            subnet_id=subnet.subnet_id,
            security_group_ids=[security_group.security_group_id],
            terminate_instance_on_failure=True,
            instance_metadata_options=imagebuilder.CfnInfrastructureConfiguration.InstanceMetadataOptionsProperty(
                http_tokens="required", http_put_response_hop_limit=2
            ),
        )

    def _distribution(
        self, config: DeploymentConfig, environment_id: str, tags: dict[str, str]
    ) -> imagebuilder.CfnDistributionConfiguration:
        """The AMI in this region, named and tagged with the environment, its id in the
        launch template's SSM parameter."""
        region = Stack.of(self).region
        # CloudFormation types this property as plain JSON: its own (Pascal case) keys.
        ami = {
            "Name": f"{self.name}-{{{{ imagebuilder:buildDate }}}}",
            "Description": f"comfyfleet GPU node, environment {environment_id}",
            "AmiTags": tags,
        }
        parameter = imagebuilder.CfnDistributionConfiguration.SsmParameterConfigurationProperty(
            parameter_name=self.parameter_name, data_type="aws:ec2:image"
        )
        return imagebuilder.CfnDistributionConfiguration(
            self,
            "Distribution",
            name=self.name,
            distributions=[
                imagebuilder.CfnDistributionConfiguration.DistributionProperty(
                    region=region,
                    ami_distribution_configuration=ami,
                    ssm_parameter_configurations=[parameter],
                )
            ],
            tags=tags,
        )
