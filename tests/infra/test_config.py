"""The deployment's options, the settings it hands on, and the pieces synth relies on
(layer bundling, the size-bound pattern, user data values): no synth needed."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from comfyfleet.settings import Settings
from comfyfleet_cdk import bundling
from comfyfleet_cdk.api import greater_than_pattern
from comfyfleet_cdk.bootstrap import systemd_value
from comfyfleet_cdk.config import (
    DEFAULT_AMI_PARAMETER,
    DEFAULT_REGION,
    PLACEHOLDER_ACCOUNT,
    ROOT,
    ConfigError,
    read_config,
    settings_environment,
)
from gpu_agent.settings import AgentSettings


def test_cdk_json_runs_the_app_with_the_launch_template_flag() -> None:
    cdk_json = json.loads((ROOT / "cdk.json").read_text())
    assert cdk_json["app"] == "python3 cdk/app.py"
    flags = cdk_json["context"]
    assert flags["@aws-cdk/aws-autoscaling:generateLaunchTemplateInsteadOfLaunchConfig"] is True
    # The committed lookups: zones of the account and region an offline synth targets.
    cached = json.loads((ROOT / "cdk.context.json").read_text())
    key = f"availability-zones:account={PLACEHOLDER_ACCOUNT}:region={DEFAULT_REGION}"
    assert len(cached[key]) >= 3


def test_defaults_need_no_context() -> None:
    config = read_config({})
    assert config.stage == "dev"
    assert config.instance_type == "g5.xlarge"
    assert config.ami_parameter == DEFAULT_AMI_PARAMETER and config.ami_id == ""
    assert (config.min_nodes, config.max_nodes, config.desired_nodes) == (1, 4, None)
    assert config.spot is False and config.cloudfront is True
    assert config.settings.prefix == "comfyfleet-dev"
    assert config.alarm_email == ""


def test_command_line_strings_are_parsed() -> None:
    config = read_config(
        {
            "stage": "prod",
            "spot": "true",
            "cloudfront": "off",
            "min_nodes": "0",
            "max_nodes": "8",
            "desired_nodes": "2",
            "model_hosts": "huggingface.co, example.org",
            "settings": '{"max_attempts": 5, "drain_grace_seconds": 300}',
            "agent": {"cache_budget_bytes": 10_000_000_000},
            "alarm_email": "ops@example.com",
        }
    )
    assert config.spot is True and config.cloudfront is False
    assert (config.min_nodes, config.max_nodes, config.desired_nodes) == (0, 8, 2)
    assert config.settings.prefix == "comfyfleet-prod"
    assert config.settings.model_hosts == ["huggingface.co", "example.org"]
    assert config.settings.max_attempts == 5
    assert config.agent.cache_budget_bytes == 10_000_000_000
    assert config.agent.max_attempts == 5, "the agents share the deployment's settings"
    assert config.agent.drain_grace_seconds == config.settings.drain_grace_seconds == 300


@pytest.mark.parametrize(
    ("context", "named"),
    [
        ({"min_nodes": "many"}, "min_nodes"),
        ({"min_nodes": 3, "max_nodes": 2}, "max_nodes"),
        ({"desired_nodes": 9}, "desired_nodes"),
        ({"spot": "perhaps"}, "spot"),
        ({"alarm_email": "nobody"}, "alarm_email"),
        ({"settings": {"max_attempts": 0}}, "settings: max_attempts"),
        ({"settings": "{not json"}, "settings"),
        ({"model_hosts": "not a host!"}, "model_hosts"),
        ({"prefix": "Bad_Prefix"}, "prefix"),
        ({"agent": {"cache_budget_bytes": 0}}, "agent: cache_budget_bytes"),
        ({"agent": {"drain_grace_seconds": 60}}, "agent: drain_grace_seconds is a shared"),
    ],
)
def test_a_bad_option_fails_naming_it(context: dict, named: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        read_config(context)


def test_synth_ignores_the_machines_own_comfyfleet_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COMFYFLEET_MAX_ATTEMPTS", "9")
    assert read_config({}).settings.max_attempts == Settings.model_fields["max_attempts"].default


def test_environment_holds_explicit_settings_buckets_and_known_resolved_values() -> None:
    settings = Settings.model_validate({"prefix": "cf-test", "model_hosts": ["a.example"]})
    environment = settings_environment(
        settings, {"shared_queue_url": "https://q", "cdn_domain": "d.example"}
    )
    assert environment == {
        "COMFYFLEET_PREFIX": "cf-test",
        "COMFYFLEET_MODEL_HOSTS": '["a.example"]',
        "COMFYFLEET_MODEL_BUCKET": "cf-test-models",
        "COMFYFLEET_OUTPUT_BUCKET": "cf-test-outputs",
        "COMFYFLEET_SHARED_QUEUE_URL": "https://q",
    }, "cdn_domain is the agent's setting, not the functions'"
    agent = settings_environment(settings, {"cdn_domain": "d.example"}, model=AgentSettings)
    assert agent["COMFYFLEET_CDN_DOMAIN"] == "d.example"
    # What the processes read back is what the stack meant.
    assert (
        Settings.model_validate(
            {"prefix": "cf-test", "model_hosts": ["a.example"]}
        ).model_bucket_name
        == environment["COMFYFLEET_MODEL_BUCKET"]
    )


@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=0, max_value=10**10))
def test_size_pattern_matches_exactly_the_larger_numbers(bound: int, value: int) -> None:
    assert bool(re.fullmatch(greater_than_pattern(bound), str(value))) == (value > bound)


def test_size_pattern_edges() -> None:
    pattern = greater_than_pattern(1_114_112)
    assert not re.fullmatch(pattern, "1114112")
    assert re.fullmatch(pattern, "1114113")
    assert re.fullmatch(pattern, "99999999")
    assert not re.fullmatch(pattern, "999999")


def test_layer_holds_the_projects_runtime_dependencies_less_what_lambda_ships() -> None:
    requirements = bundling.layer_requirements()
    names = {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}
    assert "boto3" not in names
    assert {"aws-lambda-powertools", "pydantic", "pydantic-settings", "aws-xray-sdk"} <= names


def test_pip_fetches_lambda_platform_wheels_only(tmp_path: Path) -> None:
    command = bundling.pip_command(tmp_path / "requirements.txt", tmp_path / "out")
    joined = " ".join(command)
    assert "--platform manylinux2014_aarch64" in joined
    assert "--implementation cp" in joined
    assert "--python-version 3.12" in joined
    assert "--only-binary=:all:" in command
    assert "docker" not in joined.lower()


def test_a_cached_layer_is_copied_without_pip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    (cache / "python" / "pkg").mkdir(parents=True)
    (cache / "python" / "pkg" / "__init__.py").write_text("")

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("pip ran although the layer was cached")

    monkeypatch.setattr(subprocess, "run", no_network)
    out = tmp_path / "out"
    assert bundling.PipLayerBundling(tmp_path / "requirements.txt", cache).try_bundle(
        str(out), None
    )
    assert (out / "python" / "pkg" / "__init__.py").exists()


def test_a_fresh_layer_is_installed_then_pruned_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []

    def fake_pip(command: list[str], check: bool) -> None:
        calls.append(command)
        target = Path(command[command.index("--target") + 1])
        for name in ("pydantic", "botocore", "botocore-1.0.dist-info", "boto3"):
            (target / name).mkdir(parents=True)

    monkeypatch.setattr(subprocess, "run", fake_pip)
    cache = tmp_path / "cache"
    out = tmp_path / "out"
    bundling.PipLayerBundling(tmp_path / "requirements.txt", cache).try_bundle(str(out), None)
    assert len(calls) == 1
    assert sorted(p.name for p in (out / "python").iterdir()) == ["pydantic"]
    assert (cache / "python" / "pydantic").is_dir()


@pytest.mark.parametrize(
    "value",
    ["plain", "https://sqs.us-east-1.amazonaws.com/1/q", '["a","b"]', "it's", "a b", ""],
)
def test_systemd_values_read_back_unchanged(value: str) -> None:
    rendered = systemd_value(value)
    if rendered.startswith("'"):
        inner = rendered[1:-1]
        assert inner.replace("\\'", "'").replace("\\\\", "\\") == value
    else:
        assert rendered == value
