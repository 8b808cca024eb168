"""Which environment a node runs: the id in node setup's lock file in ComfyUI's folder, or
``core`` where node setup never ran; a lock that cannot be trusted stops the agent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfyfleet.domain import CORE_ENVIRONMENT
from comfyfleet.environment.lock import InvalidLock, Lock, lock_path, write_lock
from gpu_agent.identity import environment_id


def lock(environment: str) -> Lock:
    return Lock(
        environment_id=environment,
        comfyui_version="v0.3.64",
        comfyui_commit=None,
        python="/usr/bin/python3",
        pip_freeze_sha256="0" * 64,
        custom_nodes=(),
        models=(),
    )


def test_without_a_lock_file_the_node_runs_comfyuis_core_nodes(tmp_path: Path) -> None:
    assert environment_id(tmp_path) == CORE_ENVIRONMENT == "core"


def test_the_lock_files_environment_id_is_the_nodes(tmp_path: Path) -> None:
    write_lock(tmp_path, lock("9c1f3e2a7b4d"))

    assert environment_id(tmp_path) == "9c1f3e2a7b4d"


@pytest.mark.parametrize("bad", ["../escape", "a/b", "", "x" * 65, "with space"])
def test_an_id_that_cannot_name_a_catalogue_is_refused(tmp_path: Path, bad: str) -> None:
    write_lock(tmp_path, lock(bad))

    with pytest.raises(InvalidLock, match="not a plain name"):
        environment_id(tmp_path)


def test_a_damaged_lock_is_never_taken_for_an_environment(tmp_path: Path) -> None:
    lock_path(tmp_path).write_text(json.dumps({"environment_id": "abc"}))

    with pytest.raises(InvalidLock):
        environment_id(tmp_path)
