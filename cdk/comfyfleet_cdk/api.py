"""Api: the REST API in front of the api function, behind the key authorizer.

Every path goes to the api function as a proxy integration; the REQUEST authorizer (cached
per Authorization header) guards all of them except comfyfleet's public paths. A web ACL
bounds the request size (the workflow limit plus its envelope) before anything is invoked,
and limits requests per client address; the stage throttles and writes access logs.
"""

from __future__ import annotations

import json
from typing import Any

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from comfyfleet.api.auth import AUTHORIZATION, AUTHORIZER_CACHE_SECONDS
from comfyfleet.api.context import PUBLIC_PATHS, PUBLIC_PREFIXES
from comfyfleet.api.http import BODY_ALLOWANCE_BYTES
from comfyfleet_cdk.config import DeploymentConfig
from comfyfleet_cdk.functions import retention

AUTHORIZER_CACHE_TTL = Duration.seconds(AUTHORIZER_CACHE_SECONDS)  # revocation's delay
# Requests per 5 minutes from one address before the web ACL blocks it: far above any
# tier's per-key limit, it only stops floods (each would cost an authorizer call).
REQUESTS_PER_ADDRESS = 6000
ACCESS_LOG_FORMAT = {
    "requestId": "$context.requestId",
    "ip": "$context.identity.sourceIp",
    "time": "$context.requestTimeEpoch",
    "method": "$context.httpMethod",
    "path": "$context.path",
    "status": "$context.status",
    "latencyMs": "$context.responseLatency",
    "integrationLatencyMs": "$context.integrationLatency",
    "responseLength": "$context.responseLength",
    "account": "$context.authorizer.principalId",
    "error": "$context.error.message",
    "authorizerError": "$context.authorizer.error",
    "wafStatus": "$context.waf.status",
}


def greater_than_pattern(bound: int) -> str:
    """A regular expression matching exactly the decimal integers greater than ``bound``."""
    digits = str(bound)
    width = len(digits)
    options = [f"[1-9][0-9]{{{width},}}"]  # more digits
    for i, digit in enumerate(digits):  # same length: equal up to i, then a larger digit
        if digit != "9":
            rest = width - i - 1
            tail = f"[0-9]{{{rest}}}" if rest else ""
            options.append(f"{digits[:i]}[{int(digit) + 1}-9]{tail}")
    return "^(" + "|".join(options) + ")$"


class Api(Construct):
    """The REST API, its authorizer, stage and web ACL."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: DeploymentConfig,
        handler: lambda_.IFunction,
        authorizer: lambda_.IFunction,
    ) -> None:
        super().__init__(scope, id)
        settings = config.settings
        self.max_request_bytes = settings.max_workflow_bytes + BODY_ALLOWANCE_BYTES
        self.access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            retention=retention(config.log_retention_days),
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.rest_api = self._rest_api(config)
        self.authorizer = apigw.RequestAuthorizer(
            self,
            "KeyAuthorizer",
            handler=authorizer,
            identity_sources=[apigw.IdentitySource.header(AUTHORIZATION.title())],
            results_cache_ttl=AUTHORIZER_CACHE_TTL,
        )
        self._routes(handler)
        self._gateway_responses()
        self.web_acl = self._web_acl(settings.prefix)

    def _rest_api(self, config: DeploymentConfig) -> apigw.RestApi:
        """The API and its stage: throttled, traced, access-logged, bodies never logged."""
        return apigw.RestApi(
            self,
            "RestApi",
            rest_api_name=f"{config.settings.prefix}-api",
            description="comfyfleet: run ComfyUI workflows on a GPU fleet",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN,
            deploy_options=apigw.StageOptions(
                stage_name=config.stage,
                throttling_rate_limit=config.api_rate_limit,
                throttling_burst_limit=config.api_burst_limit,
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=apigw.AccessLogFormat.custom(json.dumps(ACCESS_LOG_FORMAT)),
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # bodies hold prompts and keys: never logged
                metrics_enabled=True,
                tracing_enabled=True,
            ),
        )

    def _routes(self, handler: lambda_.IFunction) -> None:
        """Every path proxied to ``handler``: behind the authorizer but for the public paths."""
        # The api function validates bodies itself (one error shape); this checks what the
        # gateway can before an invocation.
        validator = self.rest_api.add_request_validator(
            "Requests", validate_request_parameters=True, validate_request_body=True
        )
        integration = apigw.LambdaIntegration(handler, proxy=True)
        guarded: dict[str, Any] = {
            "authorizer": self.authorizer,
            "authorization_type": apigw.AuthorizationType.CUSTOM,
            "request_validator": validator,
        }
        public: dict[str, Any] = {
            "authorization_type": apigw.AuthorizationType.NONE,
            "request_validator": validator,
        }
        root = self.rest_api.root
        root.add_resource("{proxy+}").add_method("ANY", integration, **guarded)
        for path in sorted(PUBLIC_PATHS):
            resource = root
            for part in path.strip("/").split("/"):
                resource = resource.get_resource(part) or resource.add_resource(part)
            resource.add_method("GET", integration, **public)
            parent = resource.parent_resource
            if parent is not None and parent is not root and not parent.get_resource("{proxy+}"):
                # A sibling of a public path still reaches the API, behind the authorizer.
                parent.add_resource("{proxy+}").add_method("ANY", integration, **guarded)
        for prefix in PUBLIC_PREFIXES:  # the console's assets, as public as its page
            resource = root.resource_for_path(prefix.rstrip("/"))
            resource.add_resource("{proxy+}").add_method("GET", integration, **public)

    def _gateway_responses(self) -> None:
        """Refusals by the gateway itself, in the API's one error shape (functions/authorizer)."""
        request_id = '"request_id":"$context.requestId"'

        def body(code: str, message: str) -> str:
            return f'{{"error":{{"code":"{code}","message":{message},{request_id}}}}}'

        responses = [
            (
                apigw.ResponseType.UNAUTHORIZED,
                "401",
                body("unauthorized", '"a valid API key is required"'),
            ),
            (
                apigw.ResponseType.ACCESS_DENIED,
                "403",
                body("forbidden", '"this API key may not call this route"'),
            ),
            (
                apigw.ResponseType.AUTHORIZER_FAILURE,
                "503",
                body("storage_unavailable", '"authorization is unavailable; retry shortly"'),
            ),
            (
                apigw.ResponseType.WAF_FILTERED,
                "403",
                body("request_blocked", '"the request is too large, or too frequent"'),
            ),
            (
                apigw.ResponseType.DEFAULT_4_XX,
                None,
                body("invalid_request", "$context.error.messageString"),
            ),
            (
                apigw.ResponseType.DEFAULT_5_XX,
                None,
                body("internal_error", "$context.error.messageString"),
            ),
        ]
        for response_type, status, template in responses:
            self.rest_api.add_gateway_response(
                f"Gateway{response_type.response_type}",
                type=response_type,
                status_code=status,
                response_headers={"X-Request-Id": "context.requestId"},
                templates={"application/json": template},
            )

    def _web_acl(self, prefix: str) -> wafv2.CfnWebACL:
        def visibility(name: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
            return wafv2.CfnWebACL.VisibilityConfigProperty(
                cloud_watch_metrics_enabled=True,
                metric_name=name,
                sampled_requests_enabled=True,
            )

        size_rule = wafv2.CfnWebACL.RuleProperty(
            name="request-size-bound",
            priority=0,
            action=wafv2.CfnWebACL.RuleActionProperty(block={}),
            visibility_config=visibility(f"{prefix}-request-size"),
            statement=wafv2.CfnWebACL.StatementProperty(
                regex_match_statement=wafv2.CfnWebACL.RegexMatchStatementProperty(
                    field_to_match=wafv2.CfnWebACL.FieldToMatchProperty(
                        single_header={"Name": "content-length"}
                    ),
                    regex_string=greater_than_pattern(self.max_request_bytes),
                    text_transformations=[
                        wafv2.CfnWebACL.TextTransformationProperty(priority=0, type="NONE")
                    ],
                )
            ),
        )
        rate_rule = wafv2.CfnWebACL.RuleProperty(
            name="requests-per-address",
            priority=1,
            action=wafv2.CfnWebACL.RuleActionProperty(block={}),
            visibility_config=visibility(f"{prefix}-requests-per-address"),
            statement=wafv2.CfnWebACL.StatementProperty(
                rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                    aggregate_key_type="IP", limit=REQUESTS_PER_ADDRESS
                )
            ),
        )
        acl = wafv2.CfnWebACL(
            self,
            "WebAcl",
            name=f"{prefix}-api",
            scope="REGIONAL",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            visibility_config=visibility(f"{prefix}-api"),
            rules=[size_rule, rate_rule],
        )
        stage = self.rest_api.deployment_stage
        association = wafv2.CfnWebACLAssociation(
            self, "WebAclAssociation", web_acl_arn=acl.attr_arn, resource_arn=stage.stage_arn
        )
        association.node.add_dependency(stage)  # the ARN names the stage without a reference
        return acl
