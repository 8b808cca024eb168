"""The fleet simulation's goals (docs/capacity.md): cache-aware routing and fairness.

Figures are medians over seeds (the simulation is deterministic for one seed, so the
spread over seeds is its noise); the baseline is the least_loaded policy in the same run.
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.common import Figure
from comfyfleet.settings import Settings
from comfyfleet.sim import scenario, simulate

DOWNLOAD_RATIO_GOAL = 1 / 3
JAIN_GOAL = 0.95
NODES, JOBS = 40, 8000


def _spread(values: list[float]) -> str:
    middle = statistics.median(values)
    spread = (max(values) - min(values)) / middle if middle else 0.0
    return f"spread {spread:.0%} over {len(values)} seeds"


def _figures(name: str, seeds: list[int]) -> list[dict[str, Any]]:
    s = scenario(name, nodes=NODES, jobs=JOBS)
    settings = Settings()
    return [
        simulate(s, ["cost", "least_loaded"], seed=seed, settings=settings).to_json()["policies"]
        for seed in seeds
    ]


def run(quick: bool = False) -> list[Figure]:
    seeds = [1, 2] if quick else [1, 2, 3]
    many = _figures("many-models", seeds)
    ratios = [f["cost"]["bytes_downloaded"] / f["least_loaded"]["bytes_downloaded"] for f in many]
    p95 = [f["cost"]["p95_wait_s"] / f["least_loaded"]["p95_wait_s"] for f in many]
    least_tb = statistics.median(f["least_loaded"]["bytes_downloaded"] for f in many) / 1e12
    least_p95 = statistics.median(f["least_loaded"]["p95_wait_s"] for f in many)
    noisy = _figures("noisy-neighbour", seeds)
    jain = [f["cost"]["jain_index"] for f in noisy]
    jain_least = statistics.median(f["least_loaded"]["jain_index"] for f in noisy)
    where = f"{NODES} nodes, {JOBS} jobs"
    return [
        Figure(
            name=f"sim many-models: downloads cost / least_loaded ({where})",
            value=statistics.median(ratios),
            unit="x",
            goal=f"<= {DOWNLOAD_RATIO_GOAL:.3f}",
            ok=statistics.median(ratios) <= DOWNLOAD_RATIO_GOAL,
            baseline=f"least_loaded downloads {least_tb:.1f} TB",
            noise=_spread(ratios),
        ),
        Figure(
            name=f"sim many-models: p95 wait cost / least_loaded ({where})",
            value=statistics.median(p95),
            unit="x",
            goal="<= 1 (no worse)",
            ok=statistics.median(p95) <= 1.0,
            baseline=f"least_loaded p95 {least_p95:.0f} s",
            noise=_spread(p95),
        ),
        Figure(
            name=f"sim noisy-neighbour: Jain's index, cost routing ({where})",
            value=statistics.median(jain),
            unit="",
            goal=f">= {JAIN_GOAL}",
            ok=statistics.median(jain) >= JAIN_GOAL,
            baseline=f"least_loaded {jain_least:.3f}",
            noise=_spread(jain),
        ),
    ]
