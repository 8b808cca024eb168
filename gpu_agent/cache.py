"""The node's model cache: model files on local disk, shown to ComfyUI by symlinks.

Layout under ``cache_dir``: ``objects/<model_key>`` (complete, verified files only),
``tmp/`` (downloads in progress), ``index.sqlite3`` (one record per object). A file
reaches ``objects/`` only by rename after it was fetched, checked against the reference's
size and hash, and fsynced; so after a crash the only doubtful things are in ``tmp/``
(deleted at start) and records or objects without their partner (reconciled at start).

Eviction is least-recently-used by whole file, down to a byte budget, and never takes a
file pinned by a job (or one being linked right now): a job's own files may hold the cache
over budget while it runs, and are evicted as soon as it releases them if still needed.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType

from comfyfleet.cache_policy import lru_evictions
from comfyfleet.workflow.refs import FOLDERS, ModelRef
from comfyfleet.workflow.urls import unsafe_name_reason
from gpu_agent.cache_index import CachedModel, CacheIndex
from gpu_agent.comfy_links import ComfyFolders, link_target, place_link, remove_link
from gpu_agent.source_protocol import (
    IntegrityMismatch,
    ModelSource,
    check_integrity,
    file_sha256,
)

logger = logging.getLogger(__name__)

_KEY = re.compile(r"^[0-9a-f]{64}$")


class CacheError(Exception):
    """The cache cannot place a model (bad reference, disk trouble, a name conflict)."""


class LinkConflict(CacheError):
    """A ComfyUI file name the job needs is taken by another file still in use."""


@dataclass(frozen=True, slots=True)
class CacheReport:
    """What the heartbeat publishes about the cache, and counters for metrics."""

    sizes: Mapping[str, int]  # cached model key -> bytes (routing's missing-bytes estimate)
    used_bytes: int
    free_bytes: int  # budget - used, capped by the disk's real free space
    budget_bytes: int
    pinned_keys: frozenset[str]
    hits: int
    misses: int
    downloads: int
    downloaded_bytes: int
    download_seconds: float
    evictions: int

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(self.sizes)

    @property
    def bandwidth(self) -> float | None:
        """Bytes per second this node has downloaded models at, None before any download."""
        if self.download_seconds <= 0:
            return None
        return self.downloaded_bytes / self.download_seconds


class ModelCache:
    """Model files by key, within a byte budget, linked into ComfyUI's folders.

    Thread-safe: the agent may prefetch for the next job while the current one runs.
    """

    def __init__(
        self,
        cache_dir: Path,
        budget_bytes: int,
        comfy_root: Path,
        source: ModelSource,
        *,
        input_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
        verify_hashes_on_start: bool = True,
    ) -> None:
        self.cache_dir = cache_dir.resolve()
        self.objects_dir = self.cache_dir / "objects"
        self.tmp_dir = self.cache_dir / "tmp"
        self.budget_bytes = budget_bytes
        self.folders = ComfyFolders(comfy_root.resolve(), input_dir=input_dir)
        self.source = source
        self._clock = clock
        self._lock = threading.Lock()
        self._models: OrderedDict[str, CachedModel] = OrderedDict()  # least recent first
        self._links: dict[str, set[Path]] = {}
        self._pins: dict[str, set[str]] = {}  # job id -> keys
        self._pin_counts: Counter[str] = Counter()
        self._inflight: dict[str, Future[CachedModel]] = {}
        self._used = 0
        self._stats: Counter[str] = Counter()
        self._download_seconds = 0.0
        self.objects_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._index = CacheIndex(self.cache_dir / "index.sqlite3")
        self._recover(verify_hashes_on_start)

    # -- the agent's calls ---------------------------------------------------------------

    def ensure(self, refs: Iterable[ModelRef], pin: str | None = None) -> dict[str, str]:
        """Make every ref's file present and linked; return {url: local file name}.

        Files are pinned for job ``pin`` until :meth:`release` (also when this raises: the
        agent releases in ``finally``). Without ``pin`` (a prefetch) they are held only for
        the duration of the call. Concurrent calls for one key share one download.
        Raises SourceError from the download, or CacheError.
        """
        refs = list(refs)
        for ref in refs:
            _check_ref(ref)
        holder = pin if pin is not None else f"prefetch-{uuid.uuid4().hex}"
        try:
            names: dict[str, str] = {}
            for ref in refs:
                model = self._obtain(ref, holder)
                self._link(ref, model, holder)
                names[ref.url] = ref.filename
            return names
        finally:
            if pin is None:
                self.release(holder)
            else:
                with self._lock:
                    self._evict_locked()

    def release(self, job_id: str) -> None:
        """Unpin a job's files; evict whatever the budget no longer has room for."""
        with self._lock:
            for key in self._pins.pop(job_id, set()):
                self._pin_counts[key] -= 1
                if self._pin_counts[key] <= 0:
                    del self._pin_counts[key]
            self._evict_locked()

    def report(self) -> CacheReport:
        """The cache's state for the heartbeat (cached keys, bytes) and its counters."""
        disk_free = shutil.disk_usage(self.cache_dir).free
        with self._lock:
            return CacheReport(
                sizes=MappingProxyType({key: m.size for key, m in self._models.items()}),
                used_bytes=self._used,
                free_bytes=max(0, min(self.budget_bytes - self._used, disk_free)),
                budget_bytes=self.budget_bytes,
                pinned_keys=frozenset(self._pin_counts),
                hits=self._stats["hits"],
                misses=self._stats["misses"],
                downloads=self._stats["downloads"],
                downloaded_bytes=self._stats["downloaded_bytes"],
                download_seconds=self._download_seconds,
                evictions=self._stats["evictions"],
            )

    def close(self) -> None:
        """Close the record store (files and links stay for the next start)."""
        self._index.close()

    # -- obtaining a file ----------------------------------------------------------------

    def _obtain(self, ref: ModelRef, holder: str) -> CachedModel:
        """The cached record for ``ref``, downloading it first if needed (single-flight)."""
        with self._lock:
            if ref.key not in self._pins.setdefault(holder, set()):
                self._pins[holder].add(ref.key)
                self._pin_counts[ref.key] += 1
            model = self._models.get(ref.key)
            if model is not None:
                self._stats["hits"] += 1
                return self._touch_locked(model)
            self._stats["misses"] += 1
            future = self._inflight.get(ref.key)
            leading = future is None
            if future is None:
                future = self._inflight[ref.key] = Future()
        if not leading:
            model = future.result()
            with self._lock:  # the leader's error, or its file, is ours too
                return self._touch_locked(model)
        try:
            model = self._download(ref)
        except BaseException as exc:
            with self._lock:
                del self._inflight[ref.key]
            future.set_exception(exc)
            raise
        with self._lock:
            self._models[model.key] = model
            self._used += model.size
            self._index.put(model)
            del self._inflight[ref.key]
        future.set_result(model)
        return model

    def _download(self, ref: ModelRef) -> CachedModel:
        if ref.size is not None:
            with self._lock:  # make room first, so the disk does not fill mid-download
                self._evict_locked(reserve=ref.size)
        tmp = self.tmp_dir / f"{ref.key}.{uuid.uuid4().hex[:8]}.part"
        try:
            fetched = self.source.fetch(ref, tmp)
            size = tmp.stat().st_size
            if size != fetched.size:
                raise IntegrityMismatch(f"model {ref.key[:12]}: {size} bytes on disk")
            sha256 = fetched.sha256
            if ref.sha256 is not None and sha256 is None:
                sha256 = file_sha256(tmp)
            check_integrity(ref, size, sha256)
            _fsync(tmp)
            os.replace(tmp, self.objects_dir / ref.key)
            _fsync(self.objects_dir)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise CacheError(f"model {ref.key[:12]}: cannot store it ({exc})") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        now = self._clock()
        with self._lock:
            self._stats["downloads"] += 1
            self._stats["downloaded_bytes"] += size
            self._download_seconds += fetched.seconds
        return CachedModel(ref.key, size, sha256, now, now, str(fetched.source))

    def _touch_locked(self, model: CachedModel) -> CachedModel:
        current = self._models.get(model.key, model)
        touched = replace(current, last_used=self._clock())
        if model.key in self._models:
            self._models[model.key] = touched
            self._models.move_to_end(model.key)
            self._index.touch([model.key], touched.last_used)
        return touched

    # -- links into ComfyUI --------------------------------------------------------------

    def _link(self, ref: ModelRef, model: CachedModel, holder: str) -> None:
        link = self.folders.path(ref.folder) / ref.filename
        target = self.objects_dir / model.key
        with self._lock:
            if model.key not in self._models:  # cannot happen while pinned; be sure
                raise CacheError(f"model {model.key[:12]} left the cache before linking")
            current = link_target(link)
            if current == target:
                self._links.setdefault(model.key, set()).add(link)
                return
            if current is None and os.path.lexists(link):
                raise LinkConflict(f"{link} exists and is not a cache link")
            other = current.name if current is not None else None
            if current is not None and current.parent != self.objects_dir:
                raise LinkConflict(f"{link} is a link the cache did not make")
            if other is not None and other in self._models and self._pin_counts[other]:
                raise LinkConflict(f"{ref.folder}/{ref.filename} names another model in use")
            try:
                place_link(link, target)
            except OSError as exc:
                raise CacheError(f"cannot link {ref.folder}/{ref.filename}: {exc}") from exc
            if other is not None:
                self._links.get(other, set()).discard(link)
            self._links.setdefault(model.key, set()).add(link)

    # -- eviction ------------------------------------------------------------------------

    def _evict_locked(self, reserve: int = 0) -> None:
        """Evict least recently used unpinned files until ``reserve`` more bytes fit."""
        victims = lru_evictions(
            ((key, model.size) for key, model in self._models.items()),
            self._pin_counts,
            used=self._used,
            budget=self.budget_bytes,
            reserve=reserve,
            disk_free=shutil.disk_usage(self.cache_dir).free if reserve else None,
        )
        # Whatever is left over budget is in use: it stays until released.
        for victim in victims:
            self._remove_locked(victim)
            self._stats["evictions"] += 1

    def _remove_locked(self, key: str) -> None:
        """Remove an object, its record and every link to it."""
        target = self.objects_dir / key
        for link in self._links.pop(key, set()):
            remove_link(link, target)
        model = self._models.pop(key)
        self._used -= model.size
        self._index.remove(key)
        target.unlink(missing_ok=True)
        logger.info("model evicted", extra={"model_key": key, "bytes": model.size})

    # -- start-up recovery ---------------------------------------------------------------

    def _recover(self, verify_hashes: bool) -> None:
        """Reconcile records, objects and links after a restart; use nothing doubtful."""
        dropped: Counter[str] = Counter()
        for entry in self.tmp_dir.iterdir():  # downloads a previous process never finished
            _delete(entry)
            dropped["partial"] += 1
        for model in self._index.all():
            path = self.objects_dir / model.key
            problem = _object_problem(path, model, verify_hashes)
            if problem is None:
                self._models[model.key] = model
                self._used += model.size
                continue
            dropped[problem] += 1
            self._index.remove(model.key)
            path.unlink(missing_ok=True)
        for entry in self.objects_dir.iterdir():
            if entry.name not in self._models:
                _delete(entry)
                dropped["orphan"] += 1
        for link, key in self.folders.links_into(self.objects_dir):
            if key in self._models:
                self._links.setdefault(key, set()).add(link)
            else:
                link.unlink(missing_ok=True)
                dropped["dangling link"] += 1
        self._evict_locked()
        logger.info(
            "model cache opened",
            extra={"models": len(self._models), "bytes": self._used, "dropped": dict(dropped)},
        )


def _check_ref(ref: ModelRef) -> None:
    if not _KEY.match(ref.key):
        raise CacheError(f"model key {ref.key[:80]!r} is not a SHA-256 hex digest")
    if ref.folder not in FOLDERS:
        raise CacheError(f"{ref.folder!r} is not a ComfyUI folder")
    reason = unsafe_name_reason(ref.filename, allow_subfolders=False)
    if reason is not None:
        raise CacheError(f"file name {ref.filename[:80]!r}: {reason}")


def _object_problem(path: Path, model: CachedModel, verify_hash: bool) -> str | None:
    try:
        if path.is_symlink() or not path.is_file():
            return "missing object"
        if path.stat().st_size != model.size:
            return "wrong size"
    except OSError:
        return "missing object"
    if verify_hash and model.sha256 is not None and file_sha256(path) != model.sha256:
        return "wrong hash"
    return None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _delete(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
