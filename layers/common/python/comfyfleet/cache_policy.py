"""Which cached models to evict: least recently used first, never a pinned one.

A pure decision, shared by the GPU agent's model cache and the fleet simulation, so the
simulated fleet keeps and loses models exactly as the agents do.
"""

from __future__ import annotations

from collections.abc import Container, Iterable


def lru_evictions(
    lru_first: Iterable[tuple[str, int]],
    pinned: Container[str],
    *,
    used: int,
    budget: int,
    reserve: int = 0,
    disk_free: int | None = None,
) -> list[str]:
    """Keys to evict, in order, so that ``reserve`` more bytes fit in ``budget``.

    ``lru_first`` is (key, bytes) from least to most recently used. Eviction stops early
    when only pinned files are left: a running job's files may hold the cache over budget.
    ``disk_free``, when given, must also end up at least ``reserve`` (a full disk).
    """
    victims: list[str] = []
    freed = 0

    def short() -> bool:
        over = used - freed + reserve > budget
        return over or (reserve > 0 and disk_free is not None and disk_free + freed < reserve)

    if not short():
        return victims
    for key, size in lru_first:
        if key in pinned:
            continue
        victims.append(key)
        freed += size
        if not short():
            break
    return victims
