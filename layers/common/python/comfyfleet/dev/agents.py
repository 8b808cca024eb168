"""The dev stack's agents and their ComfyUI servers: child processes, started again when they
die, as systemd's ``Restart=always`` does for ``comfyui@`` and ``comfyfleet-agent@`` on a node.

Each child comes back on its own (a dead fakecomfy does not take its agent with it: the agent
finds ComfyUI gone, takes nothing, and carries on once it answers again), after a delay that
doubles with each quick death, as systemd's restart backoff does.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from comfyfleet.dev.processes import ChildProcess, free_port

logger = logging.getLogger("devstack." + __name__.rsplit(".", 1)[-1])

FIRST_DELAY_SECONDS = 1.0
MAX_DELAY_SECONDS = 30.0
STABLE_SECONDS = 60.0  # up this long: the next death starts from the first delay again


class Target(Protocol):
    """A ComfyUI an agent drives (comfyfleet.dev.stack.ComfyTarget)."""

    @property
    def url(self) -> str: ...
    @property
    def root(self) -> Path: ...


@dataclass
class AgentProcess:
    node_id: str
    comfy_url: str
    comfy_root: Path
    cache_dir: Path
    process: ChildProcess
    comfy: ChildProcess | None = None
    restarts: int = 0

    def describe(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "pid": self.process.pid,
            "comfy_url": self.comfy_url,
            "comfy_pid": self.comfy.pid if self.comfy else None,
            "comfy_root": str(self.comfy_root),
            "cache_dir": str(self.cache_dir),
            "log": str(self.process.log_path),
            "restarts": self.restarts,
        }


@dataclass(frozen=True)
class AgentLayout:
    """Where the agents live and what they are given."""

    state_dir: Path
    logs: Path
    env: Mapping[str, str]
    shared_cache: bool
    step_seconds: float


def start_agents(targets: Sequence[Target | None], layout: AgentLayout) -> list[AgentProcess]:
    """One agent per target; None: a fakecomfy of its own, started first."""
    agents = []
    for index, target in enumerate(targets, start=1):
        node_id = f"dev-node-{index}"
        home = layout.state_dir / "nodes" / node_id
        cache = layout.state_dir / "shared-cache" if layout.shared_cache else home / "cache"
        comfy: ChildProcess | None = None
        url, root = (target.url, target.root) if target else ("", home / "comfyui")
        if target is None:
            port = free_port()
            comfy = _fakecomfy(index, port, root, layout)
            url = f"http://127.0.0.1:{port}"
        env = {
            **layout.env,
            "COMFYFLEET_NODE_ID": node_id,
            "COMFYFLEET_ON_EC2": "false",  # no requests to the metadata address here
            "COMFYFLEET_COMFY_URL": url,
            "COMFYFLEET_COMFY_ROOT": str(root),
            "COMFYFLEET_CACHE_DIR": str(cache),
        }
        agent = ChildProcess(
            node_id,
            [sys.executable, "-m", "gpu_agent"],
            env=env,
            log_path=layout.logs / f"{node_id}.log",
        )
        agents.append(AgentProcess(node_id, url, root, cache, agent, comfy))
    return agents


def _fakecomfy(index: int, port: int, root: Path, layout: AgentLayout) -> ChildProcess:
    return ChildProcess(
        f"fakecomfy-{index}",
        [
            sys.executable,
            "-m",
            "comfyfleet.cli",
            "fakecomfy",
            "--port",
            str(port),
            "--root",
            str(root),
            "--step-seconds",
            str(layout.step_seconds),
            "--previews",
        ],
        env=layout.env,
        log_path=layout.logs / f"fakecomfy-{index}.log",
    )


@dataclass
class _Pending:
    due: float
    delay: float


@dataclass
class Supervisor:
    """Starts a dead child again after its backoff delay; ``check`` once a second."""

    agents: list[AgentProcess]
    clock: Callable[[], float] = time.monotonic
    _pending: dict[str, _Pending] = field(default_factory=dict)
    _delays: dict[str, float] = field(default_factory=dict)

    def check(self) -> list[str]:
        """The children started again in this check (their new pids are in ``agents``)."""
        restarted = []
        for agent in self.agents:
            for part in ("comfy", "process"):  # ComfyUI before its agent, as the units
                child: ChildProcess | None = getattr(agent, part)
                if child is None or child.alive():
                    continue
                if self._due(child):
                    fresh = child.respawn()
                    setattr(agent, part, fresh)
                    agent.restarts += 1
                    restarted.append(child.name)
                    logger.warning("%s started again (pid %d)", child.name, fresh.pid)
        return restarted

    def _due(self, child: ChildProcess) -> bool:
        """Whether the dead ``child`` is to start now; schedules it at its first sight."""
        pending = self._pending.get(child.name)
        now = self.clock()
        if pending is None:
            lived = now - child.started_at
            last = self._delays.get(child.name, 0.0)
            delay = (
                FIRST_DELAY_SECONDS
                if lived >= STABLE_SECONDS or not last
                else min(MAX_DELAY_SECONDS, last * 2)
            )
            self._delays[child.name] = delay
            self._pending[child.name] = _Pending(now + delay, delay)
            logger.warning(
                "%s (pid %d) exited with code %s after %.0f s; starting it again in %.0f s "
                "(as systemd's Restart=always); log: %s",
                child.name,
                child.pid,
                child.popen.returncode,
                lived,
                delay,
                child.log_path,
            )
            return False
        if now < pending.due:
            return False
        del self._pending[child.name]
        return True
