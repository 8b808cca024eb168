"""Two agent processes of one multi-GPU instance on one model cache, against a loopback origin.

Each child process (multiprocessing "spawn": a fresh interpreter, as systemd starts each GPU's
agent) opens a ModelCache on the shared directory with its own ComfyUI folder and downloads
through the agent's own source chain (no S3 mirror here). The origin counts GETs, and holds
its answer until the second agent is seen waiting on the model's lock in /proc/locks, so
both ask at once.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from comfyfleet.netguard import OutboundClient
from comfyfleet.workflow.refs import ModelRef, ref_for_url
from gpu_agent.cache import ModelCache
from gpu_agent.origin import OriginDownloader
from gpu_agent.sources import ModelSources
from tests.origin_server import OriginServer

MiB = 1024 * 1024
BUDGET = 6 * MiB


def blob(size: int, seed: int) -> bytes:
    block = b"".join(hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(2048))
    return (block * (size // len(block) + 1))[:size]


def _agent(cache_dir: str, name: str, commands: Any, replies: Any) -> None:
    """One GPU's agent's cache, driven by (verb, *args) commands until "stop"."""
    http = OutboundClient(allow_loopback=True, timeout=(5, 30))
    source = ModelSources(OriginDownloader(http, sleep=lambda seconds: None))  # no mirror
    root = Path(cache_dir).parent / name
    cache = ModelCache(Path(cache_dir), BUDGET, root, source, node_id=name)
    replies.put("ready")
    while True:
        verb, *args = commands.get()
        if verb == "stop":
            break
        if verb == "ensure":
            refs, job = args
            replies.put(cache.ensure(refs, pin=job))
        elif verb == "release":
            cache.release(args[0])
            replies.put(None)
        elif verb == "report":
            report = cache.report()
            replies.put((set(report.keys), set(report.pinned_keys), report.downloads))
    cache.close()
    source.close()
    http.close()
    replies.put("stopped")


class Agent:
    """The parent's handle on one child agent."""

    def __init__(self, context: Any, cache_dir: Path, name: str) -> None:
        self.name, self.root = name, cache_dir.parent / name
        self.commands, self.replies = context.Queue(), context.Queue()
        self.process = context.Process(
            target=_agent, args=(str(cache_dir), name, self.commands, self.replies), daemon=True
        )
        self.process.start()

    def send(self, *command: Any) -> None:
        self.commands.put(command)

    def answer(self) -> Any:
        return self.replies.get(timeout=60)

    def call(self, *command: Any) -> Any:
        self.send(*command)
        return self.answer()

    def link(self, ref: ModelRef) -> Path:
        return self.root / "models" / ref.folder / ref.filename


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[list[Agent]]:
    context = multiprocessing.get_context("spawn")
    started = [Agent(context, tmp_path / "cache", name) for name in ("gpu0", "gpu1")]
    for agent in started:
        assert agent.answer() == "ready"
    yield started
    for agent in started:
        if agent.process.is_alive():
            agent.send("stop")
            agent.process.join(10)
        if agent.process.is_alive():
            agent.process.kill()


def flock_waiters(path: Path) -> int | None:
    """Processes blocked on a flock of ``path`` (/proc/locks "->" lines); None off Linux."""
    try:
        table = Path("/proc/locks").read_text()
    except OSError:
        return None
    inode = str(path.stat().st_ino)
    return sum(
        1
        for line in table.splitlines()
        if "->" in line.split() and "FLOCK" in line and line.split()[-3].split(":")[-1] == inode
    )


def until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_two_agents_download_a_model_once_and_never_evict_a_pinned_file(
    agents: list[Agent], tmp_path: Path
) -> None:
    gpu0, gpu1 = agents
    hold = threading.Event()
    with OriginServer() as origin:
        first_data, second_data = blob(4 * MiB, seed=1), blob(4 * MiB, seed=2)
        first = replace(
            ref_for_url(origin.add("/first.safetensors", first_data, hold=hold), "checkpoints"),
            size=len(first_data),
        )
        second = replace(
            ref_for_url(origin.add("/second.safetensors", second_data), "checkpoints"),
            size=len(second_data),
        )

        # Both ask at once: one GET, held until the other agent waits on the model's lock.
        gpu0.send("ensure", [first], "job-0")
        gpu1.send("ensure", [first], "job-1")
        until(lambda: len(origin.requests_for("/first.safetensors")) >= 1, "no download began")
        model_lock = tmp_path / "cache" / "locks" / "models" / f"{first.key}.lock"
        until(lambda: flock_waiters(model_lock) != 0, "the other agent never waited")
        hold.set()
        assert gpu0.answer() == gpu1.answer() == {first.url: first.filename}

        assert len(origin.requests_for("/first.safetensors")) == 1
        downloads = [agent.call("report")[2] for agent in agents]
        assert sorted(downloads) == [0, 1]
        assert gpu0.link(first).read_bytes() == gpu1.link(first).read_bytes() == first_data

        # GPU 0's next job needs room (4 + 4 MiB > 6 MiB); the first model is GPU 1's, in use.
        gpu0.call("release", "job-0")
        assert gpu0.call("ensure", [second], "job-2") == {second.url: second.filename}
        keys, pinned, _ = gpu1.call("report")
        assert keys == pinned == {first.key, second.key}  # over budget while both jobs run
        assert gpu1.link(first).read_bytes() == first_data

        # GPU 1's job ends: now the first model is the one to go, from both ComfyUI folders.
        gpu1.call("release", "job-1")
        keys, pinned, _ = gpu0.call("report")
        assert keys == pinned == {second.key}
        assert not os.path.lexists(gpu0.link(first)) and not os.path.lexists(gpu1.link(first))
        assert sorted(p.name for p in (tmp_path / "cache" / "objects").iterdir()) == [second.key]
        assert len(origin.requests_for("/second.safetensors")) == 1
