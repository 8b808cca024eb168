"""cdk-nag AwsSolutions acknowledgements, each with the reason it does not apply here.

IAM wildcard findings are acknowledged where each grant is made (comfyfleet_cdk.access);
these are the rest, on the narrowest construct that raises them.
"""

from __future__ import annotations

from typing import Any, Protocol

from aws_cdk import Acknowledgment, Validations
from constructs import IConstruct

from comfyfleet_cdk.api import Api
from comfyfleet_cdk.config import DeploymentConfig
from comfyfleet_cdk.data import Data
from comfyfleet_cdk.fleet import Fleet
from comfyfleet_cdk.functions import Functions

LATEST_RUNTIME = (
    "Python 3.12 on purpose: the dependencies layer is built for cp312 wheels and comfyfleet "
    "is tested on it; a runtime upgrade is a deliberate change of both"
)


class Deployment(Protocol):
    """The parts of a deployment the acknowledgements read (the stack has them all)."""

    config: DeploymentConfig
    data: Data
    fleet: Fleet
    functions: Functions
    api: Api | None


def _ack(construct: IConstruct, rule: str, reason: str) -> None:
    Validations.of(construct).acknowledge(Acknowledgment(id=f"AwsSolutions-{rule}", reason=reason))


def acknowledge(stack: Deployment) -> None:
    for built in stack.functions.built.values():
        _ack(built.function, "L1", LATEST_RUNTIME)

    _ack(
        stack.fleet.asg,
        "AS3",
        "Launch and termination errors show as the 'Instances in service' widget and the "
        "NoHealthyNode alarm; ASG notifications to the KMS-encrypted alarm topic would need "
        "the auto scaling service-linked role in the key policy before it exists",
    )

    if stack.config.spot:
        # A rule that throws is acknowledged by its namespaced id (CDK's report says so).
        Validations.of(stack.fleet.asg).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-EC26",
                reason="The spot mix names the launch template by reference, which the rule "
                "cannot follow; that template's volumes are encrypted (tests/infra)",
            )
        )

    image = stack.fleet.node_image
    if image is not None:
        for policy, why in (
            (
                "EC2InstanceProfileForImageBuilder",
                "the build instance reports to Image Builder and writes its own logs; AWS "
                "keeps this policy in step with the service",
            ),
            (
                "AmazonSSMManagedInstanceCore",
                "Image Builder runs the build's steps through Systems Manager, which needs "
                "exactly this policy on the build instance",
            ),
        ):
            _ack(
                image.role,
                f"IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/{policy}]",
                f"Image Builder's own build role ({policy}): {why}",
            )

    if stack.data.distribution is not None:
        cdn = stack.data.distribution
        _ack(cdn, "CFR1", "Users and their outputs are worldwide: no country is excluded")
        _ack(
            cdn,
            "CFR2",
            "The CDN serves only immutable job outputs under unguessable job ids, read-only "
            "(GET/HEAD) through origin access control; a web ACL there adds cost, not safety",
        )
        _ack(
            cdn,
            "CFR4",
            "The default *.cloudfront.net certificate cannot pin a minimum TLS version; "
            "operators who need TLS 1.2+ only attach their own certificate and domain",
        )

    if stack.api is not None:
        _acknowledge_api(stack.api.rest_api)


def _acknowledge_api(rest: Any) -> None:
    """The REST API's findings: its callers are API keys, a few paths are public."""
    _ack(
        rest,
        "COG4",
        "Callers are API users with API keys, resolved by the REQUEST authorizer "
        "(hashed keys in DynamoDB, DESIGN §10), not Cognito users",
    )
    public = {
        "/v1/health": "health checks",
        "/doc": "the API's documentation",
        "/console": "the web console's page (it calls /v1 with the user's key)",
        "/console/{proxy+}": "the web console's scripts and styles",
        "/admin": "a redirect to the web console",
    }
    for path, what in public.items():
        method = rest.root.resource_for_path(path).node.find_child("GET")
        _ack(method, "APIG4", f"{path} is public by design: {what}")
    role = rest.node.try_find_child("CloudWatchRole")
    if role is not None:
        _ack(
            role,
            "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AmazonAPIGatewayPushToCloudWatchLogs]",
            "API Gateway's account-wide logging role uses AWS's own policy for exactly "
            "this (AmazonAPIGatewayPushToCloudWatchLogs)",
        )
