"""The LRU eviction decision the agent's cache and the fleet simulation share."""

from __future__ import annotations

from comfyfleet.cache_policy import lru_evictions

GB = 10**9
LRU_FIRST = [("old", 4 * GB), ("mid", 2 * GB), ("new", 3 * GB)]  # 9 GB used


def test_nothing_is_evicted_while_the_reserve_fits() -> None:
    assert lru_evictions(LRU_FIRST, set(), used=9 * GB, budget=10 * GB, reserve=1 * GB) == []


def test_least_recently_used_go_first_until_the_reserve_fits() -> None:
    victims = lru_evictions(LRU_FIRST, set(), used=9 * GB, budget=10 * GB, reserve=4 * GB)

    assert victims == ["old"]  # 9 - 4 + 4 = 9 <= 10


def test_pinned_files_are_skipped_and_may_leave_the_cache_over_budget() -> None:
    victims = lru_evictions(LRU_FIRST, {"old", "new"}, used=9 * GB, budget=5 * GB, reserve=2 * GB)

    assert victims == ["mid"]  # still 9 - 2 + 2 = 9 > 5: the rest is in use


def test_a_full_disk_evicts_even_under_budget() -> None:
    victims = lru_evictions(
        LRU_FIRST, set(), used=9 * GB, budget=100 * GB, reserve=5 * GB, disk_free=GB // 2
    )

    assert victims == ["old", "mid"]  # 0.5 + 4 < 5, + 2 >= 5
