"""Fleet: launch template, instance role, user data, the group, its hook and its scaling."""

from __future__ import annotations

import json

from comfyfleet_cdk.bootstrap import USER_DATA_LIMIT
from comfyfleet_cdk.fleet import HOOK_MARGIN_SECONDS
from tests.infra.conftest import Synthesised, flatten, logical_id


def _template_data(synthesised: Synthesised) -> dict:
    (template,) = synthesised.resources("AWS::EC2::LaunchTemplate").values()
    data: dict = template["Properties"]["LaunchTemplateData"]
    return data


def test_launch_template_requires_imdsv2_and_encrypts_its_volume(
    synthesised: Synthesised,
) -> None:
    data = _template_data(synthesised)
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    (device,) = data["BlockDeviceMappings"]
    assert device["Ebs"]["Encrypted"] is True
    assert device["Ebs"]["VolumeSize"] == synthesised.stack.config.volume_gb
    assert data["InstanceType"] == "g5.xlarge"


def test_gpu_image_comes_from_the_public_ssm_parameter(synthesised: Synthesised) -> None:
    config = synthesised.stack.config
    parameters = synthesised.body["Parameters"]
    assert any(
        p.get("Default") == config.ami_parameter
        and p["Type"] == "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"
        for p in parameters.values()
    )


def test_user_data_installs_comfyui_and_the_agent_as_systemd_services(
    synthesised: Synthesised,
) -> None:
    script = flatten(_template_data(synthesised)["UserData"])
    assert script.startswith("#!/bin/bash")
    assert "@@" not in script, "every placeholder is filled"
    assert len(script.encode()) < USER_DATA_LIMIT, "EC2 refuses larger user data"
    assert "COMFYUI_GIT=https://github.com/comfyanonymous/ComfyUI" in script
    assert f'clone_comfyui "$COMFY_ROOT" {synthesised.stack.config.comfyui_version}' in script
    assert 'uv venv --allow-existing --seed --python 3.12 "$COMFY_ROOT/.venv"' in script
    assert '/bin/comfyfleet" node setup --environment' in script
    assert "-m gpu_agent.prefetch --environment" in script
    assert "write_units /etc/systemd/system" in script
    assert "ExecStart=$HOME_DIR/venv/bin/comfyfleet agent" in script
    assert 'systemctl enable --now $(gpu_units "$(gpu_count)")' in script
    assert "COMFYFLEET_NODE_GROUP_NAME=comfyfleet-dev-gpu-nodes" in script
    assert "COMFYFLEET_LAUNCH_HOOK_NAME=comfyfleet-dev-launch" in script
    queue = logical_id(synthesised, synthesised.stack.queues.shared)
    assert f"COMFYFLEET_SHARED_QUEUE_URL='<Ref {queue}>'" in script
    assert "COMFYFLEET_CDN_DOMAIN=" in script


def test_the_group_launches_from_the_template_with_a_spot_mix(synthesised: Synthesised) -> None:
    config = synthesised.stack.config
    synthesised.template.resource_count_is("AWS::AutoScaling::LaunchConfiguration", 0)
    (group,) = synthesised.resources("AWS::AutoScaling::AutoScalingGroup").values()
    properties = group["Properties"]
    assert int(properties["MinSize"]) == config.min_nodes
    assert int(properties["MaxSize"]) == config.max_nodes
    mix = properties["MixedInstancesPolicy"]
    assert mix["InstancesDistribution"]["OnDemandBaseCapacity"] == config.min_nodes
    assert mix["InstancesDistribution"]["OnDemandPercentageAboveBaseCapacity"] == 0
    types = [o["InstanceType"] for o in mix["LaunchTemplate"]["Overrides"]]
    assert types[0] == config.instance_type and len(types) > 1


def test_termination_hook_gives_the_agent_its_drain_grace(synthesised: Synthesised) -> None:
    grace = synthesised.stack.config.agent.drain_grace_seconds
    synthesised.template.has_resource_properties(
        "AWS::AutoScaling::LifecycleHook",
        {
            "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
            "HeartbeatTimeout": grace + HOOK_MARGIN_SECONDS,
            "DefaultResult": "CONTINUE",
            "AutoScalingGroupName": {"Ref": logical_id(synthesised, synthesised.stack.fleet.asg)},
        },
    )


def test_scaling_tracks_jobs_waiting_or_running_per_node(synthesised: Synthesised) -> None:
    # min_nodes >= 1: target tracking alone, as before scaling to zero existed.
    (policy,) = synthesised.resources("AWS::AutoScaling::ScalingPolicy").values()
    tracking = policy["Properties"]["TargetTrackingConfiguration"]
    assert tracking["TargetValue"] == synthesised.stack.config.jobs_per_node
    metrics = {m["Id"]: m for m in tracking["CustomizedMetricSpecification"]["Metrics"]}
    nodes = "FILL(idle, 0) + FILL(busy, 0)"
    assert metrics["jobs_per_node"]["Expression"] == (
        f"IF({nodes} > 0, (FILL(backlog, 0) + FILL(busy, 0)) / ({nodes}), "
        f"{synthesised.stack.config.jobs_per_node:g})"
    )
    backlog = metrics["backlog"]["MetricStat"]["Metric"]
    assert backlog["MetricName"] == "ApproximateNumberOfMessagesVisible"
    shared = logical_id(synthesised, synthesised.stack.queues.shared)
    assert backlog["Dimensions"][0]["Value"] == {"Fn::GetAtt": [shared, "QueueName"]}
    for status in ("idle", "busy"):  # the reaper's count of nodes, one per GPU
        metric = metrics[status]["MetricStat"]["Metric"]
        assert (metric["Namespace"], metric["MetricName"]) == ("ComfyFleet", "Nodes")
        assert {d["Name"]: d["Value"] for d in metric["Dimensions"]} == {
            "service": "comfyfleet-reaper",
            "status": status,
        }


def test_nodes_accept_no_inbound_traffic(synthesised: Synthesised) -> None:
    for group in synthesised.resources("AWS::EC2::SecurityGroup").values():
        assert not group["Properties"].get("SecurityGroupIngress")
    synthesised.template.resource_count_is("AWS::EC2::FlowLog", 1)
    assert json.dumps(synthesised.resources("AWS::EC2::VPCEndpoint")).count("Gateway") == 2
