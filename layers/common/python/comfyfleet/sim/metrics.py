"""The figures of a simulated run, defined once (docs/capacity.md explains each)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from comfyfleet.sim.engine import TIMELINE_BINS, Outcome


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of sorted values (0 for none)."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(fraction * len(ordered)))
    return float(ordered[rank - 1])


def jain_index(values: Sequence[float]) -> float:
    """Jain's fairness index (Σx)² / (n·Σx²): 1 when all equal, 1/n when one has all."""
    if not values:
        return 1.0
    total = sum(values)
    squares = sum(v * v for v in values)
    return 1.0 if squares == 0 else total * total / (len(values) * squares)


def summary(out: Outcome, price_per_hour: float) -> dict[str, Any]:
    """The per-policy object of ``comfyfleet sim --json``."""
    waits = sorted(out.waits)
    node_hours = out.billed_seconds / 3600  # a fixed fleet's: nodes × the run
    return {
        "p50_wait_s": round(percentile(waits, 0.50), 3),
        "p95_wait_s": round(percentile(waits, 0.95), 3),
        "p99_wait_s": round(percentile(waits, 0.99), 3),
        "cold_start_fraction": round(out.cold_starts / out.completed, 4) if out.completed else 0.0,
        "bytes_downloaded": out.bytes_downloaded,
        "gpu_utilisation": round(out.sampling_seconds / out.node_seconds, 4)
        if out.node_seconds
        else 0.0,
        "jain_index": round(jain_index(out.fairness_samples), 4),
        "cost_per_1000_images": round(price_per_hour * node_hours / out.completed * 1000, 4)
        if out.completed
        else 0.0,
        "node_hours": round(node_hours, 3),
        # 0 when no job came after an idle period
        "first_after_idle_p95_s": round(percentile(sorted(out.first_after_idle_waits), 0.95), 3),
    }


def details(out: Outcome) -> dict[str, Any]:
    """What the table prints besides the summary."""
    return {
        "completed": out.completed,
        "rejected": out.rejected,
        "failures": out.failures,
        "makespan_s": round(out.makespan, 1),
        "accounts_in_fairness": len(out.fairness_samples),
        "jobs_after_idle": len(out.first_after_idle_waits),
        "peak_nodes": max((size for _, size in out.fleet_sizes), default=out.nodes),
    }


def utilisation_timeline(out: Outcome, bins: int = TIMELINE_BINS) -> list[tuple[float, float]]:
    """(time, fraction of nodes sampling) in ``bins`` equal slices of the run."""
    if out.makespan <= 0 or not out.sampling_spans:
        return []
    width = out.makespan / bins
    busy = [0.0] * bins
    for start, end in out.sampling_spans:
        first, last = int(start / width), min(bins - 1, int(end / width))
        for slot in range(first, last + 1):
            lo, hi = slot * width, (slot + 1) * width
            busy[slot] += max(0.0, min(end, hi) - max(start, lo))
    return [((i + 0.5) * width, busy[i] / (width * out.nodes)) for i in range(bins)]
