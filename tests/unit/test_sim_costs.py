"""The platform's own cost per job (comfyfleet.sim.costs) and ``comfyfleet sim --costs``."""

from __future__ import annotations

import pytest

from comfyfleet.cli import main
from comfyfleet.sim import costs

SMALL, LARGE = costs.SCALES


def test_each_kind_costs_its_requests_and_invocations() -> None:
    for kind in costs.PER_JOB_CALLS:
        lines = costs.per_job_lines(kind)
        assert all(usd >= 0 for usd in lines.values())
        assert lines["API Gateway"] == pytest.approx(3.5e-6)
        assert lines["SNS"] == pytest.approx(0.5e-6)
    previews = costs.per_job_lines("30 steps, previews")
    plain = costs.per_job_lines("model-free")
    assert previews["S3"] > plain["S3"], "previews are uploads"
    assert previews["DynamoDB writes"] > plain["DynamoDB writes"], "progress is written"


def test_the_output_transfer_is_the_largest_line_and_webp_shrinks_it() -> None:
    lines = costs.per_thousand("model-free", SMALL)
    assert max(lines, key=lambda name: lines[name]) == "CloudFront"
    webp = costs.per_thousand("model-free", SMALL, costs.WEBP_OUTPUT_BYTES)
    assert webp["CloudFront"] < lines["CloudFront"] / 5
    assert webp["DynamoDB writes"] == lines["DynamoDB writes"]


def test_the_fleets_own_traffic_is_shared_over_the_days_jobs() -> None:
    small, large = costs.fleet_lines_per_day(SMALL), costs.fleet_lines_per_day(LARGE)
    ratio = LARGE.nodes / SMALL.nodes
    heartbeats = "node heartbeats (DynamoDB writes)"
    assert large[heartbeats] == pytest.approx(small[heartbeats] * ratio)
    snapshots = "api registry snapshots (DynamoDB scans)"
    assert large[snapshots] > small[snapshots] * ratio, "more containers, each scanning more"
    per_job_small = costs.per_thousand("model-free", SMALL)[heartbeats]
    assert per_job_small == pytest.approx(small[heartbeats] / SMALL.jobs_per_day * 1000)


def test_sim_costs_prints_both_scales_beside_the_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "--costs", "--jobs", "400", "--nodes", "8", "--policy", "cost"]) == 0
    out = capsys.readouterr().out
    assert f"as of {costs.PRICES_AS_OF}" in out
    assert "1,000,000 jobs/day, 1,000 nodes" in out and "10,000,000 jobs/day" in out
    assert out.count("platform / GPU (goal <= 1 % at 1M/day)") == 2
    assert "largest line: CloudFront" in out


def test_sim_needs_a_scenario_unless_costs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim"]) == 2
    assert "--scenario is required (or --costs)" in capsys.readouterr().err
