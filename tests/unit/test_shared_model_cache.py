"""One model cache shared by the agents of a multi-GPU instance: two ModelCache on one dir.

Two caches in one process exclude each other as two processes do (each holds its own flock
descriptors); the dead-agent cases run a real child process and kill it.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from comfyfleet.workflow.refs import ModelRef
from gpu_agent.cache import ModelCache
from gpu_agent.sources import Fetched, Source
from tests.unit.test_model_cache import FakeSource, KiB, content, model_ref, source_for


class StallingSource:
    """Writes half of ``stall``'s file, sets ``stalled``, then waits for ``gate`` (None:
    forever, until its process is killed). Other models are written whole."""

    def __init__(self, stall: ModelRef, stalled: Any, gate: threading.Event | None) -> None:
        self.stall, self.stalled, self.gate = stall, stalled, gate

    def fetch(self, ref: ModelRef, dest: Path) -> Fetched:
        data = content(ref, ref.size or 10 * KiB)
        with dest.open("wb") as file:
            if ref.key == self.stall.key:
                file.write(data[: len(data) // 2])
                file.flush()
                self.stalled.set()
                if self.gate is None:
                    threading.Event().wait()
                assert self.gate.wait(10)
                file.write(data[len(data) // 2 :])
            else:
                file.write(data)
        return Fetched(len(data), hashlib.sha256(data).hexdigest(), Source.ORIGIN, 0.01)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def open_agent(cache_dir: Path, name: str, source: Any, budget: int) -> ModelCache:
    """One GPU's agent's cache: the shared dir, its own ComfyUI folder."""
    return ModelCache(cache_dir, budget, cache_dir.parent / name, source, node_id=name)


def link(cache: ModelCache, ref: ModelRef) -> Path:
    return cache.folders.path(ref.folder) / ref.filename


@pytest.fixture
def two() -> Iterator[list[ModelCache]]:
    """Caches the test opens, closed at the end."""
    opened: list[ModelCache] = []
    yield opened
    for cache in opened:
        cache.close()


def test_a_pin_is_seen_by_another_agent_until_released_or_closed(
    cache_dir: Path, two: list[ModelCache]
) -> None:
    a, b = model_ref(1, 10 * KiB), model_ref(2, 10 * KiB)
    source = source_for(a, b)
    gpu0 = open_agent(cache_dir, "gpu0", source, 100 * KiB)
    gpu1 = open_agent(cache_dir, "gpu1", source, 100 * KiB)
    two += [gpu0, gpu1]

    gpu0.ensure([a], pin="job-0")
    gpu1.ensure([b], pin="job-1")

    assert gpu1.report().pinned_keys == {a.key, b.key}
    assert gpu1.report().keys == gpu0.report().keys == {a.key, b.key}
    gpu0.release("job-0")
    assert gpu1.report().pinned_keys == {b.key}
    gpu1.close()
    assert gpu0.report().pinned_keys == set()


def test_eviction_never_takes_a_file_another_agents_job_pins(
    cache_dir: Path, two: list[ModelCache]
) -> None:
    small, big = model_ref(1, 10 * KiB), model_ref(2, 15 * KiB)
    source = source_for(small, big)
    gpu0 = open_agent(cache_dir, "gpu0", source, 20 * KiB)
    gpu1 = open_agent(cache_dir, "gpu1", source, 20 * KiB)
    two += [gpu0, gpu1]
    gpu0.ensure([small], pin="job-0")  # the least recently used, and in use on GPU 0

    gpu1.ensure([big], pin="job-1")
    assert gpu1.report().keys == {small.key, big.key}  # 25 KiB: over budget while both run
    gpu1.release("job-1")

    assert gpu0.report().keys == {small.key}
    assert link(gpu0, small).read_bytes() == content(small, 10 * KiB)
    assert not os.path.lexists(link(gpu1, big))  # its own link went with the file
    gpu0.release("job-0")
    assert gpu0.report().keys == {small.key}  # within the budget: it stays


def test_an_eviction_by_one_agent_removes_the_others_links_too(
    cache_dir: Path, two: list[ModelCache]
) -> None:
    old, new = model_ref(1, 10 * KiB), model_ref(2, 10 * KiB)
    source = source_for(old, new)
    gpu0 = open_agent(cache_dir, "gpu0", source, 10 * KiB)
    gpu1 = open_agent(cache_dir, "gpu1", source, 10 * KiB)
    two += [gpu0, gpu1]
    gpu0.ensure([old])  # a prefetch: linked on GPU 0, pinned by nobody afterwards

    gpu1.ensure([new])

    assert gpu0.report().keys == {new.key}
    assert not os.path.lexists(link(gpu0, old))  # no dangling link left in GPU 0's ComfyUI


def test_two_agents_asking_at_once_share_one_download(
    cache_dir: Path, two: list[ModelCache]
) -> None:
    ref = model_ref(1, 64 * KiB)
    source = source_for(ref)
    source.gate = threading.Event()
    gpu0 = open_agent(cache_dir, "gpu0", source, 1024 * KiB)
    gpu1 = open_agent(cache_dir, "gpu1", source, 1024 * KiB)
    two += [gpu0, gpu1]
    answers: dict[str, dict[str, str]] = {}

    def ask(cache: ModelCache, job: str) -> None:
        answers[job] = cache.ensure([ref], pin=job)

    first = threading.Thread(target=ask, args=(gpu0, "job-0"))
    first.start()
    assert source.started.wait(5)  # GPU 0 is downloading
    second = threading.Thread(target=ask, args=(gpu1, "job-1"))
    second.start()
    while gpu1.report().misses == 0:  # GPU 1 missed it too, and waits for GPU 0's download
        assert second.is_alive()
        time.sleep(0.01)
    source.gate.set()
    first.join(10)
    second.join(10)

    assert source.fetches == [ref.key]
    assert answers == {"job-0": {ref.url: ref.filename}, "job-1": {ref.url: ref.filename}}
    assert link(gpu1, ref).read_bytes() == content(ref, 64 * KiB)
    assert (gpu0.report().downloads, gpu1.report().downloads) == (1, 0)
    assert gpu1.report().pinned_keys == {ref.key}


def test_a_download_in_progress_on_another_agent_counts_against_the_budget(
    cache_dir: Path, two: list[ModelCache]
) -> None:
    cached, coming, next_one = (
        model_ref(1, 10 * KiB),
        model_ref(2, 20 * KiB),
        model_ref(3, 10 * KiB),
    )
    gate, stalled = threading.Event(), threading.Event()
    gpu0 = open_agent(cache_dir, "gpu0", StallingSource(coming, stalled, gate), 30 * KiB)
    gpu1 = open_agent(cache_dir, "gpu1", source_for(cached, next_one), 30 * KiB)
    two += [gpu0, gpu1]
    gpu1.ensure([cached])
    downloading = threading.Thread(target=gpu0.ensure, args=([coming],), kwargs={"pin": "job-0"})
    downloading.start()
    assert stalled.wait(5)

    gpu1.ensure([next_one], pin="job-1")  # 10 cached + 20 coming + 10: the cached one goes

    assert gpu1.report().keys == {next_one.key}
    gate.set()
    downloading.join(10)
    assert gpu1.report().keys == {coming.key, next_one.key}


def test_a_start_beside_a_live_download_keeps_its_partial_file(
    cache_dir: Path, two: list[ModelCache]
) -> None:
    ref = model_ref(1, 32 * KiB)
    gate, stalled = threading.Event(), threading.Event()
    gpu0 = open_agent(cache_dir, "gpu0", StallingSource(ref, stalled, gate), 100 * KiB)
    two.append(gpu0)
    downloading = threading.Thread(target=gpu0.ensure, args=([ref],), kwargs={"pin": "job-0"})
    downloading.start()
    assert stalled.wait(5)
    (live,) = (cache_dir / "tmp").iterdir()
    (cache_dir / "tmp" / f"{'e' * 64}.dead.part").write_bytes(b"a download nobody makes")
    (cache_dir / "tmp" / "junk").write_bytes(b"not a download")

    source = FakeSource({ref.key: 32 * KiB})
    gpu1 = open_agent(cache_dir, "gpu1", source, 100 * KiB)  # its start-up recovery
    two.append(gpu1)

    assert list((cache_dir / "tmp").iterdir()) == [live]
    gate.set()
    downloading.join(10)
    gpu1.ensure([ref], pin="job-1")
    assert source.fetches == []  # a hit: GPU 0's download, finished
    assert link(gpu1, ref).read_bytes() == content(ref, 32 * KiB)


# -- a dead agent ----------------------------------------------------------------------------

DONE, STUCK = model_ref(1, 10 * KiB), model_ref(2, 10 * KiB)


def _pin_then_hang(cache_dir: str, stalled: Any) -> None:
    """A child agent: pins DONE for a job, then hangs downloading STUCK, until it is killed."""
    cache = open_agent(Path(cache_dir), "gpu1", StallingSource(STUCK, stalled, None), 100 * KiB)
    cache.ensure([DONE], pin="job-1")
    cache.ensure([STUCK], pin="job-2")


def test_a_killed_agents_pins_partial_download_and_lease_are_cleared(
    cache_dir: Path, two: list[ModelCache]
) -> None:
    big = model_ref(3, 95 * KiB)
    gpu0 = open_agent(cache_dir, "gpu0", source_for(big), 100 * KiB)
    two.append(gpu0)
    spawn = multiprocessing.get_context("spawn")
    stalled = spawn.Event()
    child = spawn.Process(target=_pin_then_hang, args=(str(cache_dir), stalled), daemon=True)
    child.start()
    assert stalled.wait(60), "the child agent never started its download"
    assert gpu0.report().pinned_keys == {DONE.key, STUCK.key}

    child.kill()  # SIGKILL: no clean-up of its own
    child.join(10)

    assert gpu0.report().pinned_keys == set()
    assert list((cache_dir / "tmp").iterdir()) == []
    assert [p.stem for p in (cache_dir / "locks" / "agents").iterdir()] == [gpu0.owner]
    gpu0.ensure([big], pin="job-0")  # room only once the dead agent's model goes
    assert gpu0.report().keys == {big.key}
    assert not os.path.lexists(cache_dir.parent / "gpu1" / "models" / "checkpoints" / DONE.filename)
