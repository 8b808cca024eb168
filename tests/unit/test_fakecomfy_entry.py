"""fakecomfy's own entry point (``python -m fakecomfy``) beside ``comfyfleet fakecomfy``."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from comfyfleet.cli import build_parser as comfyfleet_parser
from comfyfleet.cli import main as comfyfleet_main
from fakecomfy.__main__ import build_parser as fakecomfy_parser
from tests.unit.test_fakecomfy_lifecycle import free_port


def _options(parser: argparse.ArgumentParser) -> dict[str, tuple[object, ...]]:
    return {
        action.dest: (tuple(action.option_strings), action.type, action.default, action.required)
        for action in parser._actions
        if action.dest not in ("help", "handler")
    }


def _fakecomfy_subcommand() -> argparse.ArgumentParser:
    commands = next(
        action
        for action in comfyfleet_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    parser: argparse.ArgumentParser = commands.choices["fakecomfy"]
    return parser


def test_both_entry_points_take_the_same_flags() -> None:
    assert _options(fakecomfy_parser()) == _options(_fakecomfy_subcommand())
    assert set(_options(fakecomfy_parser())) == {"port", "root", "host", "step_seconds", "previews"}


def test_python_m_fakecomfy_serves_until_interrupted(tmp_path: Path) -> None:
    # given
    port = free_port()
    command = [sys.executable, "-m", "fakecomfy", "--port", str(port), "--root", str(tmp_path)]
    log = tmp_path / "fakecomfy.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        # when: it is up (run from outside the checkout: the installed package), then Ctrl-C
        deadline = time.monotonic() + 20
        while True:
            try:
                stats = requests.get(f"http://127.0.0.1:{port}/system_stats", timeout=1)
                break
            except requests.ConnectionError:
                alive = process.poll() is None and time.monotonic() < deadline
                assert alive, log.read_text()
                time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()

    # then
    assert stats.json()["system"]["comfyui_version"] == "0.3.64"
    assert code == 0, log.read_text()


def test_comfyfleet_fakecomfy_without_the_package_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # given: a GPU node, where only the agent's wheel is installed
    monkeypatch.setitem(sys.modules, "fakecomfy", None)

    # when
    code = comfyfleet_main(["fakecomfy", "--port", "0", "--root", str(tmp_path)])

    # then
    assert code == 2
    assert "fakecomfy is not installed" in capsys.readouterr().err
