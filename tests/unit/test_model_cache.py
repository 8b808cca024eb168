"""The model cache: budget, LRU eviction, pins, links, single-flight and restart recovery."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import time
from collections import namedtuple
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from comfyfleet.workflow.refs import ModelRef, ref_for_url
from gpu_agent.cache import CacheError, LinkConflict, ModelCache
from gpu_agent.sources import Fetched, IntegrityMismatch, OriginUnavailable, Source

KiB = 1024


def model_ref(n: int, size: int | None = None, folder: str = "checkpoints") -> ModelRef:
    url = f"https://huggingface.co/org/model{n}/resolve/main/model{n}.safetensors"
    if folder == "input":
        url = f"https://huggingface.co/org/images/resolve/main/image{n}.png"
    return replace(ref_for_url(url, folder), size=size)


def content(ref: ModelRef, size: int) -> bytes:
    """The bytes a fake origin serves for ``ref``: deterministic per key."""
    return (hashlib.sha256(ref.key.encode()).digest() * (size // 32 + 1))[:size]


class FakeSource:
    """Writes each model's bytes and counts fetches; can stall, fail or lie."""

    def __init__(self, sizes: dict[str, int]) -> None:
        self.sizes = sizes  # by key
        self.fetches: list[str] = []
        self.gate: threading.Event | None = None
        self.started = threading.Event()
        self.corrupt = False
        self.fail: Exception | None = None
        self._lock = threading.Lock()

    def fetch(self, ref: ModelRef, dest: Path) -> Fetched:
        with self._lock:
            self.fetches.append(ref.key)
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        if self.fail is not None:
            raise self.fail
        data = content(ref, self.sizes[ref.key])
        if self.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        dest.write_bytes(data)
        return Fetched(len(data), hashlib.sha256(data).hexdigest(), Source.ORIGIN, 0.01)


class Ticks:
    """A clock that moves one second per reading, so every use is ordered."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


Dirs = namedtuple("Dirs", "cache comfy")


@pytest.fixture
def dirs(tmp_path: Path) -> Dirs:
    return Dirs(tmp_path / "cache", tmp_path / "comfy")


def open_cache(
    dirs: Dirs, source: FakeSource, budget: int, clock: Ticks | None = None
) -> ModelCache:
    return ModelCache(dirs.cache, budget, dirs.comfy, source, clock=clock or Ticks())


def source_for(*refs: ModelRef) -> FakeSource:
    return FakeSource({ref.key: ref.size or 10 * KiB for ref in refs})


def link_of(dirs: Dirs, ref: ModelRef) -> Path:
    folder = dirs.comfy / "input" if ref.folder == "input" else dirs.comfy / "models" / ref.folder
    return folder / ref.filename


# -- examples ------------------------------------------------------------------------------


def test_ensure_downloads_links_and_maps_url_to_file_name(dirs: Dirs) -> None:
    ckpt, image = model_ref(1, 10 * KiB), model_ref(2, 3 * KiB, folder="input")
    cache = open_cache(dirs, source_for(ckpt, image), budget=100 * KiB)

    names = cache.ensure([ckpt, image], pin="job-1")

    assert names == {ckpt.url: ckpt.filename, image.url: image.filename}
    assert link_of(dirs, ckpt).read_bytes() == content(ckpt, 10 * KiB)
    assert link_of(dirs, image).resolve() == (dirs.cache / "objects" / image.key).resolve()
    report = cache.report()
    assert report.keys == {ckpt.key, image.key}
    assert (report.used_bytes, report.misses, report.hits, report.downloads) == (13 * KiB, 2, 0, 2)


def test_a_second_ensure_is_a_hit(dirs: Dirs) -> None:
    ref = model_ref(1, 10 * KiB)
    source = source_for(ref)
    cache = open_cache(dirs, source, budget=100 * KiB)
    cache.ensure([ref], pin="a")
    cache.release("a")

    cache.ensure([ref], pin="b")

    assert source.fetches == [ref.key]
    assert (cache.report().hits, cache.report().misses) == (1, 1)


def test_least_recently_used_is_evicted_first(dirs: Dirs) -> None:
    a, b, c, d = (model_ref(n, 10 * KiB) for n in range(4))
    cache = open_cache(dirs, source_for(a, b, c, d), budget=30 * KiB)
    for ref in (a, b, c):
        cache.ensure([ref])
    cache.ensure([a])  # a is now the most recently used; b the least

    cache.ensure([d])

    assert cache.report().keys == {a.key, c.key, d.key}
    assert not os.path.lexists(link_of(dirs, b))
    assert not (dirs.cache / "objects" / b.key).exists()


def test_pinned_files_are_never_evicted_and_may_exceed_the_budget(dirs: Dirs) -> None:
    a, b, big = model_ref(1, 10 * KiB), model_ref(2, 10 * KiB), model_ref(3, 50 * KiB)
    cache = open_cache(dirs, source_for(a, b, big), budget=30 * KiB)
    cache.ensure([a, b], pin="job-1")

    cache.ensure([big], pin="job-2")

    assert cache.report().keys == {a.key, b.key, big.key}  # 70 KiB, all pinned
    assert cache.report().used_bytes == 70 * KiB
    assert cache.report().free_bytes == 0
    cache.release("job-1")
    assert cache.report().keys == {big.key}  # evicted as soon as released
    cache.release("job-2")
    assert cache.report().keys == set()


def test_concurrent_ensures_of_one_key_download_once(dirs: Dirs) -> None:
    ref = model_ref(1, 64 * KiB)
    source = source_for(ref)
    source.gate = threading.Event()
    cache = open_cache(dirs, source, budget=1024 * KiB)
    results: list[dict[str, str]] = []
    errors: list[BaseException] = []

    def ensure(job: str) -> None:
        try:
            results.append(cache.ensure([ref], pin=job))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ensure, args=(f"job-{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    assert source.started.wait(5)
    source.gate.set()
    for thread in threads:
        thread.join(10)

    assert errors == []
    assert source.fetches == [ref.key]
    assert results == [{ref.url: ref.filename}] * 8
    assert cache.report().pinned_keys == {ref.key}


def test_a_failed_download_fails_every_waiter_and_is_retried_later(dirs: Dirs) -> None:
    ref = model_ref(1, 10 * KiB)
    source = source_for(ref)
    source.gate, source.fail = threading.Event(), OriginUnavailable("origin down")
    cache = open_cache(dirs, source, budget=100 * KiB)
    errors: list[BaseException] = []

    def ensure() -> None:
        try:
            cache.ensure([ref])
        except OriginUnavailable as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ensure) for _ in range(4)]
    for thread in threads:
        thread.start()
    assert source.started.wait(5)
    # Fail the download only once all four wait on it (a caller arriving after the failure
    # would rightly try again, and a slow thread start must not make that happen).
    deadline = time.monotonic() + 10
    while cache.report().misses < 4:
        assert time.monotonic() < deadline, "the callers never all asked"
        time.sleep(0.01)
    source.gate.set()
    for thread in threads:
        thread.join(10)
    assert len(errors) == 4 and len(source.fetches) == 1

    source.fail = None
    cache.ensure([ref])
    assert len(source.fetches) == 2 and cache.report().keys == {ref.key}


@pytest.mark.parametrize("lie", ["hash", "size"])
def test_a_file_that_does_not_match_its_reference_is_never_cached(dirs: Dirs, lie: str) -> None:
    ref = model_ref(1, 10 * KiB)
    good = content(ref, 10 * KiB)
    ref = replace(ref, sha256=hashlib.sha256(good).hexdigest())
    source = source_for(ref)
    if lie == "hash":
        source.corrupt = True
    else:
        source.sizes[ref.key] = 9 * KiB
    cache = open_cache(dirs, source, budget=100 * KiB)

    with pytest.raises(IntegrityMismatch):
        cache.ensure([ref], pin="job")

    assert cache.report().keys == set()
    assert not os.path.lexists(link_of(dirs, ref))
    assert list((dirs.cache / "objects").iterdir()) == []
    assert list((dirs.cache / "tmp").iterdir()) == []


def test_unsafe_references_are_refused_before_any_download(dirs: Dirs) -> None:
    ref = model_ref(1, 10 * KiB)
    source = source_for(ref)
    cache = open_cache(dirs, source, budget=100 * KiB)
    for bad in (
        replace(ref, filename="../../escape.safetensors"),
        replace(ref, key="../" + ref.key[3:]),
        replace(ref, folder="custom_nodes"),
    ):
        with pytest.raises(CacheError):
            cache.ensure([bad])
    assert source.fetches == []


def test_a_name_taken_by_a_regular_file_is_a_conflict(dirs: Dirs) -> None:
    ref = model_ref(1, 10 * KiB)
    link = link_of(dirs, ref)
    link.parent.mkdir(parents=True)
    link.write_bytes(b"operator's own file")
    cache = open_cache(dirs, source_for(ref), budget=100 * KiB)

    with pytest.raises(LinkConflict):
        cache.ensure([ref])

    assert link.read_bytes() == b"operator's own file"


def test_a_name_held_by_another_pinned_model_is_a_conflict(dirs: Dirs) -> None:
    a, b = model_ref(1, 10 * KiB), model_ref(2, 10 * KiB)
    b = replace(b, filename=a.filename)
    cache = open_cache(dirs, source_for(a, b), budget=100 * KiB)
    cache.ensure([a], pin="running")

    with pytest.raises(LinkConflict):
        cache.ensure([b], pin="next")

    cache.release("running")
    cache.ensure([b], pin="next")  # free again: the name now shows b
    assert link_of(dirs, a).read_bytes() == content(b, 10 * KiB)


def test_free_bytes_are_capped_by_the_disk(dirs: Dirs, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = open_cache(dirs, FakeSource({}), budget=10**12)
    usage = shutil.disk_usage(dirs.cache)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=12345))
    assert cache.report().free_bytes == 12345


def test_restart_recovers_records_links_and_lru_order(dirs: Dirs) -> None:
    a, b, c, d = (model_ref(n, 10 * KiB) for n in range(4))
    source, clock = source_for(a, b, c, d), Ticks()
    cache = open_cache(dirs, source, budget=30 * KiB, clock=clock)
    cache.ensure([a, b, c])
    cache.ensure([a])  # b is now the least recently used
    cache.close()

    cache = open_cache(dirs, source, budget=30 * KiB, clock=clock)
    assert cache.report().keys == {a.key, b.key, c.key}
    assert link_of(dirs, b).is_file()
    cache.ensure([d])

    assert cache.report().keys == {a.key, c.key, d.key}
    assert not os.path.lexists(link_of(dirs, b))
    assert len(source.fetches) == 4


def test_restart_deletes_partial_corrupt_orphan_and_dangling(dirs: Dirs) -> None:
    keep, truncated, flipped = (model_ref(n, 10 * KiB) for n in range(3))
    source = source_for(keep, truncated, flipped)
    cache = open_cache(dirs, source, budget=100 * KiB)
    cache.ensure([keep, truncated, flipped])
    cache.close()
    objects = dirs.cache / "objects"
    with (objects / truncated.key).open("r+b") as file:
        file.truncate(5 * KiB)
    data = bytearray((objects / flipped.key).read_bytes())
    data[100] ^= 0xFF
    (objects / flipped.key).write_bytes(bytes(data))
    (dirs.cache / "tmp" / f"{'e' * 64}.1234.part").write_bytes(b"half a download")
    (objects / ("f" * 64)).write_bytes(b"an object without a record")
    loras = dirs.comfy / "models" / "loras"
    loras.mkdir(parents=True)
    (loras / "gone.safetensors").symlink_to(objects / ("d" * 64))
    (loras / "operator.safetensors").symlink_to("/opt/models/operator.safetensors")

    cache = open_cache(dirs, source, budget=100 * KiB)

    assert cache.report().keys == {keep.key}
    assert sorted(p.name for p in objects.iterdir()) == [keep.key]
    assert list((dirs.cache / "tmp").iterdir()) == []
    assert link_of(dirs, keep).is_file()
    assert not os.path.lexists(link_of(dirs, truncated))
    assert not os.path.lexists(link_of(dirs, flipped))
    assert not os.path.lexists(loras / "gone.safetensors")
    assert os.path.islink(loras / "operator.safetensors")  # not ours: left alone
    cache.ensure([truncated])  # fetched again, whole
    assert link_of(dirs, truncated).read_bytes() == content(truncated, 10 * KiB)


def test_an_unreadable_index_starts_empty_and_drops_unvouched_objects(dirs: Dirs) -> None:
    ref = model_ref(1, 10 * KiB)
    cache = open_cache(dirs, source_for(ref), budget=100 * KiB)
    cache.ensure([ref])
    cache.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{dirs.cache / 'index.sqlite3'}{suffix}").unlink(missing_ok=True)
    (dirs.cache / "index.sqlite3").write_bytes(b"this is not a database" * 100)

    cache = open_cache(dirs, source_for(ref), budget=100 * KiB)

    assert cache.report().keys == set()
    assert not os.path.lexists(link_of(dirs, ref))


def test_prefetch_without_a_pin_is_evictable_afterwards(dirs: Dirs) -> None:
    a, b = model_ref(1, 20 * KiB), model_ref(2, 20 * KiB)
    cache = open_cache(dirs, source_for(a, b), budget=30 * KiB)
    cache.ensure([a])
    assert cache.report().pinned_keys == set()
    cache.ensure([b], pin="job")
    assert cache.report().keys == {b.key}


# -- the stateful model --------------------------------------------------------------------

SIZES = [8 * KiB, 12 * KiB, 16 * KiB, 20 * KiB, 24 * KiB, 4 * KiB, 48 * KiB]
BUDGET = 48 * KiB
REFS = [model_ref(n, size) for n, size in enumerate(SIZES)]
REFS[1] = replace(REFS[1], sha256=hashlib.sha256(content(REFS[1], SIZES[1])).hexdigest())
REFS.append(replace(model_ref(20, 6 * KiB, folder="input")))
REFS.append(replace(REFS[0], filename="alias-of-model0.safetensors", folder="loras"))
SIZE_BY_KEY = {ref.key: ref.size or 0 for ref in REFS}
JOBS = ["job-a", "job-b", None]


class CacheMachine(RuleBasedStateMachine):
    """The cache against a reference model of LRU-with-pins, across restarts and damage."""

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="cache-machine-"))
        self.dirs = Dirs(self.root / "cache", self.root / "comfy")
        self.source = FakeSource(dict(SIZE_BY_KEY))
        self.clock = Ticks()
        self.cache = open_cache(self.dirs, self.source, BUDGET, self.clock)
        self.order: list[str] = []  # least recently used first
        self.pins: dict[str, set[str]] = {}
        self.links: dict[Path, str] = {}  # link -> key it must show

    def teardown(self) -> None:
        self.cache.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def _pinned(self) -> set[str]:
        return set().union(*self.pins.values()) if self.pins else set()

    def _evict(self) -> None:
        while sum(SIZE_BY_KEY[k] for k in self.order) > BUDGET:
            victim = next((k for k in self.order if k not in self._pinned()), None)
            if victim is None:
                return
            self.order.remove(victim)
            self.links = {link: key for link, key in self.links.items() if key != victim}

    @rule(
        job=st.sampled_from(JOBS),
        picks=st.lists(st.integers(0, len(REFS) - 1), min_size=1, max_size=3),
    )
    def ensure(self, job: str | None, picks: list[int]) -> None:
        refs = [REFS[i] for i in picks]
        names = self.cache.ensure(refs, pin=job)
        assert names == {ref.url: ref.filename for ref in refs}
        holder = job or "prefetch"
        for ref in refs:
            self.pins.setdefault(holder, set()).add(ref.key)
            if ref.key in self.order:
                self.order.remove(ref.key)
            self.order.append(ref.key)
            self._evict()
            self.links[link_of(self.dirs, ref)] = ref.key
        if job is None:
            del self.pins[holder]
        self._evict()

    @rule(job=st.sampled_from(JOBS[:2]))
    def release(self, job: str) -> None:
        self.cache.release(job)
        self.pins.pop(job, None)
        self._evict()

    @rule()
    def restart(self) -> None:
        self.cache.close()
        self.cache = open_cache(self.dirs, self.source, BUDGET, self.clock)
        self.pins.clear()
        self._evict()

    @precondition(lambda self: bool(self.order))
    @rule(data=st.data(), damage=st.sampled_from(["truncate", "flip", "delete"]))
    def damage_then_restart(self, data: st.DataObject, damage: str) -> None:
        key = data.draw(st.sampled_from(self.order))
        path = self.dirs.cache / "objects" / key
        self.cache.close()
        if damage == "truncate":
            os.truncate(path, SIZE_BY_KEY[key] // 2)
        elif damage == "flip":
            blob = bytearray(path.read_bytes())
            blob[-1] ^= 0x01
            path.write_bytes(bytes(blob))
        else:
            path.unlink()
        self.cache = open_cache(self.dirs, self.source, BUDGET, self.clock)
        self.pins.clear()
        self.order.remove(key)
        self.links = {link: k for link, k in self.links.items() if k != key}
        self._evict()

    @rule()
    def litter_then_restart(self) -> None:
        self.cache.close()
        (self.dirs.cache / "tmp" / "partial.part").write_bytes(b"x" * 100)
        (self.dirs.cache / "objects" / ("0" * 64)).write_bytes(b"orphan")
        vae = self.dirs.comfy / "models" / "vae"
        vae.mkdir(parents=True, exist_ok=True)
        dangling = vae / "dangling.safetensors"
        if not os.path.lexists(dangling):
            dangling.symlink_to(self.dirs.cache.resolve() / "objects" / ("1" * 64))
        self.cache = open_cache(self.dirs, self.source, BUDGET, self.clock)
        self.pins.clear()
        self._evict()

    @invariant()
    def cache_matches_the_model(self) -> None:
        report = self.cache.report()
        assert report.keys == set(self.order)
        assert report.used_bytes == sum(SIZE_BY_KEY[k] for k in self.order)
        assert report.pinned_keys == self._pinned()

    @invariant()
    def over_budget_only_for_pinned_files(self) -> None:
        report = self.cache.report()
        assert report.used_bytes <= BUDGET or report.keys <= report.pinned_keys

    @invariant()
    def disk_holds_exactly_the_cached_objects(self) -> None:
        objects = self.dirs.cache / "objects"
        assert {p.name for p in objects.iterdir()} == set(self.order)
        for key in self.order:
            assert (objects / key).stat().st_size == SIZE_BY_KEY[key]
        assert list((self.dirs.cache / "tmp").iterdir()) == []

    @invariant()
    def links_show_cached_files_and_nothing_else(self) -> None:
        objects = (self.dirs.cache / "objects").resolve()
        for link, key in self.links.items():
            assert link.resolve() == objects / key
        for folder in (self.dirs.comfy / "models", self.dirs.comfy / "input"):
            for link in _links_under(folder):
                assert link.exists(), f"dangling link {link}"


def _links_under(folder: Path) -> Iterator[Path]:
    if folder.exists():
        yield from (path for path in folder.rglob("*") if path.is_symlink())


TestCacheMachine = CacheMachine.TestCase
TestCacheMachine.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
