"""An autoscaled fleet: the engine's nodes inside an Auto Scaling group that follows the
stack's own rules (``comfyfleet.autoscaling``), one simulated minute at a time.

Every 60 s ``Scaler.step`` sees the minute (the shared queue's visible messages, the nodes
running a job, the nodes in service) and answers the desired capacity; the group then:

- launches what is missing; a new instance joins the fleet (registers, polls) after the
  boot time, or the warm-pool start time when there is a warm pool (assumed deep enough);
- removes what is too much: booting instances first, then idle ones in service, the most
  recently launched first. A node running a job is protected from scale-in (the agent sets
  instance protection while it runs one, gpu_agent/scale_in.py): it goes only once idle, at
  a later minute, if still in excess. A removed node's own queue goes to the shared queue
  at once (the agent's drain hands it off) and the node leaves the registry.

An instance is paid from its launch, boot included, to its removal. Node failures stay the
engine's: a failed node's slot stays launched (the group replaces the instance) and its new
instance joins after the repair time, as in a fixed fleet.
"""

from __future__ import annotations

from dataclasses import dataclass

from comfyfleet.autoscaling import Minute, Scaler, ScalingRules
from comfyfleet.settings import Settings
from comfyfleet.sim.engine import NEXT_EVENT_KIND, Handler, Simulation
from comfyfleet.sim.nodes import new_node
from comfyfleet.sim.workload import Scenario

# Launch to taking jobs, in seconds: estimates, not measured on AWS (docs/capacity.md gives
# the reasoning). From scratch the bootstrap installs apt packages, uv, ComfyUI, CUDA PyTorch
# and the requirements and sets up the nodes; a baked image launches, boots, reads its files
# lazily from the snapshot and starts ComfyUI (both the stack's instance warmups too); a
# stopped warm-pool instance only starts and starts ComfyUI.
COLD_BOOT_SECONDS = 600.0
BAKED_BOOT_SECONDS = 180.0
WARM_START_SECONDS = 60.0
MINUTE_SECONDS = 60.0  # the period of the group's and the queue's metrics
_SCALE, _BOOT = NEXT_EVENT_KIND, NEXT_EVENT_KIND + 1


@dataclass(frozen=True)
class Autoscale:
    """The group's scaling rules and how long a new instance takes to take jobs."""

    rules: ScalingRules
    boot_seconds: float = COLD_BOOT_SECONDS
    warm_seconds: float | None = None  # with a warm pool: every scale-out starts this fast

    def __post_init__(self) -> None:
        if not self.boot_seconds > 0 or (self.warm_seconds is not None and self.warm_seconds <= 0):
            raise ValueError("boot_seconds and warm_seconds are positive")

    @property
    def start_seconds(self) -> float:
        """Launch to taking jobs, for an instance started by a scale-out."""
        return self.boot_seconds if self.warm_seconds is None else self.warm_seconds


class ElasticSimulation(Simulation):
    """The engine's fleet, sized by the stack's scaling rules; ``s.nodes`` is the maximum."""

    def __init__(
        self,
        s: Scenario,
        policy: str,
        settings: Settings,
        *,
        seed: int,
        autoscale: Autoscale,
        keep_spans: bool = False,
    ) -> None:
        if s.nodes != autoscale.rules.max_nodes:
            raise ValueError(f"the scenario's nodes ({s.nodes}) must be the maximum")
        self.autoscale = autoscale
        self.scaler = Scaler(autoscale.rules)
        self.launched_at: dict[int, float] = {}  # live slots, oldest launch first
        self.booting: set[int] = set()
        self.billed = 0.0  # node-seconds of the slots already removed
        super().__init__(
            s,
            policy,
            settings,
            seed=seed,
            keep_spans=keep_spans,
            idle_minutes=autoscale.rules.scale_in_idle_minutes,
        )

    def _start_fleet(self) -> None:
        """The minimum in service at time 0, and the first minute's alarms at 60 s."""
        for _ in range(self.autoscale.rules.min_nodes):
            node = new_node(len(self.nodes), self.s)
            self.nodes.append(node)
            self.launched_at[node.index] = 0.0
            self._enter_service(node, 0.0)
        self._push(MINUTE_SECONDS, _SCALE, 0)

    def _handlers(self) -> tuple[Handler, ...]:
        return (*super()._handlers(), self._scale, self._boot)

    # -- the group -----------------------------------------------------------------------

    def _scale(self, now: float, _a: int, _b: int) -> None:
        """One minute of the group: the alarms, then launches or removals."""
        live = [self.nodes[index] for index in self.launched_at]
        seen = Minute(
            visible=self.shared_queued,
            busy=sum(1 for node in live if node.up and node.job >= 0),
            in_service=sum(1 for node in live if node.up),
        )
        excess = len(self.launched_at) - self.scaler.step(seen)
        for _ in range(-excess):
            self._launch(now)
        for index in self._scale_in_order()[: max(excess, 0)]:
            self._remove(index, now)
        self.out.fleet_sizes.append((now, len(self.launched_at)))
        self._push(now + MINUTE_SECONDS, _SCALE, 0)

    def _scale_in_order(self) -> list[int]:
        """Slots the group may remove, first to go first: booting, then idle in service,
        the most recently launched first; busy (protected) and failed slots are not."""
        newest = list(reversed(self.launched_at))
        booting = [index for index in newest if index in self.booting]
        idle = [
            index
            for index in newest
            if index not in self.booting and self.nodes[index].up and self.nodes[index].job < 0
        ]
        return booting + idle

    def _launch(self, now: float) -> None:
        node = new_node(len(self.nodes), self.s)
        node.up = False
        self.nodes.append(node)
        self.launched_at[node.index] = now
        self.booting.add(node.index)
        self._push(now + self.autoscale.start_seconds, _BOOT, node.index)

    def _boot(self, now: float, index: int, _b: int) -> None:
        """A launched instance has booted: its agent registers and polls."""
        if index in self.booting:  # not removed while it booted
            self.booting.discard(index)
            self._enter_service(self.nodes[index], now)

    def _remove(self, index: int, now: float) -> None:
        self.billed += now - self.launched_at.pop(index)
        if index in self.booting:
            self.booting.discard(index)
            return
        node = self.nodes[index]
        node.up, node.idle = False, False
        node.generation += 1  # its pending failure is no more
        self.out.node_seconds += now - node.up_since
        self._reap(now, index, 0)  # leaves the registry; its queue goes to the shared one

    def _billed_seconds(self, now: float) -> float:
        return self.billed + sum(now - launched for launched in self.launched_at.values())
