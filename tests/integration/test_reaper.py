"""The reaper against DynamoDB, SQS and SNS on moto: a lost node, a failed send, a
dead-lettered message, a stalled backlog — and a second pass that changes nothing more.

moto's SQS keeps real time while the stores run on a FakeClock, so an agent's receive here
uses a zero visibility (its message is back at once, as it is once a dead agent's lease and
visibility run out); SQS deduplication holds while the first copy is still queued.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from comfyfleet.aws import client
from comfyfleet.clock import FakeClock
from comfyfleet.domain import SHARED_ROUTE, Job, JobState, Limits, NodeInfo, NodeStatus, RingMessage
from comfyfleet.ids import new_job_id
from comfyfleet.queues import SqsJobQueues
from comfyfleet.reaper import Reaper
from comfyfleet.resources import (
    RING_MAX_RECEIVES,
    SHARED_DLQ,
    SHARED_QUEUE,
    WEBHOOKS_QUEUE,
    Provisioned,
)
from comfyfleet.settings import Settings
from comfyfleet.upkeep import aws_reaper
from tests.api_support import LambdaContext, load_function
from tests.integration.conftest import REGION

WORKFLOW = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8}}}
NODE = "i-0123456789abcdef0"


@dataclass
class Fleet:
    settings: Settings
    clock: FakeClock
    reaper: Reaper
    sqs: SqsJobQueues
    shared: str
    dlq: str
    webhooks: str
    account_id: str
    limits: Limits

    @property
    def stores(self) -> Any:
        return self.reaper.stores

    def node(self, node_id: str = NODE) -> str:
        url = self.sqs.create_node_queue(self.settings, node_id)
        self.stores.nodes.register(
            NodeInfo(node_id, NodeStatus.IDLE, heartbeat_at=self.clock.now(), queue_url=url)
        )
        return url

    def admit_to(self, route: str, *, send_to: str | None) -> Job:
        now = self.clock.now()
        job = Job(new_job_id(now), self.account_id, JobState.QUEUED, now, WORKFLOW)
        self.stores.jobs.admit(job, self.limits, now=now, route=route)
        if send_to is not None:
            self.sqs.send(send_to, self.message(job, route))
        return job

    def message(self, job: Job, route: str) -> RingMessage:
        share = self.limits.share
        return RingMessage(job.job_id, self.account_id, route, share.concurrency, share.ring_slots)

    def take(self, url: str, node_id: str = NODE) -> None:
        received = self.sqs.receive(url, wait_seconds=0, visibility_seconds=0)
        assert received is not None
        claim = self.reaper.dispatcher.claim(received.message, node_id)
        assert claim.job is not None and claim.job.state is JobState.RUNNING

    def depth(self, url: str) -> int:
        attributes = self.sqs.sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return sum(int(value) for value in attributes.values())

    def job(self, job: Job) -> Job:
        got: Job = self.stores.jobs.get(job.job_id)
        return got

    def state(self, *urls: str) -> Any:
        jobs = sorted(
            (j.job_id, j.state, j.in_ring, j.route, j.node_id)
            for j in (self.stores.jobs.get(live.job_id) for live in self.stores.jobs.live_jobs())
        )
        nodes = sorted((n.node_id, n.status, n.queued) for n in self.stores.nodes.snapshot()[0])
        c = self.stores.limits.counters(self.account_id, now=self.clock.now())
        depths = [self.depth(url) for url in (self.shared, self.dlq, *urls)]
        return jobs, nodes, (c.waiting, c.ring, c.running), depths


@pytest.fixture
def fleet(aws: Provisioned, settings: Settings) -> Fleet:
    clock = FakeClock()
    reaper = aws_reaper(settings, region=REGION, clock=clock)
    account = reaper.stores.accounts.create(tier="free", name="", now=clock.now())
    return Fleet(
        settings,
        clock,
        reaper,
        SqsJobQueues(client("sqs", region=REGION)),
        aws.queue_urls[SHARED_QUEUE.logical],
        aws.queue_urls[SHARED_DLQ.logical],
        aws.queue_urls[WEBHOOKS_QUEUE.logical],
        account.account_id,
        account.limits(settings),
    )


def test_a_lost_node_goes_offline_and_its_jobs_move_to_shared(fleet: Fleet) -> None:
    node_url = fleet.node()
    running = fleet.admit_to(NODE, send_to=node_url)
    fleet.take(node_url)
    waiting = fleet.admit_to(NODE, send_to=node_url)
    fleet.clock.advance(fleet.settings.lease_seconds + 1)  # the instance died

    report = fleet.reaper.run()

    assert report.errors == 0
    assert report.nodes_offline == [NODE] and report.jobs_requeued == [running.job_id]
    assert report.messages_rerouted == 2
    assert fleet.stores.nodes.get(NODE).status is NodeStatus.OFFLINE
    for job in (running, waiting):
        assert fleet.job(job).state is JobState.QUEUED and fleet.job(job).route == SHARED_ROUTE
    assert fleet.job(running).attempt == 1
    assert fleet.depth(node_url) == 0 and fleet.depth(fleet.shared) == 2
    before = fleet.state(node_url)
    fleet.clock.advance(fleet.settings.ring_resend_after_seconds)
    again = fleet.reaper.run()
    assert again.errors == 0 and again.nodes_offline == [] and again.jobs_requeued == []
    assert fleet.state(node_url) == before


def test_a_message_whose_send_failed_is_sent_once(fleet: Fleet) -> None:
    job = fleet.admit_to(SHARED_ROUTE, send_to=None)
    fleet.clock.advance(fleet.settings.ring_resend_after_seconds)

    report = fleet.reaper.run()
    fleet.clock.advance(60)
    fleet.reaper.run()

    assert report.messages_resent == [job.job_id]
    assert fleet.depth(fleet.shared) == 1  # the second pass's copy was deduplicated
    received = fleet.sqs.receive(fleet.shared, wait_seconds=0, visibility_seconds=30)
    assert received is not None and received.message.job_id == job.job_id


def test_a_dead_lettered_message_fails_its_job_and_publishes_the_event(fleet: Fleet) -> None:
    job = fleet.admit_to(SHARED_ROUTE, send_to=fleet.shared)
    for _ in range(RING_MAX_RECEIVES + 1):  # received and never claimed: SQS gives up
        fleet.sqs.receive(fleet.shared, wait_seconds=0, visibility_seconds=0)
    assert fleet.depth(fleet.dlq) == 1

    report = fleet.reaper.run()

    assert report.dead_letters == 1 and report.jobs_failed == [job.job_id]
    failed = fleet.job(job)
    assert failed.state is JobState.FAILED and failed.error is not None
    assert failed.error["code"] == "message_dead_lettered" and not failed.event_pending
    events = fleet.sqs.sqs.receive_message(QueueUrl=fleet.webhooks, MaxNumberOfMessages=10)
    bodies = [json.loads(m["Body"]) for m in events.get("Messages", [])]
    assert [(b["type"], b["job_id"]) for b in bodies] == [("job.failed", job.job_id)]
    assert fleet.depth(fleet.dlq) == 0
    before = fleet.state()
    assert fleet.reaper.run().dead_letters == 0
    assert fleet.state() == before


def test_a_backlog_behind_a_free_slot_is_promoted(fleet: Fleet) -> None:
    first = fleet.admit_to(SHARED_ROUTE, send_to=None)
    fleet.admit_to(SHARED_ROUTE, send_to=None)
    now = fleet.clock.now()
    waiting = Job(new_job_id(now), fleet.account_id, JobState.QUEUED, now, WORKFLOW)
    fleet.stores.jobs.admit(waiting, fleet.limits, now=now, route=None)
    fleet.stores.jobs.cancel(first.job_id, now=now)  # a canceller that died before promoting

    report = fleet.reaper.run()

    assert report.jobs_promoted == [waiting.job_id]
    assert fleet.job(waiting).in_ring and fleet.depth(fleet.shared) == 1
    assert fleet.reaper.run().jobs_promoted == []


def test_the_reaper_function_runs_a_pass_and_counts_the_nodes(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet.node()
    app = load_function("reaper")
    scheduled = {
        "version": "0",
        "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-12-01T07:00:00Z",
        "region": REGION,
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/comfyfleet-reaper"],
        "detail": {},
    }

    result = app.handler(scheduled, LambdaContext(function_name="comfyfleet-reaper"))

    assert result["errors"] == 0 and result["nodes_offline"] == 0
    assert result["nodes_by_status"] == {"idle": 1}
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "_aws" in line]
    by_status = {m["status"]: m["Nodes"] for m in metrics if "Nodes" in m}
    assert by_status == {s.value: [1.0 if s is NodeStatus.IDLE else 0.0] for s in NodeStatus}
