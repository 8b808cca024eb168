"""The model cache's durable records: one SQLite row per cached model.

SQLite (stdlib, WAL) rather than a JSON file replaced on each change: every job touches
its models' last use, and a row update is O(1) where a JSON index is rewritten (and
fsynced) whole; a crash mid-commit leaves the previous state, never half a file; and the
heartbeat can read while a download thread writes. ``synchronous=NORMAL`` may lose the
last commits on power loss, never consistency — and the cache reconciles records with the
files on disk at every start anyway (an object whose record was lost is deleted).

The agents of one instance share the index (WAL lets them read while one writes; a busy
timeout covers the rest): besides the models, it holds who has the cache open (``owners``),
which job of which owner pins which model (``pins``), the downloads in progress and their
bytes (``downloads``), and every link made into a ComfyUI folder (``links``), so that the
agent evicting a model removes the other agents' links to it too. The cache lock
(:mod:`gpu_agent.cache_locks`) orders every change; this module only stores.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Version 1 had the models table alone; 2 adds the tables of a shared cache and keeps it.
_SCHEMA_VERSION = 2
_KNOWN_VERSIONS = (0, 1, _SCHEMA_VERSION)
_TABLES = ("models", "owners", "pins", "downloads", "links")
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS models (
        key        TEXT PRIMARY KEY,
        size       INTEGER NOT NULL,
        sha256     TEXT,
        fetched_at REAL NOT NULL,
        last_used  REAL NOT NULL,
        source     TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS owners (
        owner      TEXT PRIMARY KEY,
        node       TEXT NOT NULL,
        pid        INTEGER NOT NULL,
        comfy_root TEXT NOT NULL,
        opened_at  REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS pins (
        owner TEXT NOT NULL,
        job   TEXT NOT NULL,
        key   TEXT NOT NULL,
        PRIMARY KEY (owner, job, key)
    )""",
    """CREATE TABLE IF NOT EXISTS downloads (
        key   TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        bytes INTEGER NOT NULL
    )""",
    "CREATE TABLE IF NOT EXISTS links (path TEXT PRIMARY KEY, key TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS links_by_key ON links (key)",
)
_BUSY_SECONDS = 30.0  # another agent's write is milliseconds; this is a bound, not a wait


@dataclass(frozen=True, slots=True)
class CachedModel:
    """The record of one file in the cache."""

    key: str
    size: int
    sha256: str | None
    fetched_at: float  # seconds since the epoch
    last_used: float  # seconds since the epoch; orders eviction across restarts
    source: str  # "mirror" or "origin"


class CacheIndex:
    """Records of cached models, by key. Thread-safe; each call is one transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:
            # An unreadable index is rebuilt empty; start-up recovery then deletes the
            # objects it no longer vouches for, so nothing unverified is ever used.
            logger.warning("cache index unreadable; starting empty", extra={"error": repr(exc)})
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=_BUSY_SECONDS
        )
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in _KNOWN_VERSIONS:
                for table in _TABLES:
                    db.execute(f"DROP TABLE IF EXISTS {table}")
            for statement in _SCHEMA:
                db.execute(statement)
            db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            db.execute("SELECT count(*) FROM models").fetchone()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _rows(self, sql: str, *args: object) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _run(self, sql: str, *args: object) -> None:
        with self._lock:
            self._db.execute(sql, args)

    # -- models ----------------------------------------------------------------------------

    def all(self) -> list[CachedModel]:
        """Every record, least recently used first."""
        rows = self._rows(
            "SELECT key, size, sha256, fetched_at, last_used, source FROM models "
            "ORDER BY last_used, key"
        )
        return [CachedModel(*row) for row in rows]

    def get(self, key: str) -> CachedModel | None:
        """The record of ``key``, or None."""
        rows = self._rows(
            "SELECT key, size, sha256, fetched_at, last_used, source FROM models WHERE key = ?",
            key,
        )
        return CachedModel(*rows[0]) if rows else None

    def put(self, model: CachedModel) -> None:
        """Insert or replace the record of ``model.key``; its download is over."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO models VALUES (?, ?, ?, ?, ?, ?)",
                (
                    model.key,
                    model.size,
                    model.sha256,
                    model.fetched_at,
                    model.last_used,
                    model.source,
                ),
            )
            db.execute("DELETE FROM downloads WHERE key = ?", (model.key,))

    def touch(self, keys: Iterable[str], last_used: float) -> None:
        """Set the last use of ``keys``."""
        with self._lock:
            self._db.executemany(
                "UPDATE models SET last_used = ? WHERE key = ?", [(last_used, k) for k in keys]
            )

    def remove(self, key: str) -> None:
        """Forget ``key`` and the links recorded to it (no error if it is unknown)."""
        with self._transaction() as db:
            db.execute("DELETE FROM models WHERE key = ?", (key,))
            db.execute("DELETE FROM links WHERE key = ?", (key,))

    # -- the caches open on this directory, and their pins ---------------------------------

    def add_owner(self, owner: str, node: str, pid: int, comfy_root: str, now: float) -> None:
        self._run(
            "INSERT OR REPLACE INTO owners VALUES (?, ?, ?, ?, ?)",
            owner,
            node,
            pid,
            comfy_root,
            now,
        )

    def owners(self) -> set[str]:
        """Every owner with a record, a pin or a download (the dead not yet cleared too)."""
        rows = self._rows(
            "SELECT owner FROM owners UNION SELECT owner FROM pins "
            "UNION SELECT owner FROM downloads"
        )
        return {str(row[0]) for row in rows}

    def drop_owner(self, owner: str) -> None:
        """Forget an owner (closed, or dead) with its pins and its downloads' reservations."""
        with self._transaction() as db:
            for table in ("owners", "pins", "downloads"):
                db.execute(f"DELETE FROM {table} WHERE owner = ?", (owner,))

    def pin(self, owner: str, job: str, key: str) -> None:
        self._run("INSERT OR IGNORE INTO pins VALUES (?, ?, ?)", owner, job, key)

    def unpin(self, owner: str, job: str) -> None:
        self._run("DELETE FROM pins WHERE owner = ? AND job = ?", owner, job)

    def pinned_keys(self) -> set[str]:
        """Keys some owner's job pins."""
        return {str(row[0]) for row in self._rows("SELECT DISTINCT key FROM pins")}

    def pinned_in(self, key: str, comfy_root: str) -> bool:
        """Whether a job of an owner linking into ``comfy_root`` pins ``key``."""
        return bool(
            self._rows(
                "SELECT 1 FROM pins JOIN owners USING (owner) "
                "WHERE pins.key = ? AND owners.comfy_root = ? LIMIT 1",
                key,
                comfy_root,
            )
        )

    # -- downloads in progress ---------------------------------------------------------------

    def reserve(self, key: str, owner: str, size: int) -> None:
        """Count ``size`` bytes against the budget while ``owner`` downloads ``key``."""
        self._run("INSERT OR REPLACE INTO downloads VALUES (?, ?, ?)", key, owner, size)

    def unreserve(self, key: str) -> None:
        self._run("DELETE FROM downloads WHERE key = ?", key)

    def reserved_bytes(self) -> int:
        return int(self._rows("SELECT COALESCE(SUM(bytes), 0) FROM downloads")[0][0])

    # -- links into ComfyUI's folders --------------------------------------------------------

    def add_link(self, link: Path, key: str) -> None:
        self._run("INSERT OR REPLACE INTO links VALUES (?, ?)", str(link), key)

    def links(self, key: str | None = None) -> list[tuple[Path, str]]:
        """Recorded links (to ``key``, or all) and the key each was made for."""
        if key is None:
            rows = self._rows("SELECT path, key FROM links")
        else:
            rows = self._rows("SELECT path, key FROM links WHERE key = ?", key)
        return [(Path(str(path)), str(linked)) for path, linked in rows]

    def forget_link(self, link: Path) -> None:
        self._run("DELETE FROM links WHERE path = ?", str(link))

    def close(self) -> None:
        with self._lock:
            self._db.close()
