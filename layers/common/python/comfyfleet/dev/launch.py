"""Start ``comfyfleet dev`` as a child process and wait until it is up: for the end-to-end
tests, the benchmarks and ``make demo``.

    with launch_dev_stack(tmp_path, agents=2, env={"COMFYFLEET_LEASE_SECONDS": "3"}) as stack:
        Client(stack.api_url, stack.user_key).submit(graph)

The stack runs in its own process group; leaving the block stops it with SIGTERM (it stops
its agents and fakecomfy servers), then kills whatever is left in its group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfyfleet.dev.stack import STATE_FILE


class LaunchError(RuntimeError):
    """The stack exited or did not come up in time; the message carries its output."""


@dataclass
class RunningStack:
    info: dict[str, Any]
    process: subprocess.Popen[bytes]
    state_dir: Path

    @property
    def api_url(self) -> str:
        return str(self.info["api_url"])

    @property
    def user_key(self) -> str:
        return str(self.info["user_key"])

    @property
    def admin_key(self) -> str:
        return str(self.info["admin_key"])

    @property
    def agents(self) -> list[dict[str, Any]]:
        return list(self.info["agents"])

    def log(self, name: str) -> str:
        """A log of the stack (``stack``, ``dev-node-1``, ``fakecomfy-1``…)."""
        path = self.state_dir / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextmanager
def launch_dev_stack(
    state_dir: Path,
    *,
    agents: int = 1,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    allow_local_urls: bool = True,
    timeout: float = 120.0,
) -> Iterator[RunningStack]:
    """A dev stack on ephemeral ports, up until the block ends."""
    state_dir.mkdir(parents=True, exist_ok=True)
    state_file = state_dir / STATE_FILE
    state_file.unlink(missing_ok=True)
    argv = [
        sys.executable,
        "-m",
        "comfyfleet.cli",
        "dev",
        "--port",
        "0",
        "--agents",
        str(agents),
        "--state-dir",
        str(state_dir),
        *(["--allow-local-urls"] if allow_local_urls else []),
        *args,
    ]
    output = state_dir / "stack.out"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            argv,
            env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        info = _wait_for(state_file, process, output, timeout)
        yield RunningStack(info, process, state_dir)
    finally:
        _stop(process)


def _wait_for(
    state_file: Path, process: subprocess.Popen[bytes], output: Path, timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if state_file.exists():
            info: dict[str, Any] = json.loads(state_file.read_text())
            return info
        if process.poll() is not None:
            raise LaunchError(
                f"the dev stack exited with code {process.returncode}:\n"
                + output.read_text(errors="replace")[-4000:]
            )
        time.sleep(0.1)
    raise LaunchError(
        f"the dev stack was not up after {timeout:.0f} s:\n"
        + output.read_text(errors="replace")[-4000:]
    )


def _stop(process: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # anything left in its group
    except (ProcessLookupError, PermissionError):
        pass
    process.wait(timeout=10)
