"""The lock files that let the agents of one instance (one per GPU) share a model cache.

Under ``<cache_dir>/locks/``:

* ``cache.lock`` — the cache lock: held for every read or change of the index, the objects
  and the links, briefly; never across a download.
* ``models/<key>.lock`` — held by the one agent downloading that model; another agent asking
  for it waits there, then finds the object present and only links it.
* ``agents/<owner>.lock`` — held by each open :class:`~gpu_agent.cache.ModelCache` for its
  whole life. Its pins and reservations count only while it is held.

``flock`` rather than ``fcntl``/``lockf``: a POSIX record lock is dropped when its process
closes *any* descriptor of the file and does not exclude two opens in one process, whereas a
flock belongs to one open file description, so two caches in one process exclude each other
as two processes do. The kernel drops a flock when its holder dies however it dies (SIGKILL,
the OOM killer), which is how a dead agent's pins are told from a live one's, with no pid to
be reused. Python opens descriptors close-on-exec, so no child process inherits a lock. The
cache directory must be on a local file system (flock over NFS is not to be trusted).
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from types import TracebackType


def hold(path: Path, *, wait: bool) -> int | None:
    """Open ``path`` (made if absent) and flock it; the descriptor, or None if busy and not
    ``wait``. Lock files may be removed by their holder, so the file locked must still be
    the one at ``path``, else the lock is taken again on the file there now."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        if _is_at(fd, path):
            return fd
        os.close(fd)


def let_go(fd: int, path: Path | None = None) -> None:
    """Release a lock from :func:`hold`; with ``path``, remove its file first (holder only)."""
    try:
        if path is not None:
            path.unlink(missing_ok=True)
    finally:
        os.close(fd)


def _is_at(fd: int, path: Path) -> bool:
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


class CacheLock:
    """The cache lock: one thread of this process at a time, then one process at a time.

    The thread lock comes first: threads sharing one descriptor share its flock.
    """

    def __init__(self, path: Path) -> None:
        self._threads = threading.Lock()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # never removed: no re-check

    def __enter__(self) -> None:
        self._threads.acquire()
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._threads.release()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def close(self) -> None:
        os.close(self._fd)


class ModelLock:
    """Held while this process downloads one model; waits for another process's download."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def __enter__(self) -> ModelLock:
        self._fd = hold(self.path, wait=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            let_go(self._fd)
            self._fd = None


class AgentLease:
    """The lock an open cache holds for its life: while held, its pins are live."""

    def __init__(self, folder: Path, owner: str) -> None:
        self.path = folder / f"{owner}.lock"
        fd = hold(self.path, wait=False)
        if fd is None:  # owner ids are unique: nobody else can hold this file
            raise RuntimeError(f"{self.path} is held by another cache")
        self._fd: int | None = fd

    def close(self) -> None:
        if self._fd is not None:
            let_go(self._fd, self.path)
            self._fd = None


def lease_alive(folder: Path, owner: str) -> bool:
    """Whether the cache ``owner`` is still open; a dead one's lease file is removed."""
    path = folder / f"{owner}.lock"
    if not path.exists():  # closed, its records not yet dropped
        return False
    fd = hold(path, wait=False)
    if fd is None:
        return True
    let_go(fd, path)
    return False
