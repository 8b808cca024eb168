"""Putting a model cache right — at start, and when an agent on it died — and taking a model
out of it (file, record, every agent's links).

Called with the cache lock held, so every record, object and link is in a settled state:
objects reach ``objects/`` and their records the index together, under that lock; only
``tmp/`` holds work in progress, and a partial download is another agent's live work as
long as that model's lock is held. Nothing here imports the cache itself.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from gpu_agent.cache_index import CachedModel, CacheIndex
from gpu_agent.cache_locks import hold, lease_alive, let_go
from gpu_agent.comfy_links import ComfyFolders, link_target, remove_link
from gpu_agent.source_protocol import file_sha256

logger = logging.getLogger(__name__)

MODEL_KEY = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class CacheFiles:
    """Where a cache keeps its objects, downloads in progress and lock files."""

    objects: Path
    tmp: Path
    model_locks: Path
    agent_leases: Path

    def folders(self) -> tuple[Path, ...]:
        return (self.objects, self.tmp, self.model_locks, self.agent_leases)

    def model_lock(self, key: str) -> Path:
        return self.model_locks / f"{key}.lock"


def recover(
    index: CacheIndex, files: CacheFiles, folders: ComfyFolders, *, verify_hashes: bool
) -> Counter[str]:
    """Reconcile records, objects and links; return what was dropped, by reason."""
    dropped: Counter[str] = Counter()
    dropped["partial"] += sweep_partials(files)
    present: set[str] = set()
    for model in index.all():
        problem = _object_problem(files.objects / model.key, model, verify_hashes)
        if problem is None:
            present.add(model.key)
        else:
            dropped[problem] += 1
            drop_model(index, files, model.key)
    for entry in files.objects.iterdir():
        if entry.name not in present:
            _delete(entry)
            dropped["orphan"] += 1
    for link, key in folders.links_into(files.objects):
        if key in present:
            index.add_link(link, key)
        else:
            link.unlink(missing_ok=True)
            dropped["dangling link"] += 1
    for link, key in index.links():  # links since replaced or removed (any agent's)
        if link_target(link) != files.objects / key:
            index.forget_link(link)
    for lease in files.agent_leases.glob("*.lock"):
        lease_alive(files.agent_leases, lease.stem)  # removes the file of one that died
    return +dropped


def clear_dead_agents(index: CacheIndex, files: CacheFiles, *, keep: str) -> list[str]:
    """Forget the pins and reservations of caches whose process is gone (not ``keep``'s)."""
    dead = [
        owner
        for owner in index.owners()
        if owner != keep and not lease_alive(files.agent_leases, owner)
    ]
    for owner in dead:
        index.drop_owner(owner)
        logger.warning("a dead agent's pins were cleared", extra={"owner": owner})
    if dead:
        sweep_partials(files)  # the dead one's partial downloads
    return dead


def sweep_partials(files: CacheFiles) -> int:
    """Delete the downloads in ``tmp/`` nobody is making: those whose model lock is free."""
    swept = 0
    for entry in list(files.tmp.iterdir()):
        key = entry.name.split(".", 1)[0]
        if not MODEL_KEY.match(key):
            _delete(entry)
            swept += 1
            continue
        lock_path = files.model_lock(key)
        fd = hold(lock_path, wait=False)
        if fd is None:
            continue  # a live agent is downloading that model into it
        try:
            _delete(entry)
            swept += 1
        finally:
            let_go(fd, lock_path)
    return swept


def drop_partials(files: CacheFiles, key: str) -> None:
    """Delete every partial download of ``key`` (its model lock held: all are stale)."""
    for entry in files.tmp.glob(f"{key}.*"):
        _delete(entry)


def drop_model(index: CacheIndex, files: CacheFiles, key: str) -> None:
    """Remove an object, its record, every link to it (every agent's) and its lock file."""
    target = files.objects / key
    for link, _ in index.links(key):
        remove_link(link, target)
    index.remove(key)
    target.unlink(missing_ok=True)
    lock_path = files.model_lock(key)
    if lock_path.exists():
        fd = hold(lock_path, wait=False)
        if fd is not None:  # else someone is about to look for it: theirs to keep
            let_go(fd, lock_path)


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


def _delete(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
