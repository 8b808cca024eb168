"""Scale-in protection while a job runs: the Auto Scaling group never picks an instance with a
running job when it shrinks (the termination hook's drain still covers every other ending).

An instance with several GPUs runs one agent per GPU, each its own process: each marks itself
busy in a folder they share, and the instance is protected while any mark is there. The
marks, the decision and the call happen under one file lock, so two agents flipping at once
cannot leave the last word to the wrong one. A failed call is logged, never raised: a job
must not fail because the instance could not be protected (the drain hook stays).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

logger = logging.getLogger(__name__)

_LOCK = ".lock"
_APPLIED = ".protected"  # what the group was last told: "1" or "0"


class ScaleInProtection:
    """One agent's share of its instance's scale-in protection."""

    def __init__(
        self, autoscaling: Any, *, group: str, instance_id: str, agent: str, busy_dir: Path
    ) -> None:
        self.autoscaling = autoscaling
        self.group = group
        self.instance_id = instance_id
        self.busy_dir = busy_dir
        self._mark = busy_dir / f"{agent}.busy"

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Protected from scale-in for the block (while no other agent here still runs)."""
        self._change(busy=True)
        try:
            yield
        finally:
            self._change(busy=False)

    def reset(self) -> None:
        """At start: a mark this agent left when it was killed mid-job would protect the
        instance for ever; drop it and tell the group what holds now."""
        self._change(busy=False, force=True)

    def _change(self, *, busy: bool, force: bool = False) -> None:
        try:
            self.busy_dir.mkdir(parents=True, exist_ok=True)
            with open(self.busy_dir / _LOCK, "a+") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if busy:
                    self._mark.touch()
                else:
                    self._mark.unlink(missing_ok=True)
                self._apply(any(self.busy_dir.glob("*.busy")), force=force)
        except OSError:
            logger.warning(
                "scale-in protection: the busy folder %s failed", self.busy_dir, exc_info=True
            )

    def _apply(self, protect: bool, *, force: bool) -> None:
        applied = self.busy_dir / _APPLIED
        wanted = "1" if protect else "0"
        if not force and applied.exists() and applied.read_text() == wanted:
            return  # another agent of this instance already told the group
        try:
            self.autoscaling.set_instance_protection(
                AutoScalingGroupName=self.group,
                InstanceIds=[self.instance_id],
                ProtectedFromScaleIn=protect,
            )
        except (BotoCoreError, ClientError):
            # Unchanged record: the next change tries again.
            logger.warning(
                "scale-in protection not %s", "set" if protect else "cleared", exc_info=True
            )
            return
        applied.write_text(wanted)
