"""Which environment a node runs: the id in node setup's lock file in ComfyUI's folder, or
``core`` where node setup never ran; a lock that cannot be trusted stops the agent."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from comfyfleet.domain import CORE_ENVIRONMENT
from comfyfleet.environment.lock import InvalidLock, lock_path, write_lock
from gpu_agent.identity import environment_id
from tests.support import environment_lock


def test_without_a_lock_file_the_node_runs_comfyuis_core_nodes(tmp_path: Path) -> None:
    assert environment_id(tmp_path) == CORE_ENVIRONMENT == "core"


def test_the_lock_files_environment_id_is_the_nodes(tmp_path: Path) -> None:
    write_lock(tmp_path, environment_lock("9c1f3e2a7b4d"))

    assert environment_id(tmp_path) == "9c1f3e2a7b4d"


@pytest.mark.parametrize("bad", ["../escape", "a/b", "", "x" * 65, "with space"])
def test_an_id_that_cannot_name_a_catalogue_is_refused(tmp_path: Path, bad: str) -> None:
    write_lock(tmp_path, environment_lock(bad))

    with pytest.raises(InvalidLock, match="not a plain name"):
        environment_id(tmp_path)


def test_a_damaged_lock_is_never_taken_for_an_environment(tmp_path: Path) -> None:
    lock_path(tmp_path).write_text(json.dumps({"environment_id": "abc"}))

    with pytest.raises(InvalidLock):
        environment_id(tmp_path)


def test_custom_nodes_comfyui_did_not_load_are_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from comfyfleet.environment.lock import LockedNode
    from gpu_agent.agent import Agent
    from gpu_agent.settings import AgentSettings

    nodes = tuple(
        LockedNode(name, f"https://example.com/{name}", "0" * 40) for name in ("Loaded", "Broken")
    )
    write_lock(tmp_path, dataclasses.replace(environment_lock("0123456789ab"), custom_nodes=nodes))
    agent = object.__new__(Agent)  # only what the check reads
    agent.settings = AgentSettings(comfy_root=tmp_path)
    agent.environment_id = "0123456789ab"
    served = {
        "SaveImage": {"python_module": "nodes"},
        "LoadedThing": {"python_module": "custom_nodes.Loaded"},
    }

    with caplog.at_level("ERROR", logger="gpu_agent.agent"):
        agent._warn_unloaded(json.dumps(served).encode())
        served["BrokenThing"] = {"python_module": "custom_nodes.Broken"}
        agent._warn_unloaded(json.dumps(served).encode())

    (record,) = caplog.records
    assert record.custom_nodes == ["Broken"]  # type: ignore[attr-defined]
    assert "restart it if it started before node setup" in record.getMessage()
