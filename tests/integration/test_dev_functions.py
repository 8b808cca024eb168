"""The dev stack's Lambda emulation: SQS event source mapping and the schedule, against moto."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from comfyfleet.aws import client
from comfyfleet.dev.functions import LocalFunction, ScheduledInvoker, SqsEventSource
from comfyfleet.resources import Provisioned
from tests.integration.conftest import REGION

# A function that records its events and fails the records whose body says so.
RECORDER = """
EVENTS = []

def handler(event, context):
    EVENTS.append(event)
    if any(r["body"] == "raise" for r in event.get("Records", [])):
        raise RuntimeError("boom")
    failed = [r["messageId"] for r in event.get("Records", []) if r["body"] == "fail"]
    if any(r["body"] == "bad-id" for r in event.get("Records", [])):
        return {"batchItemFailures": [{"itemIdentifier": ""}]}
    return {"batchItemFailures": [{"itemIdentifier": i} for i in failed]}
"""


@pytest.fixture
def recorder(tmp_path: Path) -> LocalFunction:
    (tmp_path / "recorder").mkdir()
    (tmp_path / "recorder" / "app.py").write_text(RECORDER)
    return LocalFunction("recorder", root=tmp_path)


@pytest.fixture
def source(aws: Provisioned, recorder: LocalFunction) -> SqsEventSource:
    sqs = client("sqs", region=REGION)
    url = aws.queue_urls["webhooks"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return SqsEventSource(recorder, sqs, url, arn, wait_seconds=0)


def send(source: SqsEventSource, *bodies: str) -> None:
    for body in bodies:
        source.sqs.send_message(QueueUrl=source.queue_url, MessageBody=body)


def counts(source: SqsEventSource) -> tuple[int, int]:
    """(visible, in flight) messages of the queue."""
    attributes = source.sqs.get_queue_attributes(
        QueueUrl=source.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


def events(function: LocalFunction) -> list[Any]:
    assert function._module is not None
    return list(function._module.EVENTS)


def test_records_are_lambdas_sqs_event_and_the_successful_ones_are_deleted(
    source: SqsEventSource, recorder: LocalFunction
) -> None:
    send(source, "ok-1", "fail", "ok-2")

    source.step()

    (event,) = events(recorder)
    record = event["Records"][0]
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == source.queue_arn
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert {"messageId", "receiptHandle", "body", "md5OfBody", "awsRegion"} <= set(record)
    assert sorted(r["body"] for r in event["Records"]) == ["fail", "ok-1", "ok-2"]
    assert counts(source) == (0, 1)  # the failure waits out its visibility timeout


def test_a_function_that_raises_leaves_the_whole_batch(
    source: SqsEventSource, recorder: LocalFunction
) -> None:
    send(source, "ok", "raise")

    source.step()

    assert counts(source) == (0, 2)
    assert recorder.errors == 1


def test_an_identifier_not_in_the_batch_fails_the_whole_batch(source: SqsEventSource) -> None:
    send(source, "ok", "bad-id")

    source.step()

    assert counts(source) == (0, 2)


def test_an_absent_function_is_skipped_and_its_messages_stay(
    aws: Provisioned, tmp_path: Path
) -> None:
    sqs = client("sqs", region=REGION)
    absent = LocalFunction("webhooks", root=tmp_path)
    source = SqsEventSource(absent, sqs, aws.queue_urls["webhooks"], "arn", wait_seconds=0)
    sqs.send_message(QueueUrl=aws.queue_urls["webhooks"], MessageBody="x")

    pause = source.step()

    assert not absent.available()
    assert pause > 60
    assert counts(source) == (1, 0)


def test_the_schedule_sends_eventbridges_scheduled_event(recorder: LocalFunction) -> None:
    schedule = ScheduledInvoker(recorder, interval=10, rule="comfyfleet-reaper")

    pause = schedule.step()

    (event,) = events(recorder)
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    assert event["resources"] == [f"arn:aws:events:{REGION}:000000000000:rule/comfyfleet-reaper"]
    assert event["detail"] == {}
    assert 0 < pause <= 10
    assert json.loads(json.dumps(event)) == event  # plain JSON, as Lambda delivers it
