"""One agent per GPU: its node id and ComfyUI port from the GPU index, and the dev stack's
``--shared-cache`` (every agent on one model cache, as on a multi-GPU instance)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from comfyfleet.cli import build_parser
from comfyfleet.dev.command import _options
from comfyfleet.dev.stack import DevStack
from comfyfleet.settings import SettingsError, read_settings
from gpu_agent.main import agent_node_id
from gpu_agent.settings import AgentSettings


@pytest.fixture
def instance(monkeypatch: pytest.MonkeyPatch) -> None:
    """EC2's metadata, answering the instance id."""
    answers = {"/latest/meta-data/instance-id": "i-0abc"}
    monkeypatch.setattr("gpu_agent.identity.imds_get", lambda path, **_: answers.get(path))


def agent_settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> AgentSettings:
    for name, value in env.items():
        monkeypatch.setenv(f"COMFYFLEET_{name.upper()}", value)
    return read_settings(AgentSettings)


@pytest.mark.usefixtures("instance")
def test_each_gpu_is_its_own_node_on_its_own_comfyui_port(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = agent_settings(monkeypatch, gpu_index="3")

    assert agent_node_id(settings, on_ec2=True) == "i-0abc-gpu3"
    assert settings.comfy_url == "http://127.0.0.1:8191"


@pytest.mark.usefixtures("instance")
@pytest.mark.parametrize("index", [None, ""])
def test_without_a_gpu_index_the_node_is_the_instance(
    monkeypatch: pytest.MonkeyPatch, index: str | None
) -> None:
    settings = agent_settings(monkeypatch, **({} if index is None else {"gpu_index": index}))

    assert settings.gpu_index is None
    assert agent_node_id(settings, on_ec2=True) == "i-0abc"
    assert settings.comfy_url == "http://127.0.0.1:8188"


@pytest.mark.usefixtures("instance")
def test_a_configured_node_id_and_comfy_url_win_over_the_gpu_index(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = agent_settings(
        monkeypatch, gpu_index="1", node_id="box-a", comfy_url="http://127.0.0.1:9000"
    )

    assert agent_node_id(settings, on_ec2=True) == "box-a"
    assert settings.comfy_url == "http://127.0.0.1:9000"


def test_off_ec2_the_gpu_index_still_names_the_node(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gpu_agent.identity.imds_get", lambda path, **_: pytest.fail(path))

    assert agent_node_id(agent_settings(monkeypatch, gpu_index="0"), on_ec2=False) == "local-gpu0"


@pytest.mark.parametrize("index", ["-1", "two"])
def test_a_bad_gpu_index_stops_start_up_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch, index: str
) -> None:
    with pytest.raises(SettingsError, match="COMFYFLEET_GPU_INDEX"):
        agent_settings(monkeypatch, gpu_index=index)


class Recorded:
    """Stands in for a child process: records what would have been started."""

    started: list[Recorded] = []

    def __init__(self, name: str, argv: list[str], *, env: dict[str, str], **_: Any) -> None:
        self.name, self.env, self.pid = name, env, 0
        Recorded.started.append(self)


def agents_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *flags: str
) -> list[dict[str, str]]:
    """The environment each agent of ``comfyfleet dev --agents 2 FLAGS`` would start with."""
    monkeypatch.setattr("comfyfleet.dev.agents.ChildProcess", Recorded)
    Recorded.started = []
    args = build_parser().parse_args(["dev", "--agents", "2", "--state-dir", str(tmp_path), *flags])
    DevStack(_options(args))._start_agents(faults="")
    return [child.env for child in Recorded.started if child.name.startswith("dev-node-")]


def test_dev_shared_cache_gives_every_agent_one_cache_and_budget(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    first, second = agents_env(monkeypatch, tmp_path, "--shared-cache")

    assert first["COMFYFLEET_CACHE_DIR"] == second["COMFYFLEET_CACHE_DIR"]
    assert first["COMFYFLEET_CACHE_BUDGET_BYTES"] == second["COMFYFLEET_CACHE_BUDGET_BYTES"]
    assert first["COMFYFLEET_COMFY_ROOT"] != second["COMFYFLEET_COMFY_ROOT"]
    assert first["COMFYFLEET_NODE_ID"] != second["COMFYFLEET_NODE_ID"]


def test_dev_without_shared_cache_gives_each_agent_its_own(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    first, second = agents_env(monkeypatch, tmp_path)

    assert first["COMFYFLEET_CACHE_DIR"] != second["COMFYFLEET_CACHE_DIR"]
