"""`comfyfleet node setup` on custom nodes: git repositories the tests create, this venv's pip.

pip never reaches an index: every run passes --no-index and PIP_CONFIG_FILE is emptied, and
the only requirement that must install is one already installed here (requests).
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest

from comfyfleet.environment import LOCK_FILENAME, read_lock
from tests.integration.node_setup_support import (
    MISSING_PACKAGE,
    Repo,
    Setup,
    entry,
    git,
    node_repo,
)

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@pytest.fixture
def setup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Setup:
    return Setup(tmp_path / "comfy", capsys, monkeypatch)


@pytest.fixture
def helper(tmp_path: Path) -> Repo:
    return node_repo(tmp_path, "Helper")


@pytest.fixture
def other(tmp_path: Path) -> Repo:
    return node_repo(tmp_path, "Other")


def test_a_node_is_checked_out_detached_at_its_rev_and_locked(setup: Setup, helper: Repo) -> None:
    code, out, err = setup.run(entry("Helper", helper, helper.commits[0]))

    assert (code, err) == (0, "")
    folder = setup.root / "custom_nodes" / "Helper"
    assert setup.head("Helper") == helper.commits[0]
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=folder) == "HEAD"  # detached
    assert "HelperOne" in (folder / "__init__.py").read_text()
    assert f"Helper: cloned at {helper.commits[0][:12]}" in out.splitlines()
    lock = read_lock(setup.root)
    assert lock is not None
    assert [(n.name, n.commit, n.git) for n in lock.custom_nodes] == [
        ("Helper", helper.commits[0], helper.url)
    ]
    assert lock.comfyui_commit is None and lock.python == sys.executable
    assert len(lock.pip_freeze_sha256) == 64
    assert f"environment {lock.environment_id} set up in {setup.root}; lock written" in out
    assert not (setup.root / "custom_nodes.staging").exists()


def test_a_changed_rev_moves_the_checkout_and_installs_its_requirements(
    setup: Setup, helper: Repo
) -> None:
    setup.run(entry("Helper", helper, helper.commits[0]))
    first = read_lock(setup.root)

    code, out, _ = setup.run(entry("Helper", helper, helper.commits[1]))

    assert code == 0
    assert setup.head("Helper") == helper.commits[1]
    assert "HelperTwo" in (setup.root / "custom_nodes" / "Helper" / "__init__.py").read_text()
    short = [c[:12] for c in helper.commits]
    assert f"Helper: moved {short[0]} -> {short[1]}, requirements installed" in out.splitlines()
    lock = read_lock(setup.root)
    assert lock is not None and first is not None
    assert lock.custom_nodes[0].commit == helper.commits[1]
    assert lock.environment_id != first.environment_id


def test_a_second_run_with_nothing_to_do_changes_nothing_and_says_so(
    setup: Setup, helper: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = entry("Helper", helper, helper.commits[1], pip=["requests"])
    setup.run(text)
    before, lock_before = setup.tree(), setup.lock_text()

    def no_pip(*args: object, **kwargs: object) -> None:
        raise AssertionError("pip ran on the fast path")

    monkeypatch.setattr("comfyfleet.environment.sync.pip_freeze_sha256", no_pip)
    monkeypatch.setattr("comfyfleet.environment.steps.pip_install", no_pip)
    started = time.perf_counter()
    code, out, _ = setup.run(text)
    elapsed = time.perf_counter() - started

    lock = read_lock(setup.root)
    assert lock is not None
    assert code == 0
    assert (
        out
        == f"environment {lock.environment_id} already in place in {setup.root}: nothing changed\n"
    )
    assert setup.tree() == before and setup.lock_text() == lock_before
    assert elapsed < 0.5, f"{elapsed:.3f} s"


def test_a_pip_list_change_alone_runs_pip_and_keeps_the_checkout(
    setup: Setup, helper: Repo
) -> None:
    setup.run(entry("Helper", helper, helper.commits[0]))

    code, out, _ = setup.run(entry("Helper", helper, helper.commits[0], pip=["requests"]))

    assert code == 0
    line = f"Helper: at {helper.commits[0][:12]}, unchanged, requirements installed"
    assert line in out.splitlines()
    lock = read_lock(setup.root)
    assert lock is not None and lock.custom_nodes[0].pip == ("requests",)


def test_a_removed_entry_is_moved_aside_and_unmanaged_folders_stay(
    setup: Setup, helper: Repo, other: Repo
) -> None:
    setup.run(entry("Helper", helper, helper.commits[0]) + entry("Other", other, other.commits[0]))
    mine = setup.root / "custom_nodes" / "Mine"
    mine.mkdir()
    (mine / "__init__.py").write_text("NODE_CLASS_MAPPINGS = {}\n")
    (setup.root / "custom_nodes" / "loose_node.py").write_text("NODE_CLASS_MAPPINGS = {}\n")

    code, out, _ = setup.run(entry("Helper", helper, helper.commits[0]))

    assert code == 0
    names = sorted(p.name for p in (setup.root / "custom_nodes").iterdir())
    assert names == ["Helper", "Mine", "loose_node.py"]
    [aside] = (setup.root / "custom_nodes.disabled").iterdir()
    assert aside.name.startswith("Other-")
    assert git("rev-parse", "HEAD", cwd=aside) == other.commits[0]  # kept whole, not deleted
    assert f"Other: no longer in the file: moved aside to custom_nodes.disabled/{aside.name}" in out
    lock = read_lock(setup.root)
    assert lock is not None and [n.name for n in lock.custom_nodes] == ["Helper"]


def test_a_failing_pip_requirement_leaves_the_old_checkout_and_the_old_lock(
    setup: Setup, helper: Repo
) -> None:
    setup.run(entry("Helper", helper, helper.commits[0]))
    lock_before = setup.lock_text()

    code, out, err = setup.run(entry("Helper", helper, helper.commits[1], pip=[MISSING_PACKAGE]))

    assert code == 1
    assert err.startswith("comfyfleet: node setup failed at Helper: pip install failed: ")
    assert f"No matching distribution found for {MISSING_PACKAGE}" in err
    assert "the checkouts are back where they were; the lock is as it was" in err
    assert setup.head("Helper") == helper.commits[0]
    assert setup.lock_text() == lock_before


def test_a_failure_at_one_node_undoes_the_nodes_before_it(
    setup: Setup, helper: Repo, other: Repo
) -> None:
    setup.run(entry("Helper", helper, helper.commits[0]) + entry("Other", other, other.commits[0]))
    lock_before = setup.lock_text()
    third = node_repo(setup.root.parent, "Third")

    code, _, err = setup.run(
        entry("Helper", helper, helper.commits[1])
        + entry("Third", third, third.commits[0])
        + entry("Other", other, other.commits[0], pip=[MISSING_PACKAGE])
    )

    assert code == 1
    assert "node setup failed at Other: pip install failed" in err
    assert setup.head("Helper") == helper.commits[0]
    assert sorted(p.name for p in (setup.root / "custom_nodes").iterdir()) == ["Helper", "Other"]
    assert setup.lock_text() == lock_before


def test_a_failing_clone_names_the_node_and_leaves_nothing_behind(
    setup: Setup, helper: Repo, tmp_path: Path
) -> None:
    gone = Repo(tmp_path / "no-such-repository", [])

    code, _, err = setup.run(entry("Gone", gone, helper.commits[0]))

    assert code == 1
    assert err.startswith("comfyfleet: node setup failed at Gone: git fetch failed: ")
    assert sorted(setup.tree()) == []


def test_a_rev_the_repository_lacks_fails_naming_it(setup: Setup, helper: Repo) -> None:
    setup.run(entry("Helper", helper, helper.commits[0]))
    absent = "1" * 40

    code, _, err = setup.run(entry("Helper", helper, absent))

    assert code == 1
    assert f"failed at Helper: commit {absent} is not in {helper.url}" in err
    assert setup.head("Helper") == helper.commits[0]


def test_a_fresh_clone_whose_pip_fails_is_removed(setup: Setup, helper: Repo) -> None:
    code, _, err = setup.run(entry("Helper", helper, helper.commits[0], pip=[MISSING_PACKAGE]))

    assert code == 1 and "failed at Helper: pip install failed" in err
    assert sorted(setup.tree()) == ["custom_nodes"]
    assert not (setup.root / LOCK_FILENAME).exists()


def test_a_bad_file_exits_2_and_changes_nothing_on_disk(setup: Setup, helper: Repo) -> None:
    setup.run(entry("Helper", helper, helper.commits[0]))
    before = setup.tree()

    code, out, err = setup.run(entry("Helper", helper, "main") + entry("../x", helper, "main"))

    assert code == 2 and out == ""
    assert "  custom_nodes[0].rev: a full 40-hex commit is required, got 'main'" in err
    assert "  custom_nodes[1].name: not a safe folder name" in err
    assert setup.tree() == before


def test_a_folder_in_the_way_is_moved_aside_and_an_existing_checkout_adopted(
    setup: Setup, helper: Repo, other: Repo
) -> None:
    in_the_way = setup.root / "custom_nodes" / "Helper"
    in_the_way.mkdir(parents=True)
    (in_the_way / "notes.txt").write_text("mine")
    git("clone", "-q", other.url, "Other", cwd=setup.root / "custom_nodes")

    code, out, _ = setup.run(
        entry("Helper", helper, helper.commits[0]) + entry("Other", other, other.commits[0])
    )

    assert code == 0
    assert setup.head("Helper") == helper.commits[0]
    [aside] = (setup.root / "custom_nodes.disabled").iterdir()
    assert (aside / "notes.txt").read_text() == "mine"
    assert f"(the folder there moved to custom_nodes.disabled/{aside.name})" in out
    assert setup.head("Other") == other.commits[0]
    short = [c[:12] for c in other.commits]
    assert f"Other: moved {short[1]} -> {short[0]}" in out


def test_a_damaged_lock_is_ignored_and_rewritten(setup: Setup, helper: Repo) -> None:
    (setup.root / LOCK_FILENAME).write_text("{")

    code, out, _ = setup.run(entry("Helper", helper, helper.commits[0]))

    assert code == 0
    assert out.startswith("lock: ignored (")
    assert read_lock(setup.root) is not None
