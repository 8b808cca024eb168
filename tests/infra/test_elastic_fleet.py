"""The elastic fleet (issue: baked images, warm pools, scale from zero): a stack synthesised
with ``bake=true warm_pool=2 min_nodes=0``, against the default one (tests/infra/conftest)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from comfyfleet import autoscaling as rules
from comfyfleet_cdk.fleet import (
    LAUNCH_TIMEOUT_BAKED_SECONDS,
    LAUNCH_TIMEOUT_BOOTSTRAP_SECONDS,
    WARMUP_BAKED_SECONDS,
)
from comfyfleet_cdk.node_environment import ENVIRONMENT_TAG
from comfyfleet_cdk.node_image import COMPONENT_DATA_LIMIT
from tests.infra.conftest import Synthesised, flatten, logical_id, synthesise


@pytest.fixture(scope="module")
def elastic(tmp_path_factory: pytest.TempPathFactory) -> Synthesised:
    return synthesise(
        tmp_path_factory.mktemp("elastic") / "cdk.out", bake=True, warm_pool=2, min_nodes=0
    )


def one(synthesised: Synthesised, kind: str) -> dict[str, Any]:
    (resource,) = synthesised.resources(kind).values()
    properties: dict[str, Any] = resource["Properties"]
    return properties


def ref(synthesised: Synthesised, kind: str) -> str:
    (name,) = synthesised.resources(kind)
    return name


def test_bake_builds_the_pipeline_recipe_component_and_infrastructure(
    elastic: Synthesised,
) -> None:
    config = elastic.stack.config
    environment_id = config.node_environment.environment_id
    component = one(elastic, "AWS::ImageBuilder::Component")
    recipe = one(elastic, "AWS::ImageBuilder::ImageRecipe")
    pipeline = one(elastic, "AWS::ImageBuilder::ImagePipeline")
    infrastructure = one(elastic, "AWS::ImageBuilder::InfrastructureConfiguration")
    distribution = one(elastic, "AWS::ImageBuilder::DistributionConfiguration")

    assert recipe["ParentImage"] == f"ssm:{config.ami_parameter}"
    assert recipe["Components"] == [
        {"ComponentArn": {"Fn::GetAtt": [ref(elastic, "AWS::ImageBuilder::Component"), "Arn"]}}
    ]
    for arn, kind in (
        ("ImageRecipeArn", "AWS::ImageBuilder::ImageRecipe"),
        ("InfrastructureConfigurationArn", "AWS::ImageBuilder::InfrastructureConfiguration"),
        ("DistributionConfigurationArn", "AWS::ImageBuilder::DistributionConfiguration"),
    ):
        assert pipeline[arn] == {"Fn::GetAtt": [ref(elastic, kind), "Arn"]}
        assert one(elastic, "AWS::ImageBuilder::Image")[arn] == pipeline[arn]
    assert infrastructure["InstanceTypes"] == [config.instance_type]
    assert infrastructure["InstanceMetadataOptions"]["HttpTokens"] == "required"
    # The environment names and tags the image, so a changed one bakes a new image.
    (target,) = distribution["Distributions"]
    assert environment_id in target["AmiDistributionConfiguration"]["Name"]
    assert target["AmiDistributionConfiguration"]["AmiTags"] == {ENVIRONMENT_TAG: environment_id}
    for resource in (component, recipe, pipeline):
        assert environment_id in resource["Name"]
        assert resource["Tags"] == {ENVIRONMENT_TAG: environment_id}


def test_the_image_build_runs_the_bootstraps_install_from_the_same_script(
    elastic: Synthesised,
) -> None:
    data = flatten(one(elastic, "AWS::ImageBuilder::Component")["Data"])
    assert len(data) < COMPONENT_DATA_LIMIT, "Image Builder refuses longer inline data"
    [step] = json.loads(data)["phases"][0]["steps"]
    (command,) = step["inputs"]["commands"]
    assert command.endswith("bash /tmp/comfyfleet-node.sh bake")
    user_data = flatten(one(elastic, "AWS::EC2::LaunchTemplate")["LaunchTemplateData"]["UserData"])
    # One script: the user data's own functions are what the build runs.
    for part in ("install_node() {", "  bake)\n    install_node", "check_lock "):
        assert part in command and part in user_data

    def without_settings(script: str) -> list[str]:
        return [
            line for line in script.splitlines() if not line.startswith(("COMFYFLEET_", "AWS_"))
        ]

    baked = command.split("<<'COMFYFLEET_NODE_SH'\n", 1)[1].rsplit("\nCOMFYFLEET_NODE_SH", 1)[0]
    assert without_settings(baked) == without_settings(user_data.rstrip())
    # The install needs only the settings known at synth: no queue in the image.
    assert "COMFYFLEET_SHARED_QUEUE_URL" not in command
    assert "COMFYFLEET_SHARED_QUEUE_URL" in user_data


def test_the_launch_template_takes_the_pipelines_newest_image(elastic: Synthesised) -> None:
    parameter = elastic.stack.fleet.node_image.parameter_name
    data = one(elastic, "AWS::EC2::LaunchTemplate")["LaunchTemplateData"]
    assert data["ImageId"] == f"resolve:ssm:{parameter}"
    (target,) = one(elastic, "AWS::ImageBuilder::DistributionConfiguration")["Distributions"]
    assert target["SsmParameterConfigurations"] == [
        {"ParameterName": parameter, "DataType": "aws:ec2:image"}
    ]
    # The first image exists before the group launches a node.
    (group,) = elastic.resources("AWS::AutoScaling::AutoScalingGroup").values()
    assert ref(elastic, "AWS::ImageBuilder::Image") in group["DependsOn"]


def test_image_builders_role_reads_only_the_agent_source(elastic: Synthesised) -> None:
    role = logical_id(elastic, elastic.stack.fleet.node_image.role)
    policies = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for p in elastic.resources("AWS::IAM::Policy").values()
        if {"Ref": role} in p["Properties"]["Roles"]
    ]
    statements = [s for group in policies for s in group]
    reads = [s for s in statements if "s3:GetObject" in json.dumps(s["Action"])]
    assert len(reads) == 1 and "*" not in flatten(reads[0]["Resource"])


def test_warm_pool_keeps_n_stopped_instances(
    elastic: Synthesised, synthesised: Synthesised
) -> None:
    pool = one(elastic, "AWS::AutoScaling::WarmPool")
    assert (pool["MinSize"], pool["MaxGroupPreparedCapacity"], pool["PoolState"]) == (
        2,
        2,
        "Stopped",
    )
    synthesised.template.resource_count_is("AWS::AutoScaling::WarmPool", 0)


def test_a_launch_hook_holds_each_boot_until_it_is_done(
    elastic: Synthesised, synthesised: Synthesised
) -> None:
    for stack, timeout in (
        (elastic, LAUNCH_TIMEOUT_BAKED_SECONDS),
        (synthesised, LAUNCH_TIMEOUT_BOOTSTRAP_SECONDS),
    ):
        stack.template.has_resource_properties(
            "AWS::AutoScaling::LifecycleHook",
            {
                "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING",
                "LifecycleHookName": stack.stack.fleet.launch_hook_name,
                "HeartbeatTimeout": timeout,
                "DefaultResult": "ABANDON",  # a boot that never finishes is replaced
            },
        )


def policies(synthesised: Synthesised) -> dict[str, dict[str, Any]]:
    return {
        name: r["Properties"]
        for name, r in synthesised.resources("AWS::AutoScaling::ScalingPolicy").items()
    }


def alarm_of(synthesised: Synthesised, policy: str) -> dict[str, Any]:
    (alarm,) = [
        a["Properties"]
        for a in synthesised.resources("AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("AlarmActions") == [{"Ref": policy}]
    ]
    return alarm


def test_min_nodes_zero_has_a_path_to_zero_and_one_back(elastic: Synthesised) -> None:
    (group,) = elastic.resources("AWS::AutoScaling::AutoScalingGroup").values()
    assert int(group["Properties"]["MinSize"]) == 0
    found = policies(elastic)
    steps = {n: p for n, p in found.items() if p["PolicyType"] == "StepScaling"}
    by_capacity = {p["StepAdjustments"][0]["ScalingAdjustment"]: n for n, p in steps.items()}
    assert set(by_capacity) == {0, 1}
    for name in by_capacity.values():
        assert steps[name]["AdjustmentType"] == "ExactCapacity"

    to_zero = alarm_of(elastic, by_capacity[0])
    assert to_zero["EvaluationPeriods"] == rules.DEFAULT_IDLE_MINUTES
    assert to_zero["DatapointsToAlarm"] == rules.DEFAULT_IDLE_MINUTES
    assert to_zero["ComparisonOperator"] == "LessThanOrEqualToThreshold"
    assert to_zero["Threshold"] == 0
    metrics = {m["Id"]: m for m in to_zero["Metrics"]}
    assert metrics["busy"]["MetricStat"]["Metric"]["Dimensions"][1]["Value"] == "busy"

    from_zero = alarm_of(elastic, by_capacity[1])
    assert from_zero["EvaluationPeriods"] == rules.FROM_ZERO_MINUTES
    expression = next(m["Expression"] for m in from_zero["Metrics"] if "Expression" in m)
    assert "desired, 0) == 0" in expression and "visible, 0) > 0" in expression


def test_target_tracking_never_divides_by_zero_nodes(elastic: Synthesised) -> None:
    (tracking,) = [
        p["TargetTrackingConfiguration"]
        for p in policies(elastic).values()
        if p["PolicyType"] == "TargetTrackingScaling"
    ]
    [expression] = [
        m["Expression"]
        for m in tracking["CustomizedMetricSpecification"]["Metrics"]
        if "Expression" in m
    ]
    scaling = elastic.stack.config.scaling
    nodes = "FILL(idle, 0) + FILL(busy, 0)"
    assert expression == (
        f"IF({nodes} > 0, (FILL(backlog, 0) + FILL(busy, 0)) / ({nodes}) "
        f"+ {rules.FLOOR_PER_NODE}, {scaling.jobs_per_node:g})"
    )
    # The expression is ScalingRules.tracked_metric: no node reads as the target itself.
    assert scaling.tracked_metric(5, 0, 0) == scaling.jobs_per_node
    assert scaling.tracked_metric(3, 1, 2) == 2 + rules.FLOOR_PER_NODE
    assert tracking["TargetValue"] == scaling.jobs_per_node
    warmup = [p.get("EstimatedInstanceWarmup") for p in policies(elastic).values()]
    assert WARMUP_BAKED_SECONDS in warmup


def test_the_agent_may_protect_and_complete_hooks_on_its_own_group_only(
    elastic: Synthesised,
) -> None:
    role = logical_id(elastic, elastic.stack.fleet.instance_role)
    statements = [
        s
        for p in elastic.resources("AWS::IAM::Policy").values()
        if {"Ref": role} in p["Properties"]["Roles"]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    granted = [s for s in statements if "autoscaling:" in json.dumps(s["Action"])]
    assert len(granted) == 1
    (statement,) = granted
    assert sorted(statement["Action"]) == [
        "autoscaling:CompleteLifecycleAction",
        "autoscaling:SetInstanceProtection",
    ]
    resource = flatten(statement["Resource"])
    assert resource.endswith(f":autoScalingGroupName/{elastic.stack.fleet.group_name}")
    assert resource.count("*") == 1  # only the group's generated id


def test_no_healthy_node_alarms_only_while_jobs_wait_when_zero_is_allowed(
    elastic: Synthesised, synthesised: Synthesised
) -> None:
    def no_healthy(stack: Synthesised) -> str:
        (alarm,) = [
            a["Properties"]
            for a in stack.resources("AWS::CloudWatch::Alarm").values()
            if "No GPU node" in a["Properties"].get("AlarmDescription", "")
            or "no GPU node" in a["Properties"].get("AlarmDescription", "")
        ]
        return next(m["Expression"] for m in alarm["Metrics"] if "Expression" in m)

    assert no_healthy(elastic).startswith("IF(FILL(waiting, 0) > 0,")
    assert "waiting" not in no_healthy(synthesised)


def test_warm_pool_refuses_spot_and_a_pool_above_max(tmp_path: Path) -> None:
    from comfyfleet_cdk.config import ConfigError, read_config

    with pytest.raises(ConfigError, match="spot"):
        read_config({"warm_pool": 1, "spot": True})
    with pytest.raises(ConfigError, match="max_nodes"):
        read_config({"warm_pool": 9, "max_nodes": 4})
    config = read_config({"warm_pool": "2", "bake": "true", "scale_in_idle_minutes": "30"})
    assert (config.warm_pool, config.bake, config.scaling.scale_in_idle_minutes) == (2, True, 30)


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"jobs_per_node": "0"}, "above 0"),
        ({"jobs_per_node": "lots"}, "expected a number"),
        ({"scale_in_idle_minutes": "0"}, "at least 1"),
        ({"backlog_per_node": "2"}, "jobs_per_node"),  # the old key says what replaced it
    ],
)
def test_scaling_options_refuse_bad_values_naming_the_key(
    context: dict[str, str], message: str
) -> None:
    from comfyfleet_cdk.config import ConfigError, read_config

    with pytest.raises(ConfigError, match=message):
        read_config(context)
    assert read_config({"jobs_per_node": "1.5"}).scaling.jobs_per_node == 1.5
