"""The API commands' endpoint and key, and `comfyfleet dev`'s argument checks."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from comfyfleet.cli import build_parser, main
from comfyfleet.cli_client import resolve_endpoint
from comfyfleet.dev.stack import ComfyTarget

DEV = {"api_url": "http://127.0.0.1:1234", "user_key": "sk_user", "admin_key": "sk_admin"}


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    (tmp_path / "dev.json").write_text(json.dumps(DEV))
    return tmp_path


def parsed(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_the_dev_stacks_user_key_serves_job_commands_and_its_admin_key_admin_ones(
    state_dir: Path,
) -> None:
    jobs = parsed("ls", "--state-dir", str(state_dir))
    nodes = parsed("nodes", "ls", "--state-dir", str(state_dir))

    assert resolve_endpoint(jobs, admin=False) == ("http://127.0.0.1:1234", "sk_user")
    assert resolve_endpoint(nodes, admin=True) == ("http://127.0.0.1:1234", "sk_admin")


def test_the_environment_wins_over_dev_json_and_flags_over_both(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMFYFLEET_API_URL", "https://api.example.com")
    monkeypatch.setenv("COMFYFLEET_API_KEY", "sk_env")
    from_env = parsed("ls", "--state-dir", str(state_dir))
    from_flags = parsed("ls", "--state-dir", str(state_dir), "--api-key", "sk_flag")

    assert resolve_endpoint(from_env, admin=False) == ("https://api.example.com", "sk_env")
    assert resolve_endpoint(from_flags, admin=False) == ("https://api.example.com", "sk_flag")


def test_no_endpoint_anywhere_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["status", "01ABC", "--state-dir", str(tmp_path)])

    assert code == 2
    assert "comfyfleet dev" in capsys.readouterr().err


def test_an_unreachable_api_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["usage", "--api-url", "http://127.0.0.1:9", "--api-key", "sk_x"])

    assert code == 2
    assert "127.0.0.1:9" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["dev", "--comfy", "http://127.0.0.1:8188"],  # no @ROOT
        ["dev", "--comfy", "ftp://x@/root"],
        ["dev", "--comfy", "http://a:1@/r1,http://b:2@/r2", "--agents", "3"],
        ["dev", "--agents", "0"],
        ["dev", "--port", "70000"],
    ],
)
def test_bad_dev_arguments_are_usage_errors_before_anything_starts(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([*argv, "--state-dir", str(tmp_path)])

    assert code == 2
    assert capsys.readouterr().err.startswith("comfyfleet: ")
    assert not (tmp_path / "dev.json").exists()


def test_a_comfy_target_is_a_url_and_the_comfyui_folder() -> None:
    target = ComfyTarget.parse("http://10.0.0.5:8188/@~/ComfyUI")

    assert target.url == "http://10.0.0.5:8188"
    assert target.root == Path("~/ComfyUI").expanduser()


def test_the_banner_gives_commands_that_find_this_stack(tmp_path: Path) -> None:
    from comfyfleet.dev.stack import banner

    info = {
        "api_url": "http://127.0.0.1:8080",
        "user_key": "sk_live_user",
        "moto_url": "http://127.0.0.1:5000",
        "state_dir": str(tmp_path),
        "absent_functions": ["reaper"],
        "agents": [{"node_id": "dev-node-1", "pid": 42, "comfy_url": "http://127.0.0.1:8188"}],
    }

    text = banner(info)

    assert f"submit examples/hello.json --wait --out out/ --state-dir {tmp_path}" in text
    assert "Authorization: Bearer sk_live_user' http://127.0.0.1:8080/v1/usage" in text
    assert "dev-node-1 (pid 42) -> http://127.0.0.1:8188" in text
    assert "functions/reaper/app.py: not run" in text
