"""`comfyfleet sim`: seeded, its figures as defined, traces read, bad input refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfyfleet.cli import main
from comfyfleet.settings import Settings
from comfyfleet.sim import scenario, simulate
from comfyfleet.sim.engine import Simulation
from comfyfleet.sim.fifo import FifoQueue
from comfyfleet.sim.metrics import jain_index, percentile
from comfyfleet.sim.workload import Arrival, Model, TraceError, arrivals, read_trace

SMALL = {"nodes": 6, "jobs": 500}
KEYS = {
    "p50_wait_s",
    "p95_wait_s",
    "p99_wait_s",
    "cold_start_fraction",
    "bytes_downloaded",
    "gpu_utilisation",
    "jain_index",
    "cost_per_1000_images",
    "node_hours",
    "first_after_idle_p95_s",
}
TIERS = frozenset({"free", "pro", "enterprise"})


# -- metric definitions ---------------------------------------------------------------


def test_jain_index_is_one_for_equal_shares_and_one_over_n_when_one_takes_all() -> None:
    assert jain_index([2.0, 2.0, 2.0, 2.0]) == pytest.approx(1.0)
    assert jain_index([5.0, 0.0, 0.0, 0.0]) == pytest.approx(0.25)
    assert jain_index([1.0, 3.0]) == pytest.approx(16 / 20)  # (1+3)² / (2·(1+9))


def test_percentiles_are_nearest_rank() -> None:
    ordered = [float(v) for v in range(1, 101)]

    assert percentile(ordered, 0.50) == 50.0
    assert percentile(ordered, 0.95) == 95.0
    assert percentile(ordered, 0.99) == 99.0
    assert percentile([], 0.5) == 0.0


def test_cost_per_image_is_the_fleets_hours_at_the_price_over_images() -> None:
    s = scenario("steady", **SMALL)
    report = simulate(s, ["cost"], seed=4, price_per_hour=2.0)
    out = report.outcomes["cost"]

    figures = report.to_json()["policies"]["cost"]

    expected = 2.0 * s.nodes * out.makespan / 3600 / out.completed * 1000
    assert figures["cost_per_1000_images"] == pytest.approx(expected, rel=1e-3)
    assert figures["gpu_utilisation"] == pytest.approx(
        out.sampling_seconds / out.node_seconds, abs=1e-4
    )


# -- the simulation -------------------------------------------------------------------


def test_the_same_seed_gives_the_same_figures_and_another_seed_others() -> None:
    s = scenario("many-models", **SMALL)

    first = simulate(s, ["cost", "random"], seed=11).to_json()
    again = simulate(s, ["cost", "random"], seed=11).to_json()
    other = simulate(s, ["cost", "random"], seed=12).to_json()

    assert first == again
    assert first["policies"] != other["policies"]


def test_every_admitted_job_ends_and_the_rest_were_refused_at_admission() -> None:
    s = scenario("noisy-neighbour", nodes=4, jobs=1500)

    out = simulate(s, ["cost"], seed=3).outcomes["cost"]

    assert out.completed + out.rejected == 1500
    assert out.rejected > 0  # the noisy accounts hit their queue depth / rate limit
    assert len(out.waits) == out.completed
    assert min(out.waits) >= 0


def test_an_account_never_holds_more_ring_messages_than_its_slots() -> None:
    s = scenario("noisy-neighbour", nodes=4, jobs=800)
    sim = Simulation(s, "least_loaded", Settings(), seed=5)
    seen: list[bool] = []
    original = sim._send

    def checked_send(job: int, account: object, now: float) -> None:
        original(job, account, now)  # type: ignore[arg-type]
        held = sim.account_of[job]
        share = held.limits.share
        seen.append(held.ring <= share.ring_slots and held.ring + held.running <= share.concurrency)

    sim._send = checked_send  # type: ignore[method-assign]
    sim.run(arrivals(s, 5))

    assert seen and all(seen)


def test_cost_routing_downloads_less_than_least_loaded_with_many_models() -> None:
    s = scenario("many-models", nodes=8, jobs=1500)

    figures = simulate(s, ["cost", "least_loaded"], seed=2).to_json()["policies"]

    assert figures["cost"]["bytes_downloaded"] < figures["least_loaded"]["bytes_downloaded"]


def test_the_fifo_model_serves_oldest_first_and_holds_a_group_in_flight() -> None:
    queue: FifoQueue[str] = FifoQueue()
    for group, body in [("a", "a1"), ("a", "a2"), ("b", "b1")]:
        queue.send(group, body)

    first = queue.receive(0.0, 30)
    second = queue.receive(0.0, 30)
    blocked = queue.receive(0.0, 30)
    after_expiry = queue.receive(31.0, 30)

    assert (first and first.body, second and second.body, blocked) == ("a1", "b1", None)
    assert after_expiry is not None and after_expiry.body == "a1"  # visible again, in place


# -- traces ---------------------------------------------------------------------------


def _trace(tmp_path: Path, rows: list[str]) -> Path:
    path = tmp_path / "trace.csv"
    path.write_text("at_s,account,tier,workflow,models\n" + "\n".join(rows) + "\n")
    return path


def test_a_csv_trace_drives_the_simulation(tmp_path: Path) -> None:
    path = _trace(
        tmp_path,
        [
            "5,alice,pro,sdxl,ckpt-x=6979321856;lora-y=228000000",
            "0,bob,free,sd15,ckpt-z=2132625894",
            "1.5,alice,pro,sdxl,ckpt-x=6979321856",
        ],
    )

    trace = read_trace(path, TIERS)
    report = simulate(scenario("steady", nodes=2), ["cost"], seed=1, trace=trace)
    out = report.outcomes["cost"]

    assert [a.at for a in trace] == [0.0, 1.5, 5.0]
    assert trace[2] == Arrival(
        5.0,
        "alice",
        "pro",
        "sdxl",
        (
            Model("ckpt-x", "checkpoints", 6979321856, "sdxl"),
            Model("lora-y", "checkpoints", 228000000, "sdxl"),
        ),
    )
    assert out.completed == 3
    assert out.bytes_downloaded >= 6979321856 + 2132625894  # each checkpoint once at least


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (["soon,alice,pro,sdxl,ckpt=1"], "trace.csv:2: at_s 'soon' is not a number"),
        (["1,alice,gold,sdxl,ckpt=1"], "trace.csv:2: tier 'gold'"),
        (["1,alice,pro,video,ckpt=1"], "trace.csv:2: workflow 'video'"),
        (["1,alice,pro,sdxl,ckpt=-4"], "trace.csv:2: model 'ckpt=-4' is not key=bytes"),
        (["1,alice,pro,sdxl"], "trace.csv:2: expected 5 columns, got 4"),
        ([], "no jobs after the header"),
    ],
)
def test_a_bad_trace_names_its_line(tmp_path: Path, rows: list[str], message: str) -> None:
    path = _trace(tmp_path, rows)

    with pytest.raises(TraceError, match=message.replace("(", r"\(")):
        read_trace(path, TIERS)


def test_a_trace_without_its_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text("1,alice,pro,sdxl,ckpt=1\n")

    with pytest.raises(TraceError, match="the first line must be at_s,account,tier"):
        read_trace(path, TIERS)


# -- the command ----------------------------------------------------------------------


def test_json_output_has_exactly_the_documented_shape(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sim", "--scenario", "burst", "--nodes", "5", "--jobs", "300", "--json"])

    document = json.loads(capsys.readouterr().out)
    assert code == 0
    assert set(document) == {"scenario", "seed", "policies"}
    assert (document["scenario"], document["seed"]) == ("burst", 1)
    assert set(document["policies"]) == {"cost", "coverage", "least_loaded", "random"}
    assert all(set(figures) == KEYS for figures in document["policies"].values())


def test_the_table_names_each_policy(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "sim",
            "--scenario",
            "steady",
            "--policy",
            "coverage",
            "--nodes",
            "4",
            "--jobs",
            "200",
            "--seed",
            "7",
        ]
    )

    out = capsys.readouterr().out
    assert code == 0
    assert "scenario steady, seed 7" in out
    assert "coverage" in out and "least_loaded" not in out


def test_plot_writes_the_two_charts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "sim",
            "--scenario",
            "steady",
            "--policy",
            "cost",
            "--nodes",
            "4",
            "--jobs",
            "200",
            "--plot",
            str(tmp_path / "charts"),
        ]
    )

    assert code == 0
    for name in ("steady-wait-cdf.png", "steady-utilisation.png"):
        assert (tmp_path / "charts" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--scenario", "tuesday"], "argument --scenario: invalid choice: 'tuesday'"),
        (["--scenario", "steady", "--policy", "fastest"], "argument --policy: invalid choice"),
        (["--scenario", "steady", "--nodes", "0"], "argument --nodes: 0 must be at least 1"),
        (["--scenario", "steady", "--jobs", "many"], "argument --jobs: 'many' is not a whole"),
        (["--scenario", "steady", "--seed", "x"], "argument --seed: invalid int value"),
        (["--scenario", "steady", "--price", "-1"], "argument --price: -1 must be a positive"),
    ],
)
def test_bad_arguments_exit_2_with_the_reason(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["sim", *argv])

    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


def test_an_unreadable_trace_exits_2_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _trace(tmp_path, ["1,alice,gold,sdxl,ckpt=1"])

    code = main(["sim", "--scenario", "steady", "--trace", str(path)])

    assert code == 2
    assert "tier 'gold' is not one of enterprise, free, pro" in capsys.readouterr().err
    missing = main(["sim", "--scenario", "steady", "--trace", str(tmp_path / "nope.csv")])
    assert missing == 2
    assert "cannot read trace" in capsys.readouterr().err
