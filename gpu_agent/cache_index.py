"""The model cache's durable records: one SQLite row per cached model.

SQLite (stdlib, WAL) rather than a JSON file replaced on each change: every job touches
its models' last use, and a row update is O(1) where a JSON index is rewritten (and
fsynced) whole; a crash mid-commit leaves the previous state, never half a file; and the
heartbeat can read while a download thread writes. ``synchronous=NORMAL`` may lose the
last commits on power loss, never consistency — and the cache reconciles records with the
files on disk at every start anyway (an object whose record was lost is deleted).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    key        TEXT PRIMARY KEY,
    size       INTEGER NOT NULL,
    sha256     TEXT,
    fetched_at REAL NOT NULL,
    last_used  REAL NOT NULL,
    source     TEXT NOT NULL
)
"""


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
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, _SCHEMA_VERSION):
                db.execute("DROP TABLE IF EXISTS models")
            db.execute(_SCHEMA)
            db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            db.execute("SELECT count(*) FROM models").fetchone()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def all(self) -> list[CachedModel]:
        """Every record, least recently used first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key, size, sha256, fetched_at, last_used, source FROM models "
                "ORDER BY last_used, key"
            ).fetchall()
        return [CachedModel(*row) for row in rows]

    def put(self, model: CachedModel) -> None:
        """Insert or replace the record of ``model.key``."""
        with self._lock:
            self._db.execute(
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

    def touch(self, keys: Iterable[str], last_used: float) -> None:
        """Set the last use of ``keys``."""
        with self._lock:
            self._db.executemany(
                "UPDATE models SET last_used = ? WHERE key = ?", [(last_used, k) for k in keys]
            )

    def remove(self, key: str) -> None:
        """Forget ``key`` (no error if it is unknown)."""
        with self._lock:
            self._db.execute("DELETE FROM models WHERE key = ?", (key,))

    def close(self) -> None:
        with self._lock:
            self._db.close()
