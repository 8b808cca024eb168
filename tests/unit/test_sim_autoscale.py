"""`comfyfleet sim --autoscale`: the fleet follows the stack's scaling rules, seeded."""

from __future__ import annotations

import json

import pytest

from comfyfleet.autoscaling import ScalingRules
from comfyfleet.cli import main
from comfyfleet.settings import Settings
from comfyfleet.sim import Autoscale, scenario, simulate
from comfyfleet.sim.fleet_size import ElasticSimulation
from comfyfleet.sim.workload import Arrival, Model, arrivals, daily_rate

CHECKPOINT = Model("ckpt-a", "checkpoints", 2 * 1024**3, "sd15")
HOUR = 3600.0


def _quiet_trace() -> list[Arrival]:
    """A few jobs, then three hours of nothing, then one job."""
    early = [Arrival(float(at), f"acct-{at}", "pro", "sd15", (CHECKPOINT,)) for at in range(5)]
    return [*early, Arrival(3 * HOUR, "acct-late", "pro", "sd15", (CHECKPOINT,))]


def _autoscale(low: int, high: int, **start: float) -> Autoscale:
    return Autoscale(ScalingRules(low, high), **start)


def test_an_autoscaled_run_is_the_same_for_the_same_seed() -> None:
    s = scenario("burst", jobs=600)
    autoscale = _autoscale(0, 6, boot_seconds=120.0)

    first = simulate(s, ["cost", "random"], seed=5, autoscale=autoscale).to_json()
    again = simulate(s, ["cost", "random"], seed=5, autoscale=autoscale).to_json()

    assert json.dumps(first) == json.dumps(again)
    assert first["policies"]["cost"]["node_hours"] > 0


def test_a_quiet_trace_scales_to_zero_and_back_for_far_fewer_node_hours() -> None:
    s = scenario("steady", nodes=4)
    trace = _quiet_trace()

    elastic = simulate(s, ["cost"], seed=1, trace=trace, autoscale=_autoscale(0, 4))
    fixed = simulate(s, ["cost"], seed=1, trace=trace)

    out = elastic.outcomes["cost"]
    sizes = [size for _, size in out.fleet_sizes]
    first_zero = sizes.index(0)
    assert max(sizes[:first_zero]) >= 1, "it started a node for the early jobs"
    assert max(sizes[first_zero:]) >= 1, "and one again for the late job"
    assert out.completed == len(trace)
    elastic_hours = elastic.to_json()["policies"]["cost"]["node_hours"]
    fixed_hours = fixed.to_json()["policies"]["cost"]["node_hours"]
    assert fixed_hours == pytest.approx(4 * fixed.outcomes["cost"].makespan / HOUR, rel=1e-3)
    assert elastic_hours < 0.1 * fixed_hours
    # The late job came after an idle period and waited for a node to boot.
    assert out.first_after_idle_waits and out.first_after_idle_waits[0] >= 600.0


def test_a_fixed_fleet_measures_the_first_job_after_an_idle_period_too() -> None:
    report = simulate(scenario("steady", nodes=2), ["cost"], seed=1, trace=_quiet_trace())

    out = report.outcomes["cost"]
    assert len(out.first_after_idle_waits) == 1  # the late job; nothing waited at 0 before
    assert report.to_json()["policies"]["cost"]["first_after_idle_p95_s"] < 60.0


# Enough jobs for the fleet to shrink several times while some of its nodes run jobs.
JOBS = 2500


def test_the_fleet_never_exceeds_its_maximum_nor_removes_a_node_running_a_job() -> None:
    # A light load with bursts: the fleet grows and shrinks while some nodes run jobs.
    s = scenario("burst", nodes=5, jobs=JOBS, load=0.2, failures_per_node_hour=2.0)
    sim = ElasticSimulation(
        s, "cost", Settings(), seed=2, autoscale=_autoscale(1, 5, warm_seconds=30.0)
    )
    removed_busy: list[int] = []
    others_busy: list[int] = []
    remove = sim._remove

    def checked_remove(index: int, now: float) -> None:
        if sim.nodes[index].job >= 0:
            removed_busy.append(index)
        others_busy.append(sum(1 for i in sim.launched_at if sim.nodes[i].job >= 0))
        remove(index, now)

    sim._remove = checked_remove  # type: ignore[method-assign]
    out = sim.run(arrivals(s, 2))

    sizes = [size for _, size in out.fleet_sizes]
    assert max(sizes) == 5 and min(sizes) == 1
    assert removed_busy == []
    assert sum(1 for busy in others_busy if busy) >= 5, "removals while nodes ran jobs"
    assert len(sim.nodes) > 10, "it scaled in and out again"
    assert out.failures > 0
    assert out.completed + out.rejected == JOBS


def test_the_day_is_quiet_at_night_and_peaks_in_the_afternoon() -> None:
    assert daily_rate(0.1, 4 * HOUR) == pytest.approx(0.1)
    assert daily_rate(0.1, 16 * HOUR) == pytest.approx(1.0)
    assert max(daily_rate(0.1, h * HOUR) for h in (22, 23, 0, 1, 2, 3, 5, 6)) < 1 / 3
    # A tenth of the fleet and of the jobs: the same rate per node, the same 24 hours.
    day = scenario("day", nodes=10, jobs=30_400)
    times = [a.at for a in arrivals(day, 3)]
    per_hour = [0] * 25
    for at in times:
        per_hour[int(at // HOUR)] += 1
    assert times == [a.at for a in arrivals(day, 3)]
    assert 23 * HOUR < times[-1] < 25 * HOUR
    assert 0.07 < per_hour[4] / per_hour[16] < 0.14


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5", "'5' is not MIN:MAX"),
        ("0:0", "'0:0' is not MIN:MAX"),
        ("3:2", "'3:2' is not MIN:MAX"),
        ("-1:4", "'-1:4' is not MIN:MAX"),
        ("a:b", "'a:b' is not MIN:MAX"),
    ],
)
def test_a_bad_autoscale_range_exits_2_with_the_reason(
    value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["sim", "--scenario", "steady", f"--autoscale={value}"])

    assert stopped.value.code == 2
    assert f"argument --autoscale: {message}" in capsys.readouterr().err


def test_the_command_autoscales_and_prints_node_hours(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["sim", "--scenario", "burst", "--jobs", "300", "--policy", "cost"]

    code = main([*argv, "--nodes", "50", "--autoscale", "0:4", "--warm-seconds", "45"])

    table = capsys.readouterr().out
    assert code == 0
    assert "autoscaled 0:4, warm pool 45 s, idle 15 min" in table
    assert "node-h" in table and "1st after idle p95 s" in table
    main([*argv, "--autoscale", "0:4", "--json"])
    figures = json.loads(capsys.readouterr().out)["policies"]["cost"]
    assert figures["node_hours"] > 0 and figures["first_after_idle_p95_s"] == 0.0
