"""Least privilege and cdk-nag: no wildcard action on a data service, each grant named,
AwsSolutions passing with a written reason for every acknowledgement."""

from __future__ import annotations

import json
from collections.abc import Iterator

from comfyfleet_cdk.access import NODE_QUEUE_MANAGE
from tests.infra.conftest import Synthesised, flatten, logical_id

DATA_SERVICES = ("dynamodb", "sqs", "s3", "sns", "kms", "cloudwatch", "logs")


def _statements(synthesised: Synthesised) -> Iterator[tuple[str, dict]]:
    for name, policy in synthesised.resources("AWS::IAM::Policy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            yield name, statement
    for name, role in synthesised.resources("AWS::IAM::Role").items():
        for inline in role["Properties"].get("Policies", []):
            for statement in inline["PolicyDocument"]["Statement"]:
                yield name, statement


def _actions(statement: dict) -> list[str]:
    actions = statement.get("Action", [])
    return [actions] if isinstance(actions, str) else list(actions)


def _role_statements(synthesised: Synthesised, role: object) -> list[dict]:
    ref = {"Ref": logical_id(synthesised, role)}
    return [
        statement
        for policy in synthesised.resources("AWS::IAM::Policy").values()
        if ref in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def test_no_policy_grants_a_wildcard_action_on_a_data_service(synthesised: Synthesised) -> None:
    for name, statement in _statements(synthesised):
        for action in _actions(statement):
            assert action != "*", name
            service, _, verb = action.partition(":")
            if service in DATA_SERVICES:
                assert verb != "*", f"{name}: {action}"


def test_data_service_actions_on_every_resource_are_only_unscoped_ones(
    synthesised: Synthesised,
) -> None:
    allowed = {
        "cloudwatch:GetMetricData",
        "cloudwatch:PutMetricData",
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
    }
    for name, statement in _statements(synthesised):
        if statement.get("Resource") == "*" and statement["Effect"] == "Allow":
            assert set(_actions(statement)) <= allowed, f"{name}: {_actions(statement)}"


def test_the_instance_role_creates_only_node_queues_of_its_prefix(
    synthesised: Synthesised,
) -> None:
    prefix = synthesised.stack.config.settings.prefix
    statements = _role_statements(synthesised, synthesised.stack.fleet.instance_role)
    create = [s for s in statements if "sqs:CreateQueue" in _actions(s)]
    assert len(create) == 1
    assert sorted(_actions(create[0])) == sorted(NODE_QUEUE_MANAGE)
    assert flatten(create[0]["Resource"]).endswith(f":{prefix}-node-*")
    for statement in statements:
        for resource in (
            statement["Resource"]
            if isinstance(statement["Resource"], list)
            else [statement["Resource"]]
        ):
            text = flatten(resource)
            if ":sqs:" in text:
                assert text.endswith((f":{prefix}-*", f":{prefix}-node-*")), text


def test_the_instance_role_publishes_metrics_only_in_comfyfleets_namespace(
    synthesised: Synthesised,
) -> None:
    statements = _role_statements(synthesised, synthesised.stack.fleet.instance_role)
    (put,) = [s for s in statements if "cloudwatch:PutMetricData" in _actions(s)]
    assert put["Condition"] == {"StringEquals": {"cloudwatch:namespace": "ComfyFleet"}}


def test_the_authorizer_only_reads_keys_and_accounts(synthesised: Synthesised) -> None:
    authorizer = synthesised.stack.functions.built["authorizer"]
    data = [
        s
        for s in _role_statements(synthesised, authorizer.role)
        if any(a.startswith("dynamodb:") for a in _actions(s))
    ]
    assert [_actions(s) for s in data] == [["dynamodb:GetItem"]]
    tables = {flatten(r) for r in data[0]["Resource"]}
    assert len(tables) == 2


def test_cdk_nag_aws_solutions_passes(synthesised: Synthesised) -> None:
    report = json.loads((synthesised.outdir / "validation-report.json").read_text())
    plugins = {r["pluginName"]: r for r in report["pluginReports"]}
    assert plugins["AwsSolutions"]["conclusion"] == "success"
    assert plugins["AwsSolutions"]["violations"] == []
    for plugin in plugins.values():
        for suppressed in plugin.get("suppressedViolations", []):
            assert len(suppressed["reason"]) >= 20, suppressed["ruleName"]


def test_every_acknowledgement_has_a_written_reason(synthesised: Synthesised) -> None:
    acknowledged: dict[str, str] = {}
    for construct in synthesised.stack.node.find_all():
        for entry in construct.node.metadata:
            if entry.type == "aws:cdk:acknowledged-rules":
                for rule, reason in entry.data.items():
                    acknowledged[f"{construct.node.path} {rule}"] = reason
    assert acknowledged, "the stack acknowledges its known findings"
    for where, reason in acknowledged.items():
        assert isinstance(reason, str) and len(reason) >= 20, where


def test_synth_asked_aws_for_nothing(synthesised: Synthesised) -> None:
    # A lookup CDK could not answer from cdk.context.json would be listed as missing (and
    # the cdk command would call AWS for it): the committed context answers them all.
    manifest = json.loads((synthesised.outdir / "manifest.json").read_text())
    assert not manifest.get("missing"), manifest.get("missing")
    zones = {
        subnet["Properties"]["AvailabilityZone"]
        for subnet in synthesised.resources("AWS::EC2::Subnet").values()
    }
    assert zones == {"us-east-1a", "us-east-1b", "us-east-1c"}


def _scanned(synthesised: Synthesised, function: str) -> set[str]:
    role = synthesised.stack.functions.built[function].role
    return {
        flatten(resource)
        for statement in _role_statements(synthesised, role)
        if "dynamodb:Scan" in _actions(statement)
        for resource in statement["Resource"]
    }


def test_the_reaper_and_the_drain_may_scan_what_they_read(synthesised: Synthesised) -> None:
    # The reaper reads the jobs' sparse `live` index and the accounts with a backlog; the
    # drain the jobs still running on its node: without Scan both would be refused on AWS.
    reaper, lifecycle = _scanned(synthesised, "reaper"), _scanned(synthesised, "lifecycle")

    assert any(arn.endswith("/index/live") for arn in reaper)
    assert any("Limits" in arn for arn in reaper), reaper
    assert any(arn.endswith("/index/live") for arn in lifecycle)
