"""The nodes' environment at synth: context ``environment`` validated as node setup would,
shipped beside the agent's source, named by id in the user data and the instances' tag."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from comfyfleet.environment import load_environment
from comfyfleet_cdk.config import DEFAULT_COMFYUI_VERSION, ConfigError, read_config
from comfyfleet_cdk.node_environment import ENVIRONMENT_FILE, ENVIRONMENT_TAG, core_environment
from tests.infra.conftest import ROOT, Synthesised, flatten, synthesise

REV = "0123456789abcdef0123456789abcdef01234567"
GOOD = f"""
[comfyui]
version = "v0.3.60"

[[custom_nodes]]
name = "ComfyUI-Helper"
git = "https://github.com/example/ComfyUI-Helper"
rev = "{REV}"
pip = ["imageio-ffmpeg>=0.5"]
"""
BAD = """
[[custom_nodes]]
name = "../escape"
git = "http://github.com/example/Helper"
rev = "main"
"""
BAD_PROBLEMS = (
    "custom_nodes[0].name:",
    "custom_nodes[0].git:",
    "custom_nodes[0].rev: a full 40-hex commit is required, got 'main'",
)


def _user_data(synthesised: Synthesised) -> str:
    (template,) = synthesised.resources("AWS::EC2::LaunchTemplate").values()
    return flatten(template["Properties"]["LaunchTemplateData"]["UserData"])


def _shipped_environment(synthesised: Synthesised) -> str:
    """The environment file in the agent source asset the nodes download."""
    (shipped,) = synthesised.outdir.glob(f"asset.*/{ENVIRONMENT_FILE}")
    assert (shipped.parent / "gpu_agent" / "main.py").is_file(), "beside the agent's source"
    return shipped.read_text(encoding="utf-8")


def _group_tags(synthesised: Synthesised) -> dict[str, dict]:
    (group,) = synthesised.resources("AWS::AutoScaling::AutoScalingGroup").values()
    return {tag["Key"]: tag for tag in group["Properties"]["Tags"]}


@pytest.fixture(scope="module")
def with_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Synthesised, Path]:
    folder = tmp_path_factory.mktemp("environment")
    path = folder / "environment.toml"
    path.write_text(GOOD, encoding="utf-8")
    return synthesise(folder / "cdk.out", environment=str(path)), path


def test_the_file_ships_with_the_agent_and_its_id_reaches_user_data_and_tag(
    with_file: tuple[Synthesised, Path],
) -> None:
    synthesised, path = with_file
    expected = load_environment(path, default_comfyui_version=DEFAULT_COMFYUI_VERSION)

    assert _shipped_environment(synthesised) == GOOD
    script = _user_data(synthesised)
    assert f"check_lock {expected.environment_id}" in script
    assert "node setup --environment" in script
    assert 'clone_comfyui "$COMFY_ROOT" v0.3.60' in script, "the file's ComfyUI version"
    tag = _group_tags(synthesised)[ENVIRONMENT_TAG]
    assert tag == {
        "Key": ENVIRONMENT_TAG,
        "Value": expected.environment_id,
        "PropagateAtLaunch": True,
    }


def test_without_the_key_the_nodes_get_the_core_environment(synthesised: Synthesised) -> None:
    config = synthesised.stack.config
    core = core_environment(config.comfyui_version, config.settings)

    shipped = _shipped_environment(synthesised)
    assert shipped == f'[comfyui]\nversion = "{config.comfyui_version}"\n'
    assert f"check_lock {core.environment_id}" in _user_data(synthesised)
    assert _group_tags(synthesised)[ENVIRONMENT_TAG]["Value"] == core.environment_id


def test_a_bad_file_is_refused_with_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(BAD, encoding="utf-8")

    with pytest.raises(ConfigError) as refused:
        read_config({"environment": str(bad)})

    message = str(refused.value)
    assert message.startswith(f"context environment={bad}: not a valid environment (3 problems)")
    for problem in BAD_PROBLEMS:
        assert f"\n  {problem}" in message


def test_a_missing_file_and_a_bad_comfyui_version_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a valid environment"):
        read_config({"environment": str(tmp_path / "absent.toml")})
    with pytest.raises(ConfigError, match=r"(?s)comfyui_version='abc1234'.*abbreviated commit"):
        read_config({"comfyui_version": "abc1234"})


def test_a_bad_file_fails_the_synth_with_the_same_messages(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(BAD, encoding="utf-8")
    env = {
        **os.environ,
        "CDK_CONTEXT_JSON": json.dumps({"environment": str(bad)}),
        "CDK_OUTDIR": str(tmp_path / "cdk.out"),
    }

    done = subprocess.run(
        [sys.executable, str(ROOT / "cdk" / "app.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"comfyfleet: context environment={bad}: not a valid environment" in done.stderr
    for problem in BAD_PROBLEMS:
        assert problem in done.stderr
    assert not (tmp_path / "cdk.out" / "manifest.json").exists(), "nothing synthesised"
