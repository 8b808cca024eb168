"""Starting the agent: `comfyfleet agent`, `python -m gpu_agent`, and its settings."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from comfyfleet.cli import main as cli_main
from gpu_agent.comfy import ComfyClient, ComfyUnavailable
from gpu_agent.main import main as agent_main
from gpu_agent.settings import AgentSettings

DOCS = Path(__file__).parents[2] / "docs" / "settings.md"


def test_every_agent_setting_is_documented_with_its_variable() -> None:
    text = DOCS.read_text()

    for name in AgentSettings.model_fields:
        assert f"`COMFYFLEET_{name.upper()}`" in text, name


def test_python_m_gpu_agent_help_describes_it_and_exits_cleanly(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        agent_main(["--help"])

    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "python -m gpu_agent" in out and "COMFYFLEET_" in out and "SIGTERM" in out


def test_comfyfleet_agent_help_exits_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main(["agent", "--help"])

    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "comfyfleet agent" in out and "SIGTERM" in out


def test_a_bad_agent_setting_stops_start_up_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COMFYFLEET_HEARTBEAT_SECONDS", "-1")

    assert agent_main([]) == 2

    assert "COMFYFLEET_HEARTBEAT_SECONDS" in capsys.readouterr().err


def test_an_unknown_argument_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        agent_main(["--port", "8188"])

    assert exited.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_a_stop_while_comfyui_is_still_loading_ends_the_wait_at_once() -> None:
    with socket.socket() as probe:  # a port nothing listens on: ComfyUI still loading
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()

    with pytest.raises(ComfyUnavailable):
        ComfyClient(url, timeout=1).wait_ready(900, poll=0.1, stop=stop)

    assert time.monotonic() - started < 3


def test_off_ec2_the_agent_never_asks_the_metadata_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gpu_agent.main as entry

    asked: list[str] = []
    built: dict[str, bool] = {}
    monkeypatch.setattr("gpu_agent.identity.imds_get", lambda path, **_: asked.append(path))

    def build(settings: AgentSettings, *, on_ec2: bool = True) -> None:
        built["on_ec2"] = on_ec2
        raise SystemExit(0)  # enough: how the agent would be built is all this test needs

    monkeypatch.setattr(entry, "build", build)
    monkeypatch.setenv("COMFYFLEET_ON_EC2", "false")
    monkeypatch.setenv("COMFYFLEET_NODE_ID", "dev-node-1")

    with pytest.raises(SystemExit):
        agent_main([])

    assert built == {"on_ec2": False} and asked == []
