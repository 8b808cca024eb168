"""The node's model cache: model files on local disk, shown to ComfyUI by symlinks.

Layout under ``cache_dir``: ``objects/<model_key>`` (complete, verified files only),
``tmp/`` (downloads in progress), ``index.sqlite3`` (records, pins, links), ``locks/``. A
file reaches ``objects/`` only by rename after it was fetched, checked against the
reference's size and hash, and fsynced; so after a crash the only doubtful things are in
``tmp/`` and records or objects without their partner (both put right at start).

Eviction is least-recently-used by whole file, down to a byte budget, and never takes a
file pinned by a job (or one being linked right now): a job's own files may hold the cache
over budget while it runs, and are evicted as soon as it releases them if still needed.

Every agent of a multi-GPU instance opens the same ``cache_dir`` (each linking into its own
ComfyUI): one budget, one download per model, and no agent evicts a file another's job has
pinned. Sharing is always on: for a lone agent it costs a flock and a few SQLite rows per
job. How: the cache lock orders every change across processes, a model's lock makes one
download of it, pins live in the index and count while their cache's lease is held
(:mod:`gpu_agent.cache_locks`).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType

from comfyfleet.cache_policy import lru_evictions
from comfyfleet.workflow.refs import FOLDERS, ModelRef
from comfyfleet.workflow.urls import unsafe_name_reason
from gpu_agent.cache_index import CachedModel, CacheIndex
from gpu_agent.cache_locks import AgentLease, CacheLock, ModelLock
from gpu_agent.cache_recovery import (
    MODEL_KEY,
    CacheFiles,
    clear_dead_agents,
    drop_model,
    drop_partials,
    recover,
)
from gpu_agent.comfy_links import ComfyFolders, link_target, place_link
from gpu_agent.source_protocol import IntegrityMismatch, ModelSource, check_integrity, file_sha256

logger = logging.getLogger(__name__)


class CacheError(Exception):
    """The cache cannot place a model (bad reference, disk trouble, a name conflict)."""


class LinkConflict(CacheError):
    """A ComfyUI file name the job needs is taken by another file still in use."""


@dataclass(frozen=True, slots=True)
class CacheReport:
    """What the heartbeat publishes about the cache, and counters for metrics."""

    sizes: Mapping[str, int]  # cached model key -> bytes (routing's missing-bytes estimate)
    used_bytes: int  # the whole cache's, every agent's models
    free_bytes: int  # budget - used, capped by the disk's real free space
    budget_bytes: int
    pinned_keys: frozenset[str]  # by any agent's running job
    hits: int  # this agent's counters, from zero at its start
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

    Thread-safe: the agent may prefetch for the next job while the current one runs. Safe
    across processes too: several agents may open one ``cache_dir`` (each its own
    ``comfy_root``).
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
        node_id: str = "",
    ) -> None:
        self.cache_dir = cache_dir.resolve()
        self.objects_dir = self.cache_dir / "objects"
        self.tmp_dir = self.cache_dir / "tmp"
        self.budget_bytes = budget_bytes
        self.folders = ComfyFolders(comfy_root.resolve(), input_dir=input_dir)
        self._root = str(self.folders.root)
        self.source = source
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"  # this open cache, in the index
        self._clock = clock
        locks = self.cache_dir / "locks"
        self._files = CacheFiles(self.objects_dir, self.tmp_dir, locks / "models", locks / "agents")
        for folder in self._files.folders():
            folder.mkdir(parents=True, exist_ok=True)
        self._inflight: dict[str, Future[CachedModel]] = {}
        self._stats: Counter[str] = Counter()
        self._download_seconds = 0.0
        self._closed = False
        self._lock = CacheLock(locks / "cache.lock")
        with self._lock:  # an unreadable index is rebuilt: not while another agent writes
            self._index = CacheIndex(self.cache_dir / "index.sqlite3")
        self._lease = AgentLease(self._files.agent_leases, self.owner)
        try:
            with self._lock:
                self._open_locked(node_id, verify_hashes_on_start)
        except BaseException:
            self.close()
            raise

    # -- the agent's calls ---------------------------------------------------------------

    def ensure(self, refs: Iterable[ModelRef], pin: str | None = None) -> dict[str, str]:
        """Make every ref's file present and linked; return {url: local file name}.

        Files are pinned for job ``pin`` until :meth:`release` (also when this raises: the
        agent releases in ``finally``). Without ``pin`` (a prefetch) they are held only for
        the duration of the call. Concurrent calls for one key share one download, whether
        they come from this agent or another on the same cache.
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
                self._link(ref, model)
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
            self._index.unpin(self.owner, job_id)
            self._evict_locked()

    def report(self) -> CacheReport:
        """The cache's state for the heartbeat (cached keys, bytes) and its counters."""
        disk_free = shutil.disk_usage(self.cache_dir).free
        with self._lock:
            self._clear_dead_agents_locked()
            models = self._index.all()
            pinned = self._index.pinned_keys()
            used = sum(model.size for model in models)
            return CacheReport(
                sizes=MappingProxyType({model.key: model.size for model in models}),
                used_bytes=used,
                free_bytes=max(0, min(self.budget_bytes - used, disk_free)),
                budget_bytes=self.budget_bytes,
                pinned_keys=frozenset(pinned),
                hits=self._stats["hits"],
                misses=self._stats["misses"],
                downloads=self._stats["downloads"],
                downloaded_bytes=self._stats["downloaded_bytes"],
                download_seconds=self._download_seconds,
                evictions=self._stats["evictions"],
            )

    def close(self) -> None:
        """Drop this agent's pins and close the records (files and links stay)."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            self._index.drop_owner(self.owner)
        self._index.close()
        self._lease.close()
        self._lock.close()

    # -- obtaining a file ----------------------------------------------------------------

    def _obtain(self, ref: ModelRef, holder: str) -> CachedModel:
        """The cached record for ``ref``, downloading it first if needed (single-flight)."""
        with self._lock:
            self._index.pin(self.owner, holder, ref.key)  # before the look: eviction sees it
            model = self._index.get(ref.key)
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
            model = self._fetch_once(ref)
        except BaseException as exc:
            with self._lock:
                del self._inflight[ref.key]
            future.set_exception(exc)
            raise
        with self._lock:
            del self._inflight[ref.key]
        future.set_result(model)
        return model

    def _fetch_once(self, ref: ModelRef) -> CachedModel:
        """Download ``ref`` under its model lock, unless another agent did while we waited."""
        with ModelLock(self._files.model_lock(ref.key)):
            with self._lock:
                model = self._index.get(ref.key)
                if model is not None:  # fetched by another agent on this cache
                    return self._touch_locked(model)
                drop_partials(self._files, ref.key)  # of a download that died
                if ref.size is not None:  # make room first: the disk must not fill mid-way
                    self._evict_locked(reserve=ref.size)
                    self._index.reserve(ref.key, self.owner, ref.size)
            try:
                tmp, model, seconds = self._download(ref)
                with self._lock:
                    self._store_locked(tmp, model, seconds)
            except BaseException:
                with self._lock:
                    self._index.unreserve(ref.key)
                raise
        return model

    def _download(self, ref: ModelRef) -> tuple[Path, CachedModel, float]:
        """Fetch ``ref`` into tmp/, checked and fsynced; its record and the seconds taken."""
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
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise CacheError(f"model {ref.key[:12]}: cannot store it ({exc})") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        now = self._clock()
        return (
            tmp,
            CachedModel(ref.key, size, sha256, now, now, str(fetched.source)),
            fetched.seconds,
        )

    def _store_locked(self, tmp: Path, model: CachedModel, seconds: float) -> None:
        """Move a checked download into objects/ and record it, as one step for the others."""
        try:
            os.replace(tmp, self.objects_dir / model.key)
            _fsync(self.objects_dir)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise CacheError(f"model {model.key[:12]}: cannot store it ({exc})") from exc
        self._index.put(model)
        self._stats["downloads"] += 1
        self._stats["downloaded_bytes"] += model.size
        self._download_seconds += seconds

    def _touch_locked(self, model: CachedModel) -> CachedModel:
        touched = replace(model, last_used=self._clock())
        self._index.touch([model.key], touched.last_used)  # nothing if evicted meanwhile
        return touched

    # -- links into ComfyUI --------------------------------------------------------------

    def _link(self, ref: ModelRef, model: CachedModel) -> None:
        link = self.folders.path(ref.folder) / ref.filename
        target = self.objects_dir / model.key
        with self._lock:
            if self._index.get(model.key) is None:  # cannot happen while pinned; be sure
                raise CacheError(f"model {model.key[:12]} left the cache before linking")
            current = link_target(link)
            if current == target:
                self._index.add_link(link, model.key)
                return
            if current is None and os.path.lexists(link):
                raise LinkConflict(f"{link} exists and is not a cache link")
            if current is not None and current.parent != self.objects_dir:
                raise LinkConflict(f"{link} is a link the cache did not make")
            other = current.name if current is not None else None
            if other is not None and self._in_use_here_locked(other):
                raise LinkConflict(f"{ref.folder}/{ref.filename} names another model in use")
            try:
                place_link(link, target)
            except OSError as exc:
                raise CacheError(f"cannot link {ref.folder}/{ref.filename}: {exc}") from exc
            self._index.add_link(link, model.key)

    def _in_use_here_locked(self, key: str) -> bool:
        # A name is in use while a job of an agent linking into these folders pins its model.
        return self._index.get(key) is not None and self._index.pinned_in(key, self._root)

    # -- eviction ------------------------------------------------------------------------

    def _evict_locked(self, reserve: int = 0) -> None:
        """Evict least recently used unpinned files until ``reserve`` more bytes fit.

        Every agent's models, pins and downloads in progress count: one budget.
        """
        self._clear_dead_agents_locked()
        models = self._index.all()
        victims = lru_evictions(
            ((model.key, model.size) for model in models),
            self._index.pinned_keys(),
            used=sum(model.size for model in models) + self._index.reserved_bytes(),
            budget=self.budget_bytes,
            reserve=reserve,
            disk_free=shutil.disk_usage(self.cache_dir).free if reserve else None,
        )
        # Whatever is left over budget is in use: it stays until released.
        sizes = {model.key: model.size for model in models}
        for victim in victims:
            drop_model(self._index, self._files, victim)
            self._stats["evictions"] += 1
            logger.info("model evicted", extra={"model_key": victim, "bytes": sizes[victim]})

    def _clear_dead_agents_locked(self) -> None:
        clear_dead_agents(self._index, self._files, keep=self.owner)

    def _open_locked(self, node_id: str, verify_hashes: bool) -> None:
        """Join the agents on this cache, putting it right first (the others' work too)."""
        self._clear_dead_agents_locked()
        alone = not self._index.owners()
        self._index.add_owner(self.owner, node_id, os.getpid(), self._root, self._clock())
        # Hashing every object is for a start after a crash; another agent open on the
        # cache has already vouched for them, and would wait on the lock meanwhile.
        dropped = recover(
            self._index, self._files, self.folders, verify_hashes=verify_hashes and alone
        )
        self._evict_locked()
        models, agents = self._index.all(), len(self._index.owners())
        size = sum(model.size for model in models)
        logger.info(
            "model cache opened",
            extra={
                "models": len(models),
                "bytes": size,
                "dropped": dict(dropped),
                "agents": agents,
            },
        )


def _check_ref(ref: ModelRef) -> None:
    if not MODEL_KEY.match(ref.key):
        raise CacheError(f"model key {ref.key[:80]!r} is not a SHA-256 hex digest")
    if ref.folder not in FOLDERS:
        raise CacheError(f"{ref.folder!r} is not a ComfyUI folder")
    reason = unsafe_name_reason(ref.filename, allow_subfolders=False)
    if reason is not None:
        raise CacheError(f"file name {ref.filename[:80]!r}: {reason}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
