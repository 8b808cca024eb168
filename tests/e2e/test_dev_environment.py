"""``comfyfleet dev --comfy URL@ROOT --environment FILE``: node setup on the folder before its
agent starts, and the agent reporting the lock's environment.

In CI the "ComfyUI" at URL is a fakecomfy the test starts itself (it serves the protocol but
loads no custom nodes). With ``COMFYFLEET_TEST_COMFYUI`` naming a real ComfyUI checkout (a
git clone with its ``.venv``, see docs/environments.md), one more test clones it, installs a
custom node the test writes, starts that ComfyUI once setup is done, and runs a job through
the node's class.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from comfyfleet.client import Client
from comfyfleet.dev.launch import launch_dev_stack
from comfyfleet.environment import load_environment, read_lock
from tests.e2e.conftest import stack_env
from tests.e2e.support import fetch_png
from tests.integration.node_setup_support import git, node_repo

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed"),
]
REAL_COMFYUI = os.environ.get("COMFYFLEET_TEST_COMFYUI", "")
NODE_PACKAGE = "FleetTestNodes"
INVERT_NODE = '''
class FleetInvertImage:
    """1 - image: a custom node class of the test's own."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "invert"
    CATEGORY = "comfyfleet/test"

    def invert(self, image):
        return (1.0 - image,)


NODE_CLASS_MAPPINGS = {"FleetInvertImage": FleetInvertImage}
'''


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_http(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{url}: the server exited"
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer in {timeout} s")


@pytest.fixture
def fake_comfyui(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A fakecomfy on its own port and folder, as a developer's ComfyUI would be; its folder
    has the interpreter node setup installs into (this venv)."""
    root = tmp_path / "ComfyUI"
    root.mkdir()
    (root / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    port = free_port()
    log = (tmp_path / "fakecomfy.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "fakecomfy", "--port", str(port), "--root", str(root)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/system_stats", process, 30)
        yield url, root
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def environment_file(path: Path, name: str, origin: Path, rev: str, version: str = "") -> Path:
    comfyui = f'[comfyui]\nversion = "{version}"\n\n' if version else ""
    path.write_text(
        f'{comfyui}[[custom_nodes]]\nname = "{name}"\ngit = "file://{origin}"\nrev = "{rev}"\n',
        encoding="utf-8",
    )
    return path


def dev(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    """``comfyfleet dev`` that is expected to stop before it starts anything."""
    return subprocess.run(
        [sys.executable, "-m", "comfyfleet.cli", "dev", "--state-dir", str(state), *args],
        env=stack_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_dev_sets_the_folder_up_before_its_agent_reports_the_environment(
    fake_comfyui: tuple[str, Path], tmp_path: Path
) -> None:
    url, root = fake_comfyui
    origin = node_repo(tmp_path, "Helper")
    file = environment_file(tmp_path / "env.toml", "Helper", origin.path, origin.commits[0])
    expected = load_environment(file, allow_local_urls=True).environment_id
    args = ["--comfy", f"{url}@{root}", "--environment", str(file)]

    with launch_dev_stack(tmp_path / "state", env=stack_env(), args=args) as stack:
        lock = read_lock(root)
        assert lock is not None and lock.environment_id == expected
        assert git("rev-parse", "HEAD", cwd=root / "custom_nodes" / "Helper") == origin.commits[0]
        with Client(stack.api_url, stack.admin_key) as admin:
            (node,) = admin.nodes()["nodes"]
        assert node["environment_id"] == expected
        out = (stack.state_dir / "stack.out").read_text()
        assert f"environment {expected} set up in {root}; lock written" in out

    # Again: nothing to do, and it says so.
    with launch_dev_stack(tmp_path / "state", env=stack_env(), args=args) as stack:
        out = (stack.state_dir / "stack.out").read_text()
        assert f"environment {expected} already in place in {root}: nothing changed" in out


def test_a_bad_file_stops_dev_before_anything_starts(
    fake_comfyui: tuple[str, Path], tmp_path: Path
) -> None:
    url, root = fake_comfyui
    bad = tmp_path / "bad.toml"
    bad.write_text('[[custom_nodes]]\nname = "Helper"\ngit = "https://x.example/h"\nrev = "main"\n')

    done = dev("--comfy", f"{url}@{root}", "--environment", str(bad), state=tmp_path / "state")

    assert done.returncode == 2, done.stderr
    assert "custom_nodes[0].rev: a full 40-hex commit is required, got 'main'" in done.stderr
    assert not (root / "custom_nodes").exists() and read_lock(root) is None
    assert not (tmp_path / "state" / "dev.json").exists()


def test_environment_needs_a_real_comfyui_folder(tmp_path: Path) -> None:
    file = tmp_path / "env.toml"
    file.write_text('[comfyui]\nversion = "v0.3.64"\n')

    done = dev("--environment", str(file), state=tmp_path / "state")

    assert done.returncode == 2
    assert "--environment needs --comfy URL@COMFY_ROOT" in done.stderr


@pytest.mark.skipif(not REAL_COMFYUI, reason="COMFYFLEET_TEST_COMFYUI names no ComfyUI checkout")
def test_a_real_comfyui_runs_the_custom_node_that_setup_installed(tmp_path: Path) -> None:
    source = Path(REAL_COMFYUI)
    root = tmp_path / "ComfyUI"
    # A copy, not a clone: a ComfyUI snapshot may lack blobs of files it has checked out.
    skipped = shutil.ignore_patterns(".venv", "custom_nodes", "user", "output", "temp", "input")
    shutil.copytree(source, root, symlinks=True, ignore=skipped)
    (root / ".venv").symlink_to((source / ".venv").resolve(), target_is_directory=True)
    version = git("rev-parse", "HEAD", cwd=root)
    origin = tmp_path / "origins" / NODE_PACKAGE
    origin.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=origin)
    (origin / "__init__.py").write_text(INVERT_NODE)
    (origin / "requirements.txt").write_text("requests\n")  # present: pip changes nothing
    git("add", ".", cwd=origin)
    git("commit", "-q", "-m", "invert", cwd=origin)
    file = environment_file(
        tmp_path / "env.toml", NODE_PACKAGE, origin, git("rev-parse", "HEAD", cwd=origin), version
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    comfy: list[subprocess.Popen[bytes]] = []
    log = (tmp_path / "comfyui.log").open("wb")

    def start_comfyui_once_set_up() -> None:
        # ComfyUI loads custom nodes only at start: start it once the lock is there.
        deadline = time.monotonic() + 300
        while read_lock(root) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        argv = [str(root / ".venv" / "bin" / "python"), "main.py", "--cpu", "--listen"]
        argv += ["127.0.0.1", "--port", str(port), "--disable-auto-launch"]
        comfy.append(subprocess.Popen(argv, cwd=root, stdout=log, stderr=subprocess.STDOUT))

    starter = threading.Thread(target=start_comfyui_once_set_up, daemon=True)
    starter.start()
    args = ["--comfy", f"{url}@{root}", "--environment", str(file)]
    try:
        with launch_dev_stack(tmp_path / "state", env=stack_env(), args=args, timeout=600) as stack:
            headers = {"Authorization": f"Bearer {stack.user_key}"}
            described = requests.get(
                f"{stack.api_url}/v1/object_info/FleetInvertImage", headers=headers, timeout=30
            )
            assert described.status_code == 200, described.text
            info = described.json()["FleetInvertImage"]
            assert info["python_module"] == f"custom_nodes.{NODE_PACKAGE}"
            graph = {
                "1": {
                    "class_type": "EmptyImage",
                    "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 0},
                },
                "2": {"class_type": "FleetInvertImage", "inputs": {"image": ["1", 0]}},
                "3": {
                    "class_type": "SaveImage",
                    "inputs": {"images": ["2", 0], "filename_prefix": "fleet"},
                },
            }
            with Client(stack.api_url, stack.user_key) as user:
                job = user.wait(user.submit(graph)["job_id"], timeout=120)
            assert job["status"] == "completed", job
            image = fetch_png(job["outputs"]["images"][0]).convert("RGB")
            assert image.size == (32, 32) and image.getpixel((0, 0)) == (255, 255, 255)
    finally:
        starter.join(timeout=5)
        for process in comfy:
            process.terminate()
            process.wait(timeout=30)
        log.close()
