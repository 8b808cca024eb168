"""How the fleet's size follows its work, defined once: the stack deploys these rules as Auto
Scaling policies and CloudWatch alarms (cdk/comfyfleet_cdk/scaling.py), and the simulation
applies them minute by minute (comfyfleet.sim), so its figures are the stack's.

Every minute (the period of the group's and the shared queue's metrics):

- **Target tracking**, with nodes taking jobs: the metric is the jobs waiting (the shared
  queue's visible messages) or running (busy nodes) per node taking jobs (idle or busy, by
  the reaper's count: one per GPU), the target ``jobs_per_node``. It falls as the fleet
  grows and rises as it shrinks, whatever the fleet's size, which a backlog alone does not:
  visible messages per node read 0 whenever the fleet is big enough, however much too big,
  and the fleet saws (docs/capacity.md, "Fixed fleet vs autoscaled"). Above the target for
  ``SCALE_OUT_MINUTES`` minutes, the group grows to ``ceil(instances × metric / target)``;
  below ``SCALE_IN_RATIO`` of it for ``SCALE_IN_MINUTES`` minutes, it shrinks to that. These
  are the alarms AWS creates for a target tracking policy. With no node taking jobs the
  metric reads exactly the target (no division by zero, and no action), so a node still
  booting is not scaled in.
- With ``min_nodes = 0`` two step policies come beside it, and the metric adds
  ``FLOOR_PER_NODE`` per node so that target tracking never removes the last node itself:
  **from zero**: no node desired and messages visible → one node; **idle**: no visible
  message and no busy node for ``scale_in_idle_minutes`` → zero nodes.

With no node, every job waiting is a visible shared-queue message or stands behind its
account's ring messages, which are (the reaper moves a gone node's queue to the shared one),
so visible messages are the whole signal for starting from zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

SCALE_OUT_MINUTES = 3
SCALE_IN_MINUTES = 15
SCALE_IN_RATIO = 0.9
FROM_ZERO_MINUTES = 1
FLOOR_PER_NODE = 0.01
DEFAULT_IDLE_MINUTES = 15
DEFAULT_JOBS_PER_NODE = 0.8


@dataclass(frozen=True)
class ScalingRules:
    """A deployment's scaling options (its CDK context)."""

    min_nodes: int
    max_nodes: int
    jobs_per_node: float = DEFAULT_JOBS_PER_NODE
    scale_in_idle_minutes: int = DEFAULT_IDLE_MINUTES

    def __post_init__(self) -> None:
        if not 0 <= self.min_nodes <= self.max_nodes or self.max_nodes < 1:
            raise ValueError(f"need 0 <= min_nodes <= max_nodes >= 1, got {self}")
        if not 0 < self.jobs_per_node <= 100:
            raise ValueError(f"jobs_per_node is above 0 and at most 100, got {self.jobs_per_node}")
        if self.scale_in_idle_minutes < 1:
            raise ValueError("scale_in_idle_minutes is at least 1")

    @property
    def to_zero(self) -> bool:
        """Whether the fleet may shrink to no node (and so must start from none)."""
        return self.min_nodes == 0

    def tracked_metric(self, visible: float, busy: int, in_service: int) -> float:
        """The target tracking metric, as the stack's metric math computes it."""
        if in_service <= 0:
            return float(self.jobs_per_node)
        floor = FLOOR_PER_NODE if self.to_zero else 0.0
        return (visible + busy) / in_service + floor


@dataclass(frozen=True)
class Minute:
    """What the alarms see in one minute."""

    visible: int  # shared queue, ApproximateNumberOfMessagesVisible
    busy: int  # nodes running a job (the reaper's Nodes{status=busy})
    in_service: int  # nodes taking jobs (the reaper's Nodes{status=idle} + busy)


@dataclass
class Scaler:
    """The group's desired capacity, moved by the rules one minute at a time."""

    rules: ScalingRules
    desired: int = field(default=-1)
    _above: int = 0
    _below: int = 0
    _waiting: int = 0
    _idle: int = 0

    def __post_init__(self) -> None:
        if self.desired < 0:
            self.desired = self.rules.min_nodes

    def step(self, seen: Minute) -> int:
        """The desired capacity after this minute's alarms."""
        rules = self.rules
        self._track(seen)
        if rules.to_zero:
            self._from_zero(seen)
            self._to_zero(seen)
        self.desired = max(rules.min_nodes, min(rules.max_nodes, self.desired))
        return self.desired

    def _track(self, seen: Minute) -> None:
        rules, target = self.rules, float(self.rules.jobs_per_node)
        metric = rules.tracked_metric(seen.visible, seen.busy, seen.in_service)
        self._above = self._above + 1 if metric > target else 0
        self._below = self._below + 1 if metric < SCALE_IN_RATIO * target else 0
        wanted = math.ceil(seen.in_service * metric / target - 1e-9)
        # An alarm in ALARM acts every minute; in_service leaves booting nodes out, so
        # ``wanted`` is ceil((visible + busy) / target) and does not run away while they boot.
        if self._above >= SCALE_OUT_MINUTES and wanted > self.desired:
            self.desired = wanted
        elif self._below >= SCALE_IN_MINUTES and wanted < self.desired:
            self.desired = wanted

    def _from_zero(self, seen: Minute) -> None:
        self._waiting = self._waiting + 1 if self.desired == 0 and seen.visible > 0 else 0
        if self._waiting >= FROM_ZERO_MINUTES:
            self.desired, self._waiting = 1, 0

    def _to_zero(self, seen: Minute) -> None:
        self._idle = self._idle + 1 if seen.visible == 0 and seen.busy == 0 else 0
        if self._idle >= self.rules.scale_in_idle_minutes and self.desired > 0:
            self.desired, self._idle = 0, 0
