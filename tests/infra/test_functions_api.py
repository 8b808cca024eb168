"""Functions and Api: the factory's common settings, each trigger, the authorizer wiring."""

from __future__ import annotations

import ast
from pathlib import Path

from aws_cdk.assertions import Match

from comfyfleet import resources
from comfyfleet.api.auth import AUTHORIZER_CACHE_SECONDS
from comfyfleet.dev.stack import AUTHORIZER_TTL_SECONDS
from comfyfleet.observability import NAMESPACE
from comfyfleet_cdk.api import AUTHORIZER_CACHE_TTL
from comfyfleet_cdk.functions import FUNCTIONS_DIR, REAPER_SCHEDULE, service_name
from tests.infra.conftest import Synthesised, flatten, logical_id

NAMES = ("api", "authorizer", "webhooks", "reaper", "lifecycle")


def _function(synthesised: Synthesised, name: str) -> dict:
    built = synthesised.stack.functions.built[name]
    return synthesised.body["Resources"][logical_id(synthesised, built.function)]["Properties"]


def test_every_function_is_python312_arm64_traced_snapstarted_with_both_layers(
    synthesised: Synthesised,
) -> None:
    assert set(synthesised.stack.functions.built) == set(NAMES)
    roles = set()
    for name in NAMES:
        function = _function(synthesised, name)
        assert function["Handler"] == "app.handler"
        assert function["Runtime"] == "python3.12"
        assert function["Architectures"] == ["arm64"]
        assert function["TracingConfig"] == {"Mode": "Active"}
        assert function["SnapStart"] == {"ApplyOn": "PublishedVersions"}
        assert len(function["Layers"]) == 2
        assert function["LoggingConfig"]["LogGroup"]
        roles.add(flatten(function["Role"]))
    assert len(roles) == len(NAMES), "each function has its own role"


def test_functions_get_their_settings_as_comfyfleet_environment(
    synthesised: Synthesised,
) -> None:
    settings = synthesised.stack.config.settings
    queues = synthesised.stack.queues
    for name in NAMES:
        variables = _function(synthesised, name)["Environment"]["Variables"]
        assert variables["COMFYFLEET_PREFIX"] == settings.prefix
        assert variables["COMFYFLEET_MODEL_BUCKET"] == settings.model_bucket_name
        assert variables["COMFYFLEET_OUTPUT_BUCKET"] == settings.output_bucket_name
        assert variables["COMFYFLEET_SHARED_QUEUE_URL"] == {
            "Ref": logical_id(synthesised, queues.shared)
        }
        assert variables["COMFYFLEET_EVENTS_TOPIC_ARN"] == {
            "Ref": logical_id(synthesised, queues.events)
        }
        assert variables["POWERTOOLS_METRICS_NAMESPACE"] == NAMESPACE


def test_log_groups_keep_the_configured_retention(synthesised: Synthesised) -> None:
    days = synthesised.stack.config.log_retention_days
    prefix = synthesised.stack.config.settings.prefix
    for name in NAMES:
        synthesised.template.has_resource_properties(
            "AWS::Logs::LogGroup",
            {"LogGroupName": f"/aws/lambda/{prefix}-{name}", "RetentionInDays": days},
        )


def test_service_names_match_the_functions_own(synthesised: Synthesised) -> None:
    # The alarms name Powertools' service dimension: it must be what each app.py declares.
    for name in NAMES:
        tree = ast.parse(Path(FUNCTIONS_DIR / name / "app.py").read_text())
        declared = [
            node.value.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "SERVICE" for t in node.targets)
            and isinstance(node.value, ast.Constant)
        ]
        assert declared in ([], [service_name(name)]), f"{name}: {declared}"


def test_webhooks_consume_their_queue_reporting_partial_batch_failures(
    synthesised: Synthesised,
) -> None:
    webhooks = synthesised.stack.functions.built["webhooks"]
    (mapping,) = synthesised.resources("AWS::Lambda::EventSourceMapping").values()
    properties = mapping["Properties"]
    assert properties["EventSourceArn"] == {
        "Fn::GetAtt": [logical_id(synthesised, synthesised.stack.queues.webhooks), "Arn"]
    }
    assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    # The alias (function:live), so SnapStart's published version takes the messages.
    target = flatten(properties["FunctionName"])
    assert logical_id(synthesised, webhooks.alias) in target and target.endswith(":live")


def test_reaper_runs_every_minute_on_its_alias(synthesised: Synthesised) -> None:
    reaper = synthesised.stack.functions.built["reaper"]
    assert REAPER_SCHEDULE == "rate(1 minute)"
    synthesised.template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "ScheduleExpression": "rate(1 minute)",
            "State": "ENABLED",
            "Targets": [Match.object_like({"Arn": {"Ref": logical_id(synthesised, reaper.alias)}})],
        },
    )


def test_lifecycle_function_hears_the_fleets_terminate_hook(synthesised: Synthesised) -> None:
    lifecycle = synthesised.stack.functions.built["lifecycle"]
    asg = synthesised.stack.fleet.asg
    synthesised.template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": {
                "source": ["aws.autoscaling"],
                "detail-type": ["EC2 Instance-terminate Lifecycle Action"],
                "detail": {"AutoScalingGroupName": [{"Ref": logical_id(synthesised, asg)}]},
            },
            "Targets": [
                Match.object_like({"Arn": {"Ref": logical_id(synthesised, lifecycle.alias)}})
            ],
        },
    )
    policy = flatten(
        [
            p["Properties"]["PolicyDocument"]
            for p in synthesised.resources("AWS::IAM::Policy").values()
            if p["Properties"]["Roles"] == [{"Ref": logical_id(synthesised, lifecycle.role)}]
        ]
    )
    assert "autoscaling:CompleteLifecycleAction" in policy


def test_authorizer_is_a_request_authorizer_cached_on_the_key_header(
    synthesised: Synthesised,
) -> None:
    authorizer = synthesised.stack.functions.built["authorizer"]
    (found,) = synthesised.resources("AWS::ApiGateway::Authorizer").values()
    properties = found["Properties"]
    assert properties["Type"] == "REQUEST"
    assert properties["IdentitySource"] == "method.request.header.Authorization"
    # A revoked key stops working within the TTL: at most 30 s, as in the dev stack.
    assert properties["AuthorizerResultTtlInSeconds"] == AUTHORIZER_CACHE_TTL.to_seconds()
    assert properties["AuthorizerResultTtlInSeconds"] == AUTHORIZER_CACHE_SECONDS <= 30
    assert AUTHORIZER_TTL_SECONDS == AUTHORIZER_CACHE_SECONDS
    assert f"<Ref {logical_id(synthesised, authorizer.alias)}>" in flatten(
        properties["AuthorizerUri"]
    )


def test_every_route_is_proxied_to_the_api_alias_and_only_public_paths_skip_the_authorizer(
    synthesised: Synthesised,
) -> None:
    api = synthesised.stack.functions.built["api"]
    resources_by_id = synthesised.resources("AWS::ApiGateway::Resource")
    methods = synthesised.resources("AWS::ApiGateway::Method").values()
    public = set()
    for method in methods:
        properties = method["Properties"]
        integration = properties["Integration"]
        assert integration["Type"] == "AWS_PROXY"
        assert f"<Ref {logical_id(synthesised, api.alias)}>" in flatten(integration["Uri"])
        path = resources_by_id[properties["ResourceId"]["Ref"]]["Properties"]["PathPart"]
        if properties["AuthorizationType"] == "NONE":
            public.add(path)
            assert properties["HttpMethod"] == "GET"
        else:
            assert properties["AuthorizationType"] == "CUSTOM"
            assert properties["HttpMethod"] == "ANY"
            assert path == "{proxy+}"
    assert public == {"health", "doc", "console", "admin", "{proxy+}"}  # {proxy+}: /console/*


def test_stage_throttles_logs_access_and_traces(synthesised: Synthesised) -> None:
    config = synthesised.stack.config
    (stage,) = synthesised.resources("AWS::ApiGateway::Stage").values()
    properties = stage["Properties"]
    assert properties["StageName"] == config.stage
    assert properties["TracingEnabled"] is True
    assert "$context.requestId" in properties["AccessLogSetting"]["Format"]
    (settings,) = properties["MethodSettings"]
    assert settings["ThrottlingRateLimit"] == config.api_rate_limit
    assert settings["ThrottlingBurstLimit"] == config.api_burst_limit
    assert settings["DataTraceEnabled"] is False


def test_requests_over_the_workflow_bound_are_blocked_before_any_function(
    synthesised: Synthesised,
) -> None:
    api = synthesised.stack.api
    assert api is not None
    bound = synthesised.stack.config.settings.max_workflow_bytes
    assert api.max_request_bytes > bound
    (acl,) = synthesised.resources("AWS::WAFv2::WebACL").values()
    (rule,) = [r for r in acl["Properties"]["Rules"] if r["Name"] == "request-size-bound"]
    statement = rule["Statement"]["RegexMatchStatement"]
    assert statement["FieldToMatch"] == {"SingleHeader": {"Name": "content-length"}}
    assert "Block" in rule["Action"]
    synthesised.template.resource_count_is("AWS::WAFv2::WebACLAssociation", 1)


def test_gateway_refusals_use_the_apis_error_shape(synthesised: Synthesised) -> None:
    responses = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in synthesised.resources("AWS::ApiGateway::GatewayResponse").values()
    }
    assert responses["UNAUTHORIZED"]["StatusCode"] == "401"
    assert (
        '"code":"unauthorized"'
        in responses["UNAUTHORIZED"]["ResponseTemplates"]["application/json"]
    )
    assert responses["AUTHORIZER_FAILURE"]["StatusCode"] == "503"
    for response in responses.values():
        assert response["ResponseParameters"] == {
            "gatewayresponse.header.X-Request-Id": "context.requestId"
        }


def test_stable_outputs_are_named(synthesised: Synthesised) -> None:
    outputs = synthesised.body["Outputs"]
    for name in ("ApiUrl", "SharedQueueUrl", "EventsTopicArn", "OutputsCdnDomain", "DashboardName"):
        assert name in outputs
    assert outputs["SharedQueueUrl"]["Value"] == {
        "Ref": logical_id(synthesised, synthesised.stack.queues.shared)
    }
    assert resources.SHARED_QUEUE.logical == "shared"
