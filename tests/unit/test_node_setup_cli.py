"""`comfyfleet node setup`'s refusals before it touches anything, and its progress lines."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from comfyfleet.cli import main
from comfyfleet.environment.progress import PlainProgress, RichProgress, terminal_progress

REV = "0123456789abcdef0123456789abcdef01234567"
GOOD = f"""
[[custom_nodes]]
name = "Helper"
git = "https://github.com/example/Helper"
rev = "{REV}"
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["node", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    path = tmp_path / "env.toml"
    path.write_text(GOOD)
    return path


@pytest.fixture
def comfy(tmp_path: Path) -> Path:
    root = tmp_path / "comfy"
    root.mkdir()
    return root


def test_a_bad_file_exits_2_listing_every_problem(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, comfy: Path
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace(REV, "main") + 'colour = "red"\n')

    code, out, err = run(capsys, "setup", "--environment", str(bad), "--comfy-root", str(comfy))

    assert code == 2 and out == ""
    assert err.splitlines() == [
        f"comfyfleet: {bad} is not a valid environment (2 problems); nothing was changed:",
        "  custom_nodes[0].colour: unknown key (expected name, git, rev, pip)",
        "  custom_nodes[0].rev: a full 40-hex commit is required, got 'main'",
    ]
    assert files(comfy) == []


def test_a_missing_file_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, comfy: Path
) -> None:
    missing = tmp_path / "none.toml"

    code, _, err = run(capsys, "setup", "--environment", str(missing), "--comfy-root", str(comfy))

    assert code == 2
    assert f"comfyfleet: {missing} is not a valid environment (1 problem)" in err
    assert f"  {missing}: cannot read: [Errno 2]" in err


def test_a_bad_default_version_exits_2(
    capsys: pytest.CaptureFixture[str], env_file: Path, comfy: Path
) -> None:
    code, _, err = run(
        capsys, "setup", "--environment", str(env_file), "--comfy-root", str(comfy),
        "--comfyui-version", "abc1234",
    )  # fmt: skip

    assert code == 2
    assert "  comfyui.version (the default): an abbreviated commit is ambiguous" in err


def test_a_comfy_root_that_is_not_a_folder_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, env_file: Path
) -> None:
    absent = tmp_path / "nowhere"

    code, _, err = run(capsys, "setup", "--environment", str(env_file), "--comfy-root", str(absent))

    assert code == 2
    assert err == f"comfyfleet: --comfy-root {absent} is not a folder\n"
    assert not absent.exists()


def test_no_interpreter_in_the_default_venv_exits_2_with_a_hint(
    capsys: pytest.CaptureFixture[str], env_file: Path, comfy: Path
) -> None:
    code, _, err = run(capsys, "setup", "--environment", str(env_file), "--comfy-root", str(comfy))

    assert code == 2
    expected = comfy / ".venv" / "bin" / "python"
    assert err == (
        f"comfyfleet: no Python interpreter at {expected} (pass --python: ComfyUI's interpreter)\n"
    )
    assert files(comfy) == []


def test_a_python_that_is_not_there_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, env_file: Path, comfy: Path
) -> None:
    python = tmp_path / "bin" / "python3"

    code, _, err = run(
        capsys, "setup", "--environment", str(env_file), "--comfy-root", str(comfy),
        "--python", str(python),
    )  # fmt: skip

    assert code == 2
    assert err == f"comfyfleet: no Python interpreter at {python}\n"


def test_no_git_on_the_machine_exits_2(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    env_file: Path,
    comfy: Path,
) -> None:
    monkeypatch.setattr("comfyfleet.environment.command.shutil.which", lambda name: None)

    code, _, err = run(
        capsys, "setup", "--environment", str(env_file), "--comfy-root", str(comfy),
        "--python", sys.executable,
    )  # fmt: skip

    assert code == 2
    assert err == "comfyfleet: git is not installed: node setup checks custom nodes out with git\n"
    assert files(comfy) == []


def test_node_without_a_subcommand_prints_its_help_and_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(capsys)

    assert code == 2 and out == ""
    assert "setup" in err and "usage: comfyfleet node" in err


def test_setup_without_its_required_flags_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["node", "setup"])

    assert raised.value.code == 2
    assert "the following arguments are required: --environment, --comfy-root" in (
        capsys.readouterr().err
    )


# -- progress ---------------------------------------------------------------------------------


def test_plain_progress_prints_one_line_per_finished_part() -> None:
    stream = io.StringIO()
    progress = terminal_progress(stream)

    progress.working("Helper", "cloning")
    progress.done("Helper", "cloned at 0123456789ab")
    progress.close()

    assert isinstance(progress, PlainProgress)
    assert stream.getvalue() == "Helper: cloned at 0123456789ab\n"


def test_rich_progress_prints_the_same_lines_on_a_terminal() -> None:
    from rich.console import Console

    stream = io.StringIO()
    progress = RichProgress(Console(file=stream, force_terminal=True, width=200))

    progress.working("Helper", "cloning [x]")
    progress.working("Helper", "installing requirements")
    progress.done("Helper", "cloned at 0123456789ab [pinned]")
    progress.close()

    assert "Helper: cloned at 0123456789ab [pinned]" in stream.getvalue()
