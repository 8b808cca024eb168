"""A seeded discrete-event simulation of the fleet on the project's own decision code.

``simulate`` runs one scenario under each routing policy asked for, on a fixed fleet or
an autoscaled one (comfyfleet.sim.fleet_size), and returns the figures of ``comfyfleet sim``.
See comfyfleet.sim.engine for what is shared with the services, and docs/capacity.md for
what it shows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from comfyfleet.autoscaling import DEFAULT_IDLE_MINUTES
from comfyfleet.router import POLICIES
from comfyfleet.settings import Settings
from comfyfleet.sim.engine import Outcome, Simulation
from comfyfleet.sim.fleet_size import Autoscale, ElasticSimulation
from comfyfleet.sim.metrics import details, summary
from comfyfleet.sim.workload import (
    DEFAULT_PRICE_PER_HOUR,
    SCENARIOS,
    Arrival,
    Scenario,
    arrivals,
    scenario,
)

__all__ = ["POLICIES", "SCENARIOS", "Autoscale", "Report", "Scenario", "scenario", "simulate"]


@dataclass
class Report:
    scenario: Scenario
    seed: int
    outcomes: dict[str, Outcome]
    price_per_hour: float
    autoscale: Autoscale | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` document: exactly scenario, seed and the policies' figures."""
        return {
            "scenario": self.scenario.name,
            "seed": self.seed,
            "policies": {
                name: summary(out, self.price_per_hour) for name, out in self.outcomes.items()
            },
        }

    def details(self) -> dict[str, dict[str, Any]]:
        return {name: details(out) for name, out in self.outcomes.items()}


def simulate(
    s: Scenario,
    policies: Sequence[str],
    *,
    seed: int,
    settings: Settings | None = None,
    trace: Sequence[Arrival] | None = None,
    price_per_hour: float = DEFAULT_PRICE_PER_HOUR,
    keep_spans: bool = False,
    autoscale: Autoscale | None = None,
    idle_minutes: int = DEFAULT_IDLE_MINUTES,
) -> Report:
    """Run ``s`` once per policy on the same arrivals (generated from ``seed``, or ``trace``).

    With ``autoscale`` the fleet starts at its minimum and follows the scaling rules up to
    their maximum, which replaces ``s.nodes`` (the arrivals' rate is the maximum's);
    ``idle_minutes`` is then the rules' own. Without it the fleet is ``s.nodes``, fixed.
    """
    settings = settings or Settings()
    if autoscale is not None:
        s = replace(s, nodes=autoscale.rules.max_nodes)
    outcomes = {}
    for policy in policies:
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}; one of {', '.join(POLICIES)}")
        stream: Iterable[Arrival] = trace if trace is not None else arrivals(s, seed)
        sim: Simulation
        if autoscale is None:
            sim = Simulation(
                s, policy, settings, seed=seed, keep_spans=keep_spans, idle_minutes=idle_minutes
            )
        else:
            sim = ElasticSimulation(
                s, policy, settings, seed=seed, autoscale=autoscale, keep_spans=keep_spans
            )
        outcomes[policy] = sim.run(stream)
    return Report(s, seed, outcomes, price_per_hour, autoscale)
