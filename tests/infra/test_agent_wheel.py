"""What a GPU node installs: the wheel built from the fleet's agent asset, as node.sh builds it.

The stand-in ComfyUI (fakecomfy) and its dependencies are development tools and must never be
in it; the agent and the shared package must.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from comfyfleet_cdk.fleet import agent_source_dir


@pytest.fixture(scope="module")
def agent_wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    # Offline: the build backend is the one installed here (the dev extra pins setuptools).
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            str(agent_source_dir()),
        ],
        check=True,
        timeout=240,
    )
    (wheel,) = out.glob("comfyfleet-*.whl")
    return zipfile.ZipFile(wheel)


def _packages(wheel: zipfile.ZipFile) -> set[str]:
    return {Path(name).parts[0] for name in wheel.namelist() if not name.startswith("comfyfleet-")}


def test_the_agent_wheel_holds_the_agent_and_the_shared_package(agent_wheel: zipfile.ZipFile):
    names = set(agent_wheel.namelist())
    assert "gpu_agent/main.py" in names
    assert "comfyfleet/data/object_info_core.json" in names
    assert _packages(agent_wheel) == {"comfyfleet", "gpu_agent"}


def test_the_agent_wheel_has_no_stand_in_comfyui(agent_wheel: zipfile.ZipFile):
    assert not [name for name in agent_wheel.namelist() if "fakecomfy" in name.split("/")[0:2]]
    (metadata_name,) = [n for n in agent_wheel.namelist() if n.endswith(".dist-info/METADATA")]
    metadata = Parser().parsestr(agent_wheel.read(metadata_name).decode())
    assert "agent" in metadata.get_all("Provides-Extra", [])
    required = [line.lower() for line in metadata.get_all("Requires-Dist", [])]
    assert not [line for line in required if line.startswith(("aiohttp", "pillow"))], required
