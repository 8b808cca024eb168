"""The termination drain against DynamoDB and SQS on moto.

moto does not implement Auto Scaling's CompleteLifecycleAction nor
RecordLifecycleActionHeartbeat, so that one client is a recording fake here (and a botocore
Stubber for the function's own client); everything else is moto.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from comfyfleet.aws import client
from comfyfleet.clock import FakeClock
from comfyfleet.domain import SHARED_ROUTE, Job, JobState, Limits, NodeInfo, NodeStatus, RingMessage
from comfyfleet.errors import NodeNotFound
from comfyfleet.ids import new_job_id
from comfyfleet.lifecycle import LifecycleAction, TerminationDrain
from comfyfleet.queues import SqsJobQueues
from comfyfleet.resources import SHARED_QUEUE, Provisioned, node_queue_name
from comfyfleet.settings import Settings
from comfyfleet.upkeep import aws_reaper, aws_termination_drain
from tests.api_support import LambdaContext, load_function
from tests.integration.conftest import REGION

WORKFLOW = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8}}}
NODE = "i-0fedcba9876543210"
EVENT: dict[str, Any] = {
    "version": "0",
    "id": "468fd5ef-1bcd-4b8a-9f3e-3a4c1e6e4c2a",
    "detail-type": "EC2 Instance-terminate Lifecycle Action",
    "source": "aws.autoscaling",
    "account": "123456789012",
    "time": "2026-12-01T07:00:00Z",
    "region": REGION,
    "resources": ["arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:x"],
    "detail": {
        "LifecycleActionToken": "87654321-4321-4321-4321-210987654321",
        "AutoScalingGroupName": "comfyfleet-gpu",
        "LifecycleHookName": "comfyfleet-drain",
        "EC2InstanceId": NODE,
        "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
    },
}
ACTION = LifecycleAction.from_event(EVENT)


@dataclass
class FakeAutoScaling:
    """The two Auto Scaling calls moto lacks, with the API's answer to a repeat."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    completed: bool = False

    def record_lifecycle_action_heartbeat(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("heartbeat", kwargs))
        return {}

    def complete_lifecycle_action(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("complete", kwargs))
        if self.completed:
            error = {"Code": "ValidationError", "Message": "No active Lifecycle Action found"}
            raise ClientError({"Error": error}, "CompleteLifecycleAction")
        self.completed = True
        return {}

    def named(self, name: str) -> list[dict[str, Any]]:
        return [kwargs for call, kwargs in self.calls if call == name]


@dataclass
class Rig:
    settings: Settings
    clock: FakeClock
    drain: TerminationDrain
    autoscaling: FakeAutoScaling
    sqs: SqsJobQueues
    shared: str
    account_id: str
    limits: Limits
    slept: list[float] = field(default_factory=list)
    on_sleep: Any = None

    @property
    def stores(self) -> Any:
        return self.drain.stores

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.clock.advance(seconds)
        if self.on_sleep is not None:
            self.on_sleep()

    def node(self, node_id: str = NODE, *, register: bool = True) -> str:
        url = self.sqs.create_node_queue(self.settings, node_id)
        if register:
            self.stores.nodes.register(
                NodeInfo(node_id, NodeStatus.IDLE, heartbeat_at=self.clock.now(), queue_url=url)
            )
        return url

    def admit_to(self, route: str, url: str) -> Job:
        now = self.clock.now()
        job = Job(new_job_id(now), self.account_id, JobState.QUEUED, now, WORKFLOW)
        self.stores.jobs.admit(job, self.limits, now=now, route=route)
        share = self.limits.share
        message = RingMessage(job.job_id, self.account_id, route, share.concurrency, 2)
        self.sqs.send(url, message)
        return job

    def run_here(self, url: str, node_id: str = NODE) -> Job:
        """An agent takes its node queue's next job and runs it (its message in flight)."""
        received = self.sqs.receive(url, wait_seconds=0, visibility_seconds=600)
        assert received is not None
        claim = self.drain.dispatcher.claim(received.message, node_id)
        assert claim.job is not None and claim.job.state is JobState.RUNNING
        return claim.job

    def queue_exists(self, node_id: str = NODE) -> bool:
        try:
            self.sqs.sqs.get_queue_url(QueueName=node_queue_name(self.settings, node_id))
        except ClientError:
            return False
        return True


@pytest.fixture
def rig(aws: Provisioned, settings: Settings) -> Rig:
    clock = FakeClock()
    autoscaling = FakeAutoScaling()
    holder: list[Rig] = []
    drain = aws_termination_drain(
        settings,
        region=REGION,
        clock=clock,
        autoscaling=autoscaling,
        sleep=lambda seconds: holder[0].sleep(seconds),
    )
    account = drain.stores.accounts.create(tier="free", name="", now=clock.now())
    rig = Rig(
        settings,
        clock,
        drain,
        autoscaling,
        SqsJobQueues(client("sqs", region=REGION)),
        aws.queue_urls[SHARED_QUEUE.logical],
        account.account_id,
        account.limits(settings),
    )
    holder.append(rig)
    return rig


def test_a_terminating_node_finishes_its_job_then_leaves(rig: Rig) -> None:
    node_url = rig.node()
    rig.admit_to(NODE, node_url)
    running = rig.run_here(node_url)
    waiting = rig.admit_to(NODE, node_url)
    statuses: list[NodeStatus] = []

    def agent_finishes() -> None:
        statuses.append(rig.stores.nodes.get(NODE).status)
        if len(rig.slept) == 3:
            rig.drain.dispatcher.finish(running, NODE, JobState.COMPLETED, rig.limits.share)

    rig.on_sleep = agent_finishes

    outcome = rig.drain.drain(ACTION, lambda: 900.0)

    assert outcome.waited_for == [running.job_id] and outcome.still_running == []
    assert outcome.waited_seconds == 15.0 and statuses[0] is NodeStatus.DRAINING
    assert outcome.messages_moved == 1 and outcome.queue_deleted and outcome.completed
    assert rig.stores.jobs.get(waiting.job_id).route == SHARED_ROUTE
    received = rig.sqs.receive(rig.shared, wait_seconds=0, visibility_seconds=30)
    assert received is not None and received.message.job_id == waiting.job_id
    assert not rig.queue_exists()
    with pytest.raises(NodeNotFound):
        rig.stores.nodes.get(NODE)
    assert rig.autoscaling.named("complete") == [
        {
            "LifecycleHookName": "comfyfleet-drain",
            "AutoScalingGroupName": "comfyfleet-gpu",
            "LifecycleActionToken": "87654321-4321-4321-4321-210987654321",
            "InstanceId": NODE,
            "LifecycleActionResult": "CONTINUE",
        }
    ]


def test_a_repeated_event_finds_the_node_gone_and_ends_quietly(rig: Rig) -> None:
    rig.node()
    rig.drain.drain(ACTION, lambda: 900.0)

    again = rig.drain.drain(ACTION, lambda: 900.0)

    assert not again.registered and again.waited_for == []
    assert not again.queue_deleted and not again.completed
    assert len(rig.autoscaling.named("complete")) == 2


def test_a_job_outlasting_the_grace_is_left_to_the_reaper(rig: Rig, settings: Settings) -> None:
    node_url = rig.node()
    rig.admit_to(NODE, node_url)
    running = rig.run_here(node_url)

    outcome = rig.drain.drain(ACTION, lambda: 900.0)

    assert outcome.still_running == [running.job_id]
    assert sum(rig.slept) == settings.drain_grace_seconds
    beats = rig.autoscaling.named("heartbeat")
    assert len(beats) == settings.drain_grace_seconds // 60 - 1  # none after the last
    assert outcome.completed and not rig.queue_exists()
    # The instance is gone; its job's lease runs out and the reaper sends it to shared.
    reaper = aws_reaper(settings, region=REGION, clock=rig.clock)
    rig.clock.advance(settings.lease_seconds)
    assert reaper.run().jobs_requeued == [running.job_id]
    rig.clock.advance(settings.ring_resend_after_seconds)
    assert reaper.run().messages_resent == [running.job_id]
    job = rig.stores.jobs.get(running.job_id)
    assert job.state is JobState.QUEUED and job.route == SHARED_ROUTE and job.attempt == 1
    received = rig.sqs.receive(rig.shared, wait_seconds=0, visibility_seconds=30)
    assert received is not None and received.message.job_id == running.job_id


def test_the_wait_ends_in_time_for_the_function_to_finish(rig: Rig) -> None:
    node_url = rig.node()
    rig.admit_to(NODE, node_url)
    running = rig.run_here(node_url)
    deadline = rig.clock.now() + 45.0

    outcome = rig.drain.drain(ACTION, lambda: deadline - rig.clock.now())

    assert outcome.still_running == [running.job_id] and sum(rig.slept) == 15.0
    assert outcome.completed


def test_every_gpu_node_of_the_instance_is_drained_together(rig: Rig) -> None:
    gpu0, gpu1, gpu2 = (f"{NODE}-gpu{index}" for index in range(3))
    url0, url1 = rig.node(gpu0), rig.node(gpu1)
    rig.node(gpu2, register=False)  # its agent died before it registered: a queue only
    rig.admit_to(gpu0, url0)
    running = rig.run_here(url0, gpu0)
    waiting = rig.admit_to(gpu1, url1)
    other = rig.node("i-0aaaaaaaaaaaaaaaa-gpu0")  # another instance's node stays
    statuses: list[tuple[NodeStatus, NodeStatus]] = []

    def agent_finishes() -> None:
        nodes = rig.stores.nodes
        statuses.append((nodes.get(gpu0).status, nodes.get(gpu1).status))
        if len(rig.slept) == 2:
            rig.drain.dispatcher.finish(running, gpu0, JobState.COMPLETED, rig.limits.share)

    rig.on_sleep = agent_finishes

    outcome = rig.drain.drain(ACTION, lambda: 900.0)

    assert outcome.nodes == [gpu0, gpu1, gpu2] and outcome.registered
    assert outcome.waited_for == [running.job_id] and outcome.still_running == []
    assert statuses[0] == (NodeStatus.DRAINING, NodeStatus.DRAINING)
    assert outcome.messages_moved == 1 and outcome.completed
    assert rig.stores.jobs.get(waiting.job_id).route == SHARED_ROUTE
    received = rig.sqs.receive(rig.shared, wait_seconds=0, visibility_seconds=30)
    assert received is not None and received.message.job_id == waiting.job_id
    for node_id in (gpu0, gpu1, gpu2):
        assert not rig.queue_exists(node_id)
        with pytest.raises(NodeNotFound):
            rig.stores.nodes.get(node_id)
    assert rig.stores.nodes.get("i-0aaaaaaaaaaaaaaaa-gpu0").queue_url == other
    assert len(rig.autoscaling.named("complete")) == 1


def test_the_lifecycle_function_drains_the_instance_of_the_event(aws: Provisioned) -> None:
    sqs = SqsJobQueues(client("sqs"))
    sqs.create_node_queue(Settings(), NODE)  # the agent made its queue, never registered
    app = load_function("lifecycle")
    autoscaling = client("autoscaling")
    detail = EVENT["detail"]
    with Stubber(autoscaling) as stub:
        stub.add_response(
            "complete_lifecycle_action",
            {},
            {
                "LifecycleHookName": detail["LifecycleHookName"],
                "AutoScalingGroupName": detail["AutoScalingGroupName"],
                "LifecycleActionToken": detail["LifecycleActionToken"],
                "InstanceId": NODE,
                "LifecycleActionResult": "CONTINUE",
            },
        )
        result = app.handler(EVENT, LambdaContext(function_name="comfyfleet-lifecycle"))
        stub.assert_no_pending_responses()

    assert result["status"] == "drained" and result["node_id"] == NODE
    assert result["queue_deleted"] and result["completed"] and not result["registered"]


@pytest.mark.parametrize(
    ("detail", "reason"),
    [
        ({**EVENT["detail"], "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING"}, "not a"),
        ({k: v for k, v in EVENT["detail"].items() if k != "LifecycleActionToken"}, "lacks"),
        (None, "no detail"),
    ],
)
def test_the_lifecycle_function_ignores_what_is_not_a_termination(
    aws: Provisioned, detail: Any, reason: str
) -> None:
    app = load_function("lifecycle")

    result = app.handler({**EVENT, "detail": detail}, LambdaContext())

    assert result["status"] == "ignored" and reason in result["reason"]
