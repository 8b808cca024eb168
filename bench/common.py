"""What every benchmark shares: timing with a noise figure, the Figure record, the table."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

BENCH_REGION = "us-east-1"


def use_dummy_aws_credentials() -> None:
    """Dummy credentials and a region for boto3: benchmarks talk to moto only."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": BENCH_REGION,
    }.items():
        os.environ.setdefault(name, value)


@dataclass(frozen=True)
class Timing:
    """Seconds per call over repeated runs."""

    median: float
    p95: float
    runs: int
    noise: float  # (p90 - p10) / median: how much the runs spread

    @classmethod
    def of(cls, samples: Sequence[float]) -> Timing:
        ordered = sorted(samples)
        deciles = statistics.quantiles(ordered, n=10) if len(ordered) > 1 else ordered * 9
        median = statistics.median(ordered)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        return cls(median, p95, len(ordered), (deciles[8] - deciles[0]) / median if median else 0)


def time_calls(fn: Callable[[], Any], runs: int, warmup: int = 3) -> Timing:
    """Time ``fn`` ``runs`` times after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return Timing.of(samples)


@dataclass(frozen=True)
class Figure:
    """One measured figure, its goal, and the baseline measured in the same run."""

    name: str
    value: float
    unit: str
    goal: str
    ok: bool
    baseline: str
    noise: str = ""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["name"]
        return data


def print_table(figures: Sequence[Figure]) -> None:
    rows = [("figure", "value", "goal", "baseline (same run)", "noise", "ok")]
    for f in figures:
        value = f"{f.value:.3g} {f.unit}"
        rows.append((f.name, value, f.goal, f.baseline, f.noise, "pass" if f.ok else "FAIL"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))
