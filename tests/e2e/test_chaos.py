"""A short chaos round (bench/chaos.py, fixed seed) on the dev stack: agents and fakecomfy
servers SIGKILLed every few seconds, 5 % of the functions' and agents' AWS calls failing as
AWS fails them, a webhook receiver refusing a share of first deliveries. Nothing admitted is
lost, nothing completes twice, every ended job's event arrives once, signed. The long run
(200 jobs, default leases) is `python -m bench.chaos`, in `make bench`."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos import ChaosPlan, run_chaos
from tests.e2e.conftest import stack_env

pytestmark = pytest.mark.slow

SHORT = ChaosPlan(
    jobs=24,
    seed=7,
    submit_seconds=12.0,
    kill_every=(2.0, 4.0),
    drain_timeout=120.0,
    # Short leases and a fast reaper, as the failover tests: the round stays under a minute.
    env={
        **{k: v for k, v in stack_env().items() if k.startswith("COMFYFLEET_")},
        "COMFYFLEET_LEASE_SECONDS": "5",
        "COMFYFLEET_HEARTBEAT_SECONDS": "1",
        "COMFYFLEET_NODE_STALE_SECONDS": "5",
    },
    args=("--reaper-seconds", "2"),
)


def test_a_short_chaos_round_loses_nothing_and_completes_nothing_twice(tmp_path: Path) -> None:
    outcome = run_chaos(SHORT, tmp_path)
    counts, report = outcome.counts, outcome.table()

    assert counts["submitted"] == SHORT.jobs, report
    assert counts["agents_killed"] + counts["comfys_killed"] >= 2, report  # chaos happened
    assert counts["lost"] == 0, report
    assert counts["completed_twice"] == 0, report
    assert counts["failed_not_exhausted"] == 0, report  # only a job killed on every run fails
    ended = counts["completed"] + counts["failed"] + counts["cancelled"]
    assert counts["events_one_id"] == ended and counts["events_extra_ids"] == 0, report
    assert counts["unsigned_deliveries"] == 0, report
    assert counts["webhook_refused_on_purpose"] > 0, report  # retries were exercised
