"""What the simulated fleet is asked to do: scenarios, the model catalogue, the arrivals.

Arrivals come from a seeded generator (accounts with Zipf activity, a tier mix, Zipf model
popularity, bursts, noisy neighbours) or from a CSV trace (see ``read_trace``).
"""

from __future__ import annotations

import bisect
import csv
import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

DEFAULT_PRICE_PER_HOUR = 1.006  # g5.xlarge (one A10G) on demand, us-east-1, USD
GiB = 1024**3
MiB = 1024**2


@dataclass(frozen=True, slots=True)
class WorkflowClass:
    """A kind of workflow: its checkpoint's and LoRAs' sizes and its sampling time."""

    name: str
    checkpoint_bytes: int
    lora_bytes: int
    run_seconds: float  # median sampling time on the reference GPU


# Sizes as published for the common files (fp16 SD 1.5, SDXL base, FLUX.1 dev fp8 with its
# text encoders); run times are 20–30 steps at 1024² (512² for SD 1.5) on an A10G-class GPU.
WORKFLOW_CLASSES: dict[str, WorkflowClass] = {
    "sd15": WorkflowClass("sd15", int(2.0 * GiB), 144 * MiB, 3.5),
    "sdxl": WorkflowClass("sdxl", int(6.5 * GiB), 218 * MiB, 9.0),
    "flux": WorkflowClass("flux", int(16.0 * GiB), 300 * MiB, 24.0),
}


@dataclass(frozen=True, slots=True)
class Model:
    key: str
    folder: str
    size: int
    workflow: str  # the class whose jobs use it


@dataclass(frozen=True, slots=True)
class Arrival:
    """One submitted job."""

    at: float  # seconds from the start of the run
    account: str
    tier: str
    workflow: str
    models: tuple[Model, ...]
    # × the class's sampling time; drawn with the arrivals so that every policy runs the
    # same jobs for the same time (None: the simulation draws it, e.g. for a trace).
    run_factor: float | None = None


@dataclass(frozen=True)
class Scenario:
    """A fleet and a workload. Every field may be overridden from the command line."""

    name: str
    summary: str
    nodes: int = 50
    jobs: int = 20_000
    accounts: int = 0  # 0: ten per node
    account_zipf: float = 1.0
    tier_mix: tuple[tuple[str, float], ...] = (("free", 0.7), ("pro", 0.25), ("enterprise", 0.05))
    class_mix: tuple[tuple[str, float], ...] = (("sd15", 0.35), ("sdxl", 0.5), ("flux", 0.15))
    checkpoints: int = 12
    loras: int = 40
    lora_probability: float = 0.4
    model_zipf: float = 1.0
    load: float = 0.75  # offered sampling work / the fleet's sampling capacity
    bursts: tuple[tuple[float, float, float], ...] = ()  # (start, length) as run fractions, ×rate
    daily_low: float = 0.0  # > 0: a day-shaped rate (see daily_rate), this low at night
    noisy_accounts: int = 0
    noisy_share: float = 0.0  # of all jobs, split over the noisy accounts
    noisy_tier: str = "pro"
    cache_gib: float = 120.0
    bandwidths_mib: tuple[float, ...] = (100.0, 200.0, 400.0)  # node classes, round robin
    vram_load_gib_s: float = 2.0  # disk → GPU memory, for a model not resident
    run_spread: float = 0.25  # σ of the log-normal run time
    failures_per_node_hour: float = 0.01
    repair_seconds: float = 600.0


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("steady", "a loaded fleet (75 %), a dozen checkpoints, the odd node failure"),
        Scenario(
            "noisy-neighbour",
            "overloaded (110 %): 3 accounts send half of all jobs; is everyone's share kept?",
            load=1.1,
            noisy_accounts=3,
            noisy_share=0.5,
        ),
        Scenario(
            "burst",
            "60 % load with two bursts at 4× the rate (5 % of the run each)",
            load=0.6,
            bursts=((0.25, 0.05, 4.0), (0.7, 0.05, 4.0)),
        ),
        Scenario(
            "day",
            "24 hours of a day-shaped rate: 75 % of 100 nodes at 16:00, a tenth of that at 04:00",
            nodes=100,
            # The peak rate is load × nodes / the mean sampling time: 0.75 × 100 / 9.325 s =
            # 8.04 jobs/s; the curve averages 0.1 + 0.9 × 3/8 = 0.4375 of it, so 24 hours
            # bring 8.04 × 86,400 × 0.4375 ≈ 304,000 jobs.
            jobs=304_000,
            load=0.75,
            daily_low=0.1,
        ),
        Scenario(
            "many-models",
            "300 checkpoints and 600 LoRAs with Zipf popularity; caches hold a fraction",
            checkpoints=300,
            loras=600,
            model_zipf=0.9,
            cache_gib=80.0,
            load=0.7,
        ),
    )
}


def scenario(name: str, **overrides: object) -> Scenario:
    """A named scenario with some fields replaced (None leaves a field as it is)."""
    base = SCENARIOS[name]
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]


_TIER_RANK = {"free": 0, "pro": 1, "enterprise": 2}


def _zipf_cumulative(count: int, exponent: float) -> list[float]:
    return list(itertools.accumulate(1.0 / (rank**exponent) for rank in range(1, count + 1)))


def _pick(rng: random.Random, cumulative: list[float]) -> int:
    return bisect.bisect_right(cumulative, rng.random() * cumulative[-1])


def catalogue(s: Scenario, rng: random.Random) -> tuple[list[Model], dict[str, list[Model]]]:
    """Checkpoints in popularity order, and each class's LoRAs in popularity order."""
    names = [name for name, _ in s.class_mix]
    weights = [weight for _, weight in s.class_mix]
    checkpoints = []
    for rank in range(s.checkpoints):
        workflow = names[rank % len(names)] if rank < len(names) else rng.choices(names, weights)[0]
        size = WORKFLOW_CLASSES[workflow].checkpoint_bytes
        checkpoints.append(Model(f"ckpt-{rank:04d}", "checkpoints", size, workflow))
    loras: dict[str, list[Model]] = {name: [] for name in names}
    for rank in range(s.loras):
        workflow = rng.choices(names, weights)[0]
        size = WORKFLOW_CLASSES[workflow].lora_bytes
        loras[workflow].append(Model(f"lora-{rank:04d}", "loras", size, workflow))
    return checkpoints, loras


def mean_run_seconds(s: Scenario) -> float:
    """Expected sampling time of a job, over the class mix."""
    total = sum(weight for _, weight in s.class_mix)
    return sum(WORKFLOW_CLASSES[name].run_seconds * w for name, w in s.class_mix) / total


def arrivals(s: Scenario, seed: int) -> Iterator[Arrival]:
    """``s.jobs`` seeded arrivals in time order (Poisson, with the scenario's bursts or its
    day-shaped rate)."""
    rng = random.Random(seed)
    checkpoints, loras = catalogue(s, rng)
    s = replace(s, accounts=s.accounts or 10 * s.nodes)
    model_weights = _zipf_cumulative(len(checkpoints), s.model_zipf)
    lora_weights = {k: _zipf_cumulative(len(v), s.model_zipf) for k, v in loras.items() if v}
    tiers = [name for name, _ in s.tier_mix]
    # Heavier users buy bigger tiers: the most active accounts get the highest tiers drawn.
    drawn = rng.choices(tiers, [w for _, w in s.tier_mix], k=s.accounts)
    drawn.sort(key=lambda tier: -_TIER_RANK.get(tier, 0))
    accounts = [(f"acct-{i:05d}", tier) for i, tier in enumerate(drawn)]
    noisy = [(f"noisy-{i}", s.noisy_tier) for i in range(s.noisy_accounts)]
    activity = _zipf_cumulative(len(accounts), s.account_zipf)
    rate = s.load * s.nodes / mean_run_seconds(s)  # jobs per second at the base rate
    duration = s.jobs / rate  # about; bursts shorten it a little
    t = 0.0
    for _ in range(s.jobs):
        shape = daily_rate(s.daily_low, t) if s.daily_low else _burst_factor(s, t / duration)
        t += rng.expovariate(rate * shape)
        if noisy and rng.random() < s.noisy_share:
            account, tier = noisy[rng.randrange(len(noisy))]
        else:
            account, tier = accounts[_pick(rng, activity)]
        checkpoint = checkpoints[_pick(rng, model_weights)]
        models: tuple[Model, ...] = (checkpoint,)
        class_loras = loras.get(checkpoint.workflow)
        if class_loras and rng.random() < s.lora_probability:
            models += (class_loras[_pick(rng, lora_weights[checkpoint.workflow])],)
        factor = rng.lognormvariate(0.0, s.run_spread)
        yield Arrival(t, account, tier, checkpoint.workflow, models, factor)


def daily_rate(low: float, at: float) -> float:
    """The day's arrival rate at ``at`` seconds from midnight, as a fraction of its peak:
    ``low`` at 04:00, 1 at 16:00, between them a raised cosine squared, so that nights stay
    near ``low`` (below a third of the peak from 22:00 to 06:00) and the curve is smooth."""
    rise = (1.0 - math.cos(2.0 * math.pi * (at / 3600.0 - 4.0) / 24.0)) / 2.0
    return low + (1.0 - low) * rise * rise


def _burst_factor(s: Scenario, fraction: float) -> float:
    for start, length, factor in s.bursts:
        if start <= fraction < start + length:
            return factor
    return 1.0


class TraceError(ValueError):
    """A CSV trace that cannot be read; the message names the line."""


TRACE_COLUMNS = ("at_s", "account", "tier", "workflow", "models")


def read_trace(path: Path, tiers: frozenset[str]) -> list[Arrival]:
    """Arrivals from a CSV file with the header ``at_s,account,tier,workflow,models``.

    ``models`` is ``key=bytes`` pairs joined by ``;`` (e.g. ``ckpt-a=6979321856;lora-b=2e8``);
    rows may come in any order and are sorted by time.
    """
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"cannot read trace {path}: {exc}") from None
    if not rows or tuple(cell.strip() for cell in rows[0]) != TRACE_COLUMNS:
        raise TraceError(f"{path}: the first line must be {','.join(TRACE_COLUMNS)}")
    found = [
        _trace_row(path, line, row, tiers)
        for line, row in enumerate(rows[1:], start=2)
        if any(cell.strip() for cell in row)  # blank lines are no jobs
    ]
    if not found:
        raise TraceError(f"{path}: no jobs after the header")
    return sorted(found, key=lambda a: a.at)


def _trace_row(path: Path, line: int, row: list[str], tiers: frozenset[str]) -> Arrival:
    where = f"{path}:{line}"
    if len(row) != len(TRACE_COLUMNS):
        raise TraceError(f"{where}: expected {len(TRACE_COLUMNS)} columns, got {len(row)}")
    at_text, account, tier, workflow, models_text = (cell.strip() for cell in row)
    try:
        at = float(at_text)
    except ValueError:
        raise TraceError(f"{where}: at_s {at_text!r} is not a number") from None
    if not math.isfinite(at) or at < 0:
        raise TraceError(f"{where}: at_s must be a time >= 0")
    if not account:
        raise TraceError(f"{where}: account is empty")
    if tier not in tiers:
        raise TraceError(f"{where}: tier {tier!r} is not one of {', '.join(sorted(tiers))}")
    if workflow not in WORKFLOW_CLASSES:
        known = ", ".join(WORKFLOW_CLASSES)
        raise TraceError(f"{where}: workflow {workflow!r} is not one of {known}")
    models = []
    for part in filter(None, (p.strip() for p in models_text.split(";"))):
        key, _, size_text = part.partition("=")
        try:
            size = int(float(size_text))
        except ValueError:
            raise TraceError(f"{where}: model {part!r} is not key=bytes") from None
        if not key or size <= 0:
            raise TraceError(f"{where}: model {part!r} is not key=bytes")
        models.append(Model(key, "checkpoints", size, workflow))
    return Arrival(at, account, tier, workflow, tuple(models))
