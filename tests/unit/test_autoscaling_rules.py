"""The fleet's scaling rules (comfyfleet.autoscaling), minute by minute, as the stack's
policies apply them and the simulation replays them."""

from __future__ import annotations

import pytest

from comfyfleet.autoscaling import (
    FROM_ZERO_MINUTES,
    SCALE_IN_MINUTES,
    SCALE_OUT_MINUTES,
    Minute,
    Scaler,
    ScalingRules,
)


def run(scaler: Scaler, seen: Minute, minutes: int) -> list[int]:
    return [scaler.step(seen) for _ in range(minutes)]


def test_jobs_waiting_with_no_node_start_exactly_one() -> None:
    scaler = Scaler(ScalingRules(0, 10))
    assert scaler.desired == 0
    desired = run(scaler, Minute(visible=40, busy=0, in_service=0), 30)
    # One node, then nothing more until it is in service: no division by zero.
    assert desired[FROM_ZERO_MINUTES - 1] == 1 and set(desired[FROM_ZERO_MINUTES:]) == {1}


def test_a_booting_node_is_never_scaled_in() -> None:
    scaler = Scaler(ScalingRules(0, 10), desired=1)
    assert set(run(scaler, Minute(visible=0, busy=0, in_service=0), 14)) == {1}


def test_once_in_service_target_tracking_grows_to_the_jobs_in_the_system() -> None:
    scaler = Scaler(ScalingRules(0, 10, jobs_per_node=2), desired=1)
    desired = run(scaler, Minute(visible=8, busy=1, in_service=1), SCALE_OUT_MINUTES)
    # ceil((8 waiting + 1 running) / 2), after 3 minutes above the target.
    assert desired == [1] * (SCALE_OUT_MINUTES - 1) + [5]
    assert run(scaler, Minute(visible=100, busy=5, in_service=5), 1) == [10]  # max_nodes


def test_a_fleet_that_keeps_up_holds_its_size_instead_of_sawing() -> None:
    # Every node busy, nothing waiting: a backlog-only metric would read 0 and cut the
    # fleet to one; jobs in the system per node read 1, above 0.8: it holds (or grows).
    scaler = Scaler(ScalingRules(0, 100, jobs_per_node=0.8), desired=20)
    desired = run(scaler, Minute(visible=0, busy=20, in_service=20), 60)
    # ceil(20 × 1.01 / 0.8) = 26 (the 0.01 per node keeps the last one): some headroom.
    assert min(desired) == 20 and desired[-1] == 26


def test_the_last_node_goes_only_after_the_idle_minutes() -> None:
    rules = ScalingRules(0, 10, scale_in_idle_minutes=20)
    scaler = Scaler(rules, desired=4)
    desired = run(scaler, Minute(visible=0, busy=0, in_service=4), 20)
    # Target tracking takes it to one after its 15 minutes, never to none ...
    assert desired[SCALE_IN_MINUTES - 2] == 4 and desired[SCALE_IN_MINUTES - 1] == 1
    # ... the idle policy takes the last one after 20 minutes without a job.
    assert desired[18] == 1 and desired[19] == 0


def test_a_busy_node_keeps_the_fleet_from_zero() -> None:
    scaler = Scaler(ScalingRules(0, 10), desired=1)
    # One job running on one node reads 1.01 per node, above 0.8: a second node, never none.
    assert set(run(scaler, Minute(visible=0, busy=1, in_service=1), 120)) == {1, 2}


def test_a_minimum_above_zero_is_never_left() -> None:
    scaler = Scaler(ScalingRules(2, 10), desired=6)
    assert run(scaler, Minute(visible=0, busy=0, in_service=6), 60)[-1] == 2
    assert ScalingRules(2, 10).tracked_metric(0, 0, 6) == 0.0  # no floor: the minimum holds


def test_the_tracked_metric_is_the_target_with_no_node_in_service() -> None:
    rules = ScalingRules(0, 10, jobs_per_node=3)
    assert rules.tracked_metric(50, 0, 0) == 3
    assert rules.tracked_metric(5, 1, 2) == pytest.approx(3.01)


@pytest.mark.parametrize(
    "bad",
    [
        {"min_nodes": 3, "max_nodes": 2},
        {"min_nodes": 0, "max_nodes": 0},
        {"min_nodes": -1, "max_nodes": 2},
        {"min_nodes": 0, "max_nodes": 2, "scale_in_idle_minutes": 0},
        {"min_nodes": 0, "max_nodes": 2, "jobs_per_node": 0},
    ],
)
def test_rules_refuse_bounds_that_cannot_hold(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        ScalingRules(**bad)
