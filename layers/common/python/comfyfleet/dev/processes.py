"""Child processes of the dev stack (agents, fakecomfy servers), each in its own process group.

Own groups, so that a Ctrl-C in the terminal reaches only the stack, which then stops its
children in order, and so that stopping a child stops whatever it started. On Linux each
child also gets ``PR_SET_PDEATHSIG``: if the stack itself is killed outright, its children
are told to stop rather than left behind.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

# Not under "comfyfleet": the handlers hand that logger tree to Powertools when they start.
logger = logging.getLogger("devstack." + __name__.rsplit(".", 1)[-1])

_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the OS's pick), for a child to bind."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _own_group_and_death_signal() -> None:  # runs in the child, between fork and exec
    os.setpgid(0, 0)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ChildProcess:
    """One child process with its output in a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        log_path: Path,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_path
        self.argv, self.env, self.cwd = list(argv), dict(env), cwd
        self.started_at = time.monotonic()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_own_group_and_death_signal,  # noqa: PLW1509 (spawned from the main thread)
            )

    def respawn(self) -> ChildProcess:
        """The same command started again, its output appended to the same log."""
        return ChildProcess(
            self.name, self.argv, env=self.env, log_path=self.log_path, cwd=self.cwd
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the child's process group (if it still exists)."""
        try:
            os.killpg(self.popen.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM the group, wait up to ``grace`` seconds, then SIGKILL it."""
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop in %.0f s: killed", self.name, grace)
        # Whatever the child started is in its group: end that too.
        self.signal(signal.SIGKILL)
        try:
            return self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def stop_all(children: Sequence[ChildProcess], grace: float = 10.0) -> None:
    """Stop several children at once: SIGTERM all, then wait for each within one grace."""
    for child in children:
        child.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in children:
        try:
            child.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop in %.0f s: killed", child.name, grace)
    for child in children:
        child.signal(signal.SIGKILL)
        try:
            child.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            logger.error("%s (pid %d) would not die", child.name, child.pid)
