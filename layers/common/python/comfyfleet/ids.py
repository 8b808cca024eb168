"""Identifiers: ULIDs for jobs and accounts (time-ordered, so newest-first is a key order)."""

from __future__ import annotations

import os
import threading
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_lock = threading.Lock()
_last_ms = 0
_last_random = 0


def ulid(now: float | None = None) -> str:
    """A 26-character ULID; monotonic within a process, also within one millisecond."""
    global _last_ms, _last_random
    ms = int((time.time() if now is None else now) * 1000)
    with _lock:
        if ms <= _last_ms:
            ms = _last_ms
            _last_random += 1
        else:
            _last_random = int.from_bytes(os.urandom(10), "big")
        _last_ms = ms
        value = (ms << 80) | (_last_random & ((1 << 80) - 1))
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def ulid_time(value: str) -> float:
    """The epoch seconds a ULID carries (its first 10 characters, milliseconds)."""
    ms = 0
    for char in value[:10]:
        ms = ms * 32 + _CROCKFORD.index(char.upper())
    return ms / 1000


def reset() -> None:
    """Start the monotonic state afresh, as a new process would: a SnapStart copy must not
    continue the snapshot's sequence (every copy would continue the same one)."""
    global _last_ms, _last_random
    with _lock:
        _last_ms, _last_random = 0, 0


def new_job_id(now: float | None = None) -> str:
    return ulid(now)


def new_account_id(now: float | None = None) -> str:
    return "acct_" + ulid(now)
