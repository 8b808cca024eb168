"""Starting the agent: `comfyfleet agent`, `python -m gpu_agent`, and its settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from comfyfleet.cli import main as cli_main
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
    assert "comfyfleet agent" in capsys.readouterr().out


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
