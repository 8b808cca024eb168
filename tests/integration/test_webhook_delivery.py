"""Job events through AWS (moto): the Dispatcher publishes to SNS, the topic feeds the
webhooks queue, the webhooks function (functions/webhooks/app.py) POSTs to a loopback
receiver — retried through the message's visibility, to the DLQ in the end — and the
pending-event index lets a lost event be published later.

The test plays Lambda's event source mapping: receive, invoke, delete what did not fail.
A retry delay is hours long; the test lets it pass by making the message visible again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
import standardwebhooks

from comfyfleet.api.telemetry import RecordedMetrics
from comfyfleet.api.wiring import aws_api
from comfyfleet.aws import client
from comfyfleet.clock import SystemClock
from comfyfleet.domain import Job, JobState, Limits
from comfyfleet.events import SnsJobEvents
from comfyfleet.queues import SqsJobQueues
from comfyfleet.resources import Provisioned, topic_name
from comfyfleet.scheduling import Dispatcher, JobRequest
from comfyfleet.settings import Settings, get_settings
from comfyfleet.store import Stores
from comfyfleet.webhooks import verify
from tests.api_support import LambdaContext, caller_of, load_function
from tests.integration.conftest import REGION
from tests.webhook_receiver import WebhookReceiver

LIMITS = Limits(requests_per_minute=60, concurrency=2, queue_depth=20, ring_slots=2)


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Settings:
    # The receiver is plain http on loopback: only the dev stack's setting reaches it.
    monkeypatch.setenv("COMFYFLEET_ALLOW_LOCAL_URLS", "true")
    schedule = getattr(request, "param", None)  # a test's own webhook retry schedule
    if schedule is not None:
        monkeypatch.setenv("COMFYFLEET_WEBHOOK_RETRY_SCHEDULE", schedule)
    get_settings.cache_clear()
    return Settings(allow_local_urls=True)


@pytest.fixture
def sqs(aws: Provisioned) -> Any:
    return client("sqs", region=REGION)


@pytest.fixture
def dispatcher(aws: Provisioned, dynamo: Stores, settings: Settings) -> Dispatcher:
    return Dispatcher(
        dynamo,
        SqsJobQueues(client("sqs", region=REGION)),
        settings,
        SystemClock(),
        shared_url=aws.queue_urls["shared"],
        events=SnsJobEvents(client("sns", region=REGION), settings),
    )


@pytest.fixture
def function(aws: Provisioned) -> ModuleType:
    return load_function("webhooks")


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


class EventSource:
    """What Lambda's SQS event source mapping does, one receive at a time."""

    def __init__(self, sqs: Any, aws: Provisioned, function: ModuleType) -> None:
        self.sqs, self.function = sqs, function
        self.url = aws.queue_urls["webhooks"]
        self.dlq_url = aws.queue_urls["webhooks-dlq"]
        self.arn = sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]

    def receive(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = self.sqs.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        return messages

    def invoke(self, messages: list[dict[str, Any]]) -> list[str]:
        """Run the function on these messages; delete the settled; return the failed ids."""
        event = {"Records": [self.record(m) for m in messages]}
        response = self.function.handler(event, LambdaContext(function_name="webhooks"))
        failed = [item["itemIdentifier"] for item in response["batchItemFailures"]]
        for message in messages:
            if message["MessageId"] not in failed:
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
        return failed

    def record(self, message: dict[str, Any]) -> dict[str, Any]:
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": message.get("Attributes", {}),
            "messageAttributes": {},
            "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": self.arn,
            "awsRegion": REGION,
        }

    def let_the_delay_pass(self, message: dict[str, Any]) -> None:
        self.sqs.change_message_visibility(
            QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )

    def dead_letters(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = self.sqs.receive_message(
            QueueUrl=self.dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        ).get("Messages", [])
        return messages


@pytest.fixture
def source(sqs: Any, aws: Provisioned, function: ModuleType) -> EventSource:
    return EventSource(sqs, aws, function)


def ended_job(dispatcher: Dispatcher, dynamo: Stores, webhook_url: str) -> Job:
    account = dynamo.accounts.create(tier="free", name="", now=time.time())
    request = JobRequest({"1": {"class_type": "X", "inputs": {}}}, [], webhook_url=webhook_url)
    job = dispatcher.submit(account.account_id, "free", LIMITS, request).job
    return dispatcher.cancel(job.job_id, LIMITS.share)


def test_an_event_reaches_the_receiver_once_after_failures_signed_and_recorded(
    dispatcher: Dispatcher,
    dynamo: Stores,
    source: EventSource,
    receiver: WebhookReceiver,
) -> None:
    receiver.failures = [503, 500]
    job = ended_job(dispatcher, dynamo, receiver.url())
    assert not dynamo.jobs.get(job.job_id).event_pending  # published, flag cleared

    attempts = 0
    while messages := source.receive():
        assert len(messages) == 1 and attempts < 5
        attempts += 1
        failed = source.invoke(messages)
        if failed:
            assert source.receive() == []  # the function set a retry delay
            source.let_the_delay_pass(messages[0])

    assert attempts == 3 and len(receiver.received) == 3
    [delivered] = receiver.delivered()
    secret = dynamo.accounts.get(job.account_id).webhook_secret
    event = standardwebhooks.Webhook(secret).verify(delivered.body, delivered.headers)
    assert event == verify(delivered.headers, delivered.body, secret)
    assert event["id"] == f"evt_{job.job_id}" and event["type"] == "job.cancelled"
    assert {r.headers["webhook-id"] for r in receiver.received} == {event["id"]}
    state = dynamo.jobs.get(job.job_id).webhook
    assert state is not None
    assert state["state"] == "delivered" and state["attempts"] == 3
    assert state["last_status"] == 200 and state["delivered_at"]


@pytest.mark.parametrize("settings", [None, "1, 1"], indirect=True, ids=["default", "custom"])
def test_an_endpoint_that_never_answers_2xx_ends_in_the_dlq(
    settings: Settings,
    dispatcher: Dispatcher,
    dynamo: Stores,
    source: EventSource,
    receiver: WebhookReceiver,
) -> None:
    receiver.status = 500
    job = ended_job(dispatcher, dynamo, receiver.url())

    attempts = 0
    while messages := source.receive():
        attempts += 1
        assert source.invoke(messages) == [messages[0]["MessageId"]]
        source.let_the_delay_pass(messages[0])

    # One attempt per step of the schedule and one more; the queue's redrive agrees.
    expected = len(settings.webhook_retry_schedule) + 1
    assert attempts == expected == len(receiver.received)
    [parked] = source.dead_letters()
    assert json.loads(parked["Body"])["id"] == f"evt_{job.job_id}"
    state = dynamo.jobs.get(job.job_id).webhook
    assert state is not None and state["state"] == "failed"
    assert state["attempts"] == expected and state["last_status"] == 500


@pytest.mark.parametrize("url", ["http://10.0.0.1/hook", "https://192.168.1.20/hook"])
def test_private_addresses_are_refused_without_retries(
    dispatcher: Dispatcher, dynamo: Stores, source: EventSource, url: str
) -> None:
    job = ended_job(dispatcher, dynamo, url)

    assert source.invoke(source.receive()) == []

    assert source.receive() == [] and source.dead_letters() == []
    state = dynamo.jobs.get(job.job_id).webhook
    assert state is not None and state["state"] == "failed" and state["last_status"] is None


def test_plain_http_is_refused_where_local_urls_are_not_allowed(
    dispatcher: Dispatcher,
    dynamo: Stores,
    sqs: Any,
    aws: Provisioned,
    receiver: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("COMFYFLEET_ALLOW_LOCAL_URLS")
    get_settings.cache_clear()
    strict = EventSource(sqs, aws, load_function("webhooks"))
    job = ended_job(dispatcher, dynamo, receiver.url())

    assert strict.invoke(strict.receive()) == []

    assert receiver.received == []
    state = dynamo.jobs.get(job.job_id).webhook
    assert state is not None and state["state"] == "failed" and "https" in state["last_error"]


def test_a_replay_sends_the_same_event_id_again(
    aws: Provisioned,
    settings: Settings,
    dispatcher: Dispatcher,
    dynamo: Stores,
    source: EventSource,
    receiver: WebhookReceiver,
) -> None:
    job = ended_job(dispatcher, dynamo, receiver.url())
    assert source.invoke(source.receive()) == []
    api = aws_api(settings, metrics=RecordedMetrics(), region=REGION)

    replayed = api.jobs.replay_webhook(caller_of(job.account_id), job.job_id)
    assert source.invoke(source.receive()) == []

    first, again = receiver.delivered()
    assert first.headers["webhook-id"] == again.headers["webhook-id"] == replayed.event_id
    assert first.body == again.body
    state = dynamo.jobs.get(job.job_id).webhook
    assert state is not None and state["state"] == "delivered" and state["replays"] == 1


def test_subscriptions_can_filter_on_the_type_and_account_attributes(
    aws: Provisioned, dispatcher: Dispatcher, dynamo: Stores, sqs: Any
) -> None:
    url = sqs.create_queue(QueueName="failures-only")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    client("sns", region=REGION).subscribe(
        TopicArn=aws.topic_arn,
        Protocol="sqs",
        Endpoint=arn,
        Attributes={
            "RawMessageDelivery": "true",
            "FilterPolicy": json.dumps({"type": ["job.failed"]}),
        },
    )
    cancelled = ended_job(dispatcher, dynamo, "https://hooks.example.com/x")
    account = dynamo.accounts.create(tier="free", name="", now=time.time())
    queued = dispatcher.submit(account.account_id, "free", LIMITS, JobRequest({}, [])).job
    error = {"code": "dead_lettered", "message": "its message reached the DLQ"}
    dispatcher.fail_queued(queued.job_id, error, LIMITS.share)

    bodies = [
        json.loads(m["Body"])
        for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    ]

    assert [b["job_id"] for b in bodies] == [queued.job_id]
    assert bodies[0]["type"] == "job.failed" and bodies[0]["error"] == error
    assert cancelled.state is JobState.CANCELLED


def test_an_event_lost_by_a_failed_publish_is_published_by_republish_pending(
    aws: Provisioned, settings: Settings, dynamo: Stores, source: EventSource
) -> None:
    missing = Settings(events_topic_arn=aws.topic_arn.replace(topic_name(settings), "gone"))
    broken = Dispatcher(
        dynamo,
        SqsJobQueues(client("sqs", region=REGION)),
        settings,
        SystemClock(),
        shared_url=aws.queue_urls["shared"],
        events=SnsJobEvents(client("sns", region=REGION), missing),
    )
    job = ended_job(broken, dynamo, "https://hooks.example.com/x")
    assert dynamo.jobs.get(job.job_id).event_pending and source.receive() == []

    working = Dispatcher(
        dynamo,
        SqsJobQueues(client("sqs", region=REGION)),
        settings,
        SystemClock(),
        shared_url=aws.queue_urls["shared"],
        events=SnsJobEvents(client("sns", region=REGION), settings),
    )
    assert working.republish_pending() == 0  # it ended just now: maybe still in flight
    assert working.republish_pending(older_than=-1) == 1
    assert working.republish_pending(older_than=-1) == 0

    [message] = source.receive()
    assert json.loads(message["Body"])["id"] == f"evt_{job.job_id}"
    assert not dynamo.jobs.get(job.job_id).event_pending
