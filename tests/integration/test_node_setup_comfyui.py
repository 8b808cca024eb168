"""`comfyfleet node setup` on ComfyUI's own checkout: moved to ``[comfyui] version``, or refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from comfyfleet.environment import read_lock
from tests.integration.node_setup_support import (
    MISSING_PACKAGE,
    Repo,
    Setup,
    entry,
    git,
    node_repo,
)

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def comfyui_origin(base: Path) -> Repo:
    """A stand-in ComfyUI: v0.0.1, v0.0.2 (adds a requirements.txt), then an untagged commit."""
    path = base / "origins" / "ComfyUI"
    path.mkdir(parents=True)
    git("init", "-q", "-b", "master", cwd=path)
    (path / ".gitignore").write_text("/custom_nodes/\n")
    commits = []
    for release in ("0.0.1", "0.0.2", "0.0.3-dev"):
        (path / "comfyui_version.py").write_text(f'__version__ = "{release}"\n')
        if release == "0.0.2":
            (path / "requirements.txt").write_text("requests\n")
        git("add", ".", cwd=path)
        git("commit", "-q", "-m", release, cwd=path)
        if not release.endswith("dev"):
            git("tag", f"v{release}", cwd=path)
        commits.append(git("rev-parse", "HEAD", cwd=path))
    return Repo(path, commits)


@pytest.fixture
def origin(tmp_path: Path) -> Repo:
    return comfyui_origin(tmp_path)


@pytest.fixture
def setup(
    tmp_path: Path,
    origin: Repo,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Setup:
    git("clone", "-q", origin.url, "comfy", cwd=tmp_path)
    return Setup(tmp_path / "comfy", capsys, monkeypatch)


def comfyui(version: str) -> str:
    return f'[comfyui]\nversion = "{version}"\n'


def head(root: Path) -> str:
    return git("rev-parse", "HEAD", cwd=root)


def test_a_tag_moves_comfyui_and_the_lock_records_its_commit(setup: Setup, origin: Repo) -> None:
    code, out, _ = setup.run(comfyui("v0.0.1"))

    assert code == 0
    assert head(setup.root) == origin.commits[0]
    assert f"comfyui: moved {origin.commits[2][:12]} -> v0.0.1 ({origin.commits[0][:12]})" in out
    lock = read_lock(setup.root)
    assert lock is not None
    assert (lock.comfyui_version, lock.comfyui_commit) == ("v0.0.1", origin.commits[0])


def test_a_commit_moves_comfyui_and_installs_its_requirements(setup: Setup, origin: Repo) -> None:
    code, out, _ = setup.run(comfyui(origin.commits[1]))

    assert code == 0
    assert head(setup.root) == origin.commits[1]
    assert out.splitlines()[0].endswith(", requirements installed")


def test_a_shallow_release_clone_fetches_the_commit_it_lacks(
    tmp_path: Path,
    origin: Repo,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As the node bootstrap clones ComfyUI: one commit deep, at a release tag.
    git("clone", "-q", "--depth", "1", "--branch", "v0.0.2", origin.url, "shallow", cwd=tmp_path)
    setup = Setup(tmp_path / "shallow", capsys, monkeypatch)

    code, _, err = setup.run(comfyui(origin.commits[0]))

    assert (code, err) == (0, "")
    assert head(setup.root) == origin.commits[0]


def test_a_tag_made_after_the_clone_is_fetched(setup: Setup, origin: Repo) -> None:
    git("tag", "v0.0.3", origin.commits[2], cwd=origin.path)
    setup.run(comfyui("v0.0.1"))

    code, _, _ = setup.run(comfyui("v0.0.3"))

    assert code == 0 and head(setup.root) == origin.commits[2]


def test_an_unknown_tag_fails_at_comfyui_and_moves_nothing(setup: Setup, origin: Repo) -> None:
    code, _, err = setup.run(comfyui("v9.9.9"))

    assert code == 1
    assert err.startswith("comfyfleet: node setup failed at comfyui: git fetch failed: ")
    assert head(setup.root) == origin.commits[2]


def test_a_later_failure_moves_comfyui_back(setup: Setup, origin: Repo, tmp_path: Path) -> None:
    helper = node_repo(tmp_path, "Helper")

    code, _, err = setup.run(
        comfyui("v0.0.1") + entry("Helper", helper, helper.commits[0], pip=[MISSING_PACKAGE])
    )

    assert code == 1 and "failed at Helper" in err
    assert head(setup.root) == origin.commits[2]


def test_a_second_run_with_a_version_changes_nothing(setup: Setup, tmp_path: Path) -> None:
    helper = node_repo(tmp_path, "Helper")
    text = comfyui("v0.0.2") + entry("Helper", helper, helper.commits[0])
    setup.run(text)

    code, out, _ = setup.run(text)

    assert code == 0 and out.endswith(": nothing changed\n")


def test_the_callers_default_version_applies_without_a_comfyui_table(
    setup: Setup, origin: Repo
) -> None:
    code, _, _ = setup.run("", "--comfyui-version", "v0.0.1")

    assert code == 0 and head(setup.root) == origin.commits[0]


def test_no_version_leaves_comfyui_where_it_is(setup: Setup, origin: Repo) -> None:
    code, out, _ = setup.run("")

    assert code == 0
    assert out.splitlines()[0] == (
        f"comfyui: left at {origin.commits[2][:12]} (the file names no version)"
    )
    lock = read_lock(setup.root)
    assert lock is not None and lock.comfyui_commit == origin.commits[2]


def test_a_copied_release_passes_when_it_is_the_version_asked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = Setup(tmp_path / "copy", capsys, monkeypatch)
    (setup.root / "comfyui_version.py").write_text('__version__ = "0.3.64"\n')

    code, out, _ = setup.run(comfyui("v0.3.64"))

    assert code == 0
    assert out.splitlines()[0] == "comfyui: not a git checkout: release 0.3.64, as the file says"
    lock = read_lock(setup.root)
    assert lock is not None and lock.comfyui_commit is None


def test_a_copied_release_of_another_version_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = Setup(tmp_path / "copy", capsys, monkeypatch)
    (setup.root / "comfyui_version.py").write_text('__version__ = "0.3.60"\n')

    code, _, err = setup.run(comfyui("v0.3.64"))

    assert code == 1
    assert err.splitlines()[0] == (
        f"comfyfleet: node setup failed at comfyui: {setup.root} is not a git checkout, so it "
        "cannot be moved to v0.3.64, and its comfyui_version.py says '0.3.60': clone ComfyUI "
        "with git, or leave [comfyui] out of the file"
    )
    assert sorted(p.name for p in setup.root.iterdir()) == ["comfyui_version.py"]
