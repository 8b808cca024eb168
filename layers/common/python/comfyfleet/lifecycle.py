"""A GPU instance leaving the fleet: the Auto Scaling termination lifecycle hook.

Auto Scaling holds a terminating instance (``Terminating:Wait``) and EventBridge delivers
"EC2 Instance-terminate Lifecycle Action". The node id of a one-GPU instance's agent is the
instance id; an instance with N GPUs runs N agents, nodes ``<instance id>-gpu<i>``
(gpu_agent.identity.per_gpu), and every one of them is drained, together.
The drain, each step safe to repeat (EventBridge may deliver the event twice):

1. the instance's nodes → ``draining`` in the registry, so routing sends them nothing more
   (set again at every check: an agent's heartbeat reports its own status);
2. their node queues' waiting messages → the shared queue;
3. wait for the jobs running on them to end, up to ``drain_grace_seconds`` and the
   function's remaining time, recording lifecycle heartbeats so the hook does not time out;
4. move what reached their queues meanwhile (a job released) to the shared queue, delete the
   queues, remove the nodes from the registry;
5. complete the lifecycle action with CONTINUE.

A job still running when the instance goes has its lease run out; the reaper queues it again
(its node is gone) and sends it to the shared queue.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from comfyfleet.domain import JobState, NodeInfo, NodeStatus
from comfyfleet.errors import ComfyFleetError, NotFound, StorageError
from comfyfleet.resources import node_queue_name
from comfyfleet.scheduling import Dispatcher
from comfyfleet.settings import Settings

logger = logging.getLogger(__name__)

TERMINATE_DETAIL_TYPE = "EC2 Instance-terminate Lifecycle Action"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"
CONTINUE = "CONTINUE"
# Kept back from the function's remaining time for the steps after the wait.
RESERVE_SECONDS = 30.0
POLL_SECONDS = 5.0
HEARTBEAT_EVERY_SECONDS = 60.0
# A GPU's agent on a multi-GPU instance: "<instance id>-gpu<i>" (gpu_agent.identity.per_gpu).
_GPU_SUFFIX = re.compile(r"-gpu(\d+)")
# Far above any instance type's GPU count; bounds the look for queues of unregistered agents.
MAX_GPUS = 64


def gpu_index_on(node_id: str, instance_id: str) -> int | None:
    """The GPU index of ``node_id`` if it is a per-GPU agent of ``instance_id``, else None."""
    if not node_id.startswith(instance_id):
        return None
    found = _GPU_SUFFIX.fullmatch(node_id[len(instance_id) :])
    return int(found.group(1)) if found else None


class InvalidLifecycleEvent(ValueError):
    """The event is not a termination lifecycle action this function can act on."""


@dataclass(frozen=True, slots=True)
class LifecycleAction:
    instance_id: str
    hook_name: str
    group_name: str
    token: str

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> LifecycleAction:
        """The action of an EventBridge lifecycle event (InvalidLifecycleEvent otherwise)."""
        detail = event.get("detail")
        if not isinstance(detail, Mapping):
            raise InvalidLifecycleEvent("the event has no detail")
        transition = detail.get("LifecycleTransition", TERMINATING)
        if transition != TERMINATING:
            raise InvalidLifecycleEvent(f"not a termination: {transition}")
        fields = ("EC2InstanceId", "LifecycleHookName", "AutoScalingGroupName")
        values = [detail.get(name) for name in (*fields, "LifecycleActionToken")]
        missing = [
            name
            for name, value in zip((*fields, "LifecycleActionToken"), values, strict=True)
            if not isinstance(value, str) or not value
        ]
        if missing:
            raise InvalidLifecycleEvent(f"the detail lacks {', '.join(missing)}")
        instance, hook, group, token = (str(value) for value in values)
        return cls(instance_id=instance, hook_name=hook, group_name=group, token=token)


class LifecycleActions(Protocol):
    def heartbeat(self, action: LifecycleAction) -> None:
        """Keep the instance waiting (restart the hook's heartbeat timeout)."""
        ...

    def complete(self, action: LifecycleAction, result: str) -> bool:
        """Let the instance go; False if the action had already ended (a repeat)."""
        ...


class AutoScalingLifecycleActions:
    """Lifecycle actions through the Auto Scaling API (boto3 ``autoscaling`` client)."""

    def __init__(self, autoscaling: Any) -> None:
        self.autoscaling = autoscaling

    def _arguments(self, action: LifecycleAction) -> dict[str, str]:
        return {
            "LifecycleHookName": action.hook_name,
            "AutoScalingGroupName": action.group_name,
            "LifecycleActionToken": action.token,
            "InstanceId": action.instance_id,
        }

    def heartbeat(self, action: LifecycleAction) -> None:
        try:
            self.autoscaling.record_lifecycle_action_heartbeat(**self._arguments(action))
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"lifecycle heartbeat failed: {exc}") from exc

    def complete(self, action: LifecycleAction, result: str) -> bool:
        try:
            self.autoscaling.complete_lifecycle_action(
                **self._arguments(action), LifecycleActionResult=result
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ValidationError":
                # "No active Lifecycle Action found": completed before, or timed out.
                logger.info("lifecycle action already ended", extra={"node_id": action.instance_id})
                return False
            raise StorageError(f"complete lifecycle action failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"complete lifecycle action failed: {exc}") from exc
        return True


class SqsNodeQueues:
    """Finding and deleting a node's own queue (boto3 ``sqs`` client)."""

    _GONE = ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")

    def __init__(self, sqs: Any, settings: Settings) -> None:
        self.sqs = sqs
        self.settings = settings

    def find(self, node_id: str) -> str | None:
        """The node's queue URL, or None if it has none."""
        try:
            url: str = self.sqs.get_queue_url(QueueName=node_queue_name(self.settings, node_id))[
                "QueueUrl"
            ]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in self._GONE:
                return None
            raise StorageError(f"find node queue failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"find node queue failed: {exc}") from exc
        return url

    def delete(self, queue_url: str) -> bool:
        """Delete the queue; False if it was already gone."""
        try:
            self.sqs.delete_queue(QueueUrl=queue_url)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in self._GONE:
                return False
            raise StorageError(f"delete node queue failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"delete node queue failed: {exc}") from exc
        return True


class NodeQueues(Protocol):
    def find(self, node_id: str) -> str | None: ...

    def delete(self, queue_url: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class _InstanceNode:
    """A node of the terminating instance: its record (None: never registered, or gone)."""

    node_id: str
    node: NodeInfo | None
    queue_url: str | None


@dataclass
class DrainOutcome:
    """What one drain did, for the function's result."""

    node_id: str  # the instance's id
    registered: bool  # any of its nodes was
    nodes: list[str] = field(default_factory=list)  # the node ids drained
    waited_for: list[str] = field(default_factory=list)
    still_running: list[str] = field(default_factory=list)
    waited_seconds: float = 0.0
    messages_moved: int = 0
    queue_deleted: bool = False
    completed: bool = False

    def summary(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "registered": self.registered,
            "nodes": list(self.nodes),
            "waited_for": list(self.waited_for),
            "still_running": list(self.still_running),
            "waited_seconds": round(self.waited_seconds, 1),
            "messages_moved": self.messages_moved,
            "queue_deleted": self.queue_deleted,
            "completed": self.completed,
        }


class TerminationDrain:
    """Drains a terminating node and lets its instance go (see the module's docstring)."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        node_queues: NodeQueues,
        actions: LifecycleActions,
        *,
        sleep: Callable[[float], None] = time.sleep,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.dispatcher = dispatcher
        self.stores = dispatcher.stores
        self.clock = dispatcher.clock
        self.settings = dispatcher.settings
        self.node_queues = node_queues
        self.actions = actions
        self.sleep = sleep
        self.poll_seconds = poll_seconds

    def drain(self, action: LifecycleAction, remaining: Callable[[], float]) -> DrainOutcome:
        """Drain every node of the action's instance; ``remaining``: seconds the function has
        left."""
        nodes = self._instance_nodes(action.instance_id)
        outcome = DrainOutcome(
            action.instance_id,
            registered=any(found.node is not None for found in nodes),
            nodes=[found.node_id for found in nodes],
        )
        for found in nodes:
            if found.node is not None:
                self._mark_draining(found.node_id)
            outcome.messages_moved += self._move_queue(found.node_id, found.queue_url)
        running = self._running_on(action.instance_id, nodes)
        outcome.waited_for = sorted(running)
        if running:
            started = self.clock.now()
            outcome.still_running = self._wait(action, running, outcome.nodes, remaining)
            outcome.waited_seconds = self.clock.now() - started
        for found in nodes:
            outcome.messages_moved += self._move_queue(found.node_id, found.queue_url)
            if found.queue_url is not None and self.node_queues.delete(found.queue_url):
                outcome.queue_deleted = True
            self.stores.nodes.remove(found.node_id)
        outcome.completed = self.actions.complete(action, CONTINUE)
        logger.info("node drained for termination", extra=outcome.summary())
        return outcome

    def _instance_nodes(self, instance_id: str) -> list[_InstanceNode]:
        """The instance id's node, then each GPU's: registered, or with a queue only (an
        agent that died before registering). GPU indexes start at 0 and rarely have gaps;
        the look goes on past the highest registered one until a GPU has neither."""
        registered = {
            node.node_id: node
            for node in self.stores.nodes.snapshot()[0]
            if node.node_id == instance_id or gpu_index_on(node.node_id, instance_id) is not None
        }
        highest = max(
            (gpu_index_on(node_id, instance_id) or 0 for node_id in registered), default=0
        )
        nodes = [self._instance_node(instance_id, registered.get(instance_id))]
        if nodes[0].node is None and nodes[0].queue_url is None:
            nodes = []  # a multi-GPU instance (or one already drained)
        for index in range(MAX_GPUS):
            node_id = f"{instance_id}-gpu{index}"
            found = self._instance_node(node_id, registered.get(node_id))
            if found.node is None and found.queue_url is None:
                if index >= highest:
                    break
                continue
            nodes.append(found)
        return nodes

    def _instance_node(self, node_id: str, node: NodeInfo | None) -> _InstanceNode:
        queue_url = node.queue_url if node is not None and node.queue_url else None
        return _InstanceNode(node_id, node, queue_url or self.node_queues.find(node_id))

    def _mark_draining(self, node_id: str) -> None:
        try:
            self.stores.nodes.set_status(node_id, NodeStatus.DRAINING)
        except NotFound:
            pass

    def _move_queue(self, node_id: str, queue_url: str | None) -> int:
        if queue_url is None:
            return 0
        try:
            return self.dispatcher.drain_node_queue(node_id, queue_url)
        except ComfyFleetError:
            # Its messages stay; the reaper moves an offline node's queue when it can.
            logger.warning("could not move the node queue", exc_info=True)
            return 0

    def _running_on(self, instance_id: str, nodes: list[_InstanceNode]) -> dict[str, str]:
        """The jobs running on the instance (on any of its nodes, registered or not): job
        id -> node id."""
        running = {
            job.job_id: job.node_id
            for job in self.stores.jobs.live_jobs()
            if job.state is JobState.RUNNING
            and job.node_id is not None
            and (job.node_id == instance_id or gpu_index_on(job.node_id, instance_id) is not None)
        }
        for found in nodes:
            if found.node is not None and found.node.current_job is not None:
                running.setdefault(found.node.current_job, found.node_id)
        return {job_id: node for job_id, node in running.items() if self._runs_here(job_id, node)}

    def _runs_here(self, job_id: str, node_id: str) -> bool:
        try:
            job = self.stores.jobs.get(job_id)
        except NotFound:
            return False
        return job.state is JobState.RUNNING and job.node_id == node_id

    def _wait(
        self,
        action: LifecycleAction,
        jobs: dict[str, str],
        node_ids: list[str],
        remaining: Callable[[], float],
    ) -> list[str]:
        """Wait for ``jobs`` (job id -> node id) to end there; returns those still running
        when time ran out."""
        deadline = self.clock.now() + self.settings.drain_grace_seconds
        last_heartbeat = self.clock.now()
        running = dict(jobs)

        def left() -> float:
            return min(deadline - self.clock.now(), remaining() - RESERVE_SECONDS)

        while running and left() > 0:
            self.sleep(min(self.poll_seconds, left()))
            for node_id in node_ids:
                self._mark_draining(node_id)
            running = {job: node for job, node in running.items() if self._runs_here(job, node)}
            due = self.clock.now() - last_heartbeat >= HEARTBEAT_EVERY_SECONDS
            if running and due and left() > 0:
                try:
                    self.actions.heartbeat(action)
                except ComfyFleetError:
                    logger.warning("lifecycle heartbeat failed", exc_info=True)
                last_heartbeat = self.clock.now()
        return sorted(running)
