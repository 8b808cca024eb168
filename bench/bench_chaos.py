"""The chaos run (bench/chaos.py) as bench figures: nothing lost, nothing completed twice, one
event id per ended job, no job failed by a fault retries absorb; and its drain time and p95
wait beside a calm run of the same jobs (no faults, no kills, every webhook answered) in the
same session."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from bench.chaos import ChaosPlan, run_chaos
from bench.common import Figure


def run(quick: bool = False) -> list[Figure]:
    plan = ChaosPlan(jobs=60, submit_seconds=20.0) if quick else ChaosPlan()
    calm = dataclasses.replace(
        plan, fault_share=0.0, kill_every=(1e9, 1e9), webhook_fail_share=0.0, cancel_share=0.0
    )
    with tempfile.TemporaryDirectory(prefix="bench-chaos-") as state:
        chaotic = run_chaos(plan, Path(state) / "chaos")
        quiet = run_chaos(calm, Path(state) / "calm")
    c, q = chaotic.counts, quiet.counts
    ended = c["completed"] + c["failed"] + c["cancelled"]
    kills = (
        f"{c['agents_killed']} agents and {c['comfys_killed']} fakecomfy killed, "
        f"{c['fault_share']:.0%} of AWS calls failed"
    )
    return [
        Figure(
            "chaos: jobs lost",
            c["lost"],
            "jobs",
            "0",
            c["lost"] == 0,
            f"of {c['submitted']} admitted; {kills}",
        ),
        Figure(
            "chaos: jobs completed twice",
            c["completed_twice"],
            "jobs",
            "0",
            c["completed_twice"] == 0,
            f"{c['stray_outputs']} stray outputs of killed runs",
        ),
        Figure(
            "chaos: ended jobs with one event id",
            c["events_one_id"],
            "jobs",
            f"= {ended} ended",
            c["events_one_id"] == ended and c["events_extra_ids"] == 0,
            f"{c['webhook_refused_on_purpose']} first deliveries refused",
        ),
        Figure(
            "chaos: jobs failed but by exhausted attempts",
            c["failed_not_exhausted"],
            "jobs",
            "0 (a fault retries absorb fails none)",
            c["failed_not_exhausted"] == 0,
            f"failed by code {c['failed_by_code'] or '{}'} (max_attempts_exceeded: every run "
            f"of the job was killed); calm run: {q['failed']} failed",
        ),
        Figure(
            "chaos: drain after the last submit",
            c["drain_seconds"],
            "s",
            "reported",
            True,
            f"calm run: {q['drain_seconds']} s",
        ),
        Figure(
            "chaos: p95 submit to completed",
            c["p95_submit_to_completed_s"],
            "s",
            "reported",
            True,
            f"calm run: {q['p95_submit_to_completed_s']} s",
        ),
    ]
