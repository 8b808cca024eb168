"""The dev stack's request counter (comfyfleet.aws_calls) against moto: one JSON line per
call, with its sizes and DynamoDB items; nothing written without the variable or in Lambda."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto import mock_aws

from comfyfleet import aws
from comfyfleet.aws_calls import CALLS_ENV, ROLE_ENV

REGION = "us-east-1"


@pytest.fixture
def moto() -> Iterator[None]:
    with mock_aws():
        aws.reset_clients()
        yield
    aws.reset_clients()


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_each_call_is_a_line_with_its_sizes(
    moto: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv(CALLS_ENV, str(calls))
    monkeypatch.setenv(ROLE_ENV, "agent-1")
    dynamodb = aws.client("dynamodb", region=REGION)
    s3 = aws.client("s3", region=REGION)
    dynamodb.create_table(
        TableName="t",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.transact_write_items(
        TransactItems=[{"Put": {"TableName": "t", "Item": {"pk": {"S": str(i)}}}} for i in range(3)]
    )
    s3.create_bucket(Bucket="calls-bucket")
    s3.put_object(Bucket="calls-bucket", Key="k", Body=b"x" * 1000)

    written = lines(calls)
    assert [line["call"] for line in written] == [
        "dynamodb.CreateTable",
        "dynamodb.TransactWriteItems",
        "s3.CreateBucket",
        "s3.PutObject",
    ]
    assert {line["role"] for line in written} == {"agent-1"}
    transaction, upload = written[1], written[3]
    assert transaction["items"] == 3 and transaction["request_bytes"] > 100
    assert upload["request_bytes"] == 1000 and upload["items"] == 1


def test_nothing_is_written_without_the_variable_or_inside_lambda(
    moto: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = tmp_path / "calls.jsonl"
    aws.client("sqs", region=REGION).list_queues()
    assert not calls.exists()
    monkeypatch.setenv(CALLS_ENV, str(calls))
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "comfyfleet-api")
    aws.reset_clients()
    aws.client("sqs", region=REGION).list_queues()
    assert not calls.exists(), "a deployment never writes its requests down"
