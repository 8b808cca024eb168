"""moto's server as LocalAws runs it: transactions roll back item by item, and stay atomic."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from comfyfleet.dev.local_aws import LocalAws


@pytest.fixture(scope="module")
def db() -> Iterator[Any]:
    with LocalAws() as aws:
        client = boto3.client(
            "dynamodb",
            endpoint_url=aws.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        client.create_table(
            TableName="things",
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield client


def item(db: Any, key: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = db.get_item(TableName="things", Key={"id": {"S": key}}).get(
        "Item"
    )
    return found


def put(key: str, **extra: Any) -> dict[str, Any]:
    return {"Put": {"TableName": "things", "Item": {"id": {"S": key}, **extra}}}


def test_a_cancelled_transaction_leaves_new_and_existing_items_as_they_were(db: Any) -> None:
    db.put_item(
        TableName="things", Item={"id": {"S": "kept"}, "n": {"N": "1"}, "b": {"B": b"\x00\xff"}}
    )
    before = item(db, "kept")

    with pytest.raises(ClientError) as refused:
        db.transact_write_items(
            TransactItems=[
                put("new-1", n={"N": "5"}),
                {
                    "Update": {
                        "TableName": "things",
                        "Key": {"id": {"S": "kept"}},
                        "UpdateExpression": "SET n = n + :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}},
                    }
                },
                {
                    "ConditionCheck": {
                        "TableName": "things",
                        "Key": {"id": {"S": "absent"}},
                        "ConditionExpression": "attribute_exists(id)",
                    }
                },
            ]
        )

    assert refused.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert item(db, "new-1") is None
    assert item(db, "kept") == before


def test_a_transaction_that_passes_applies_every_item(db: Any) -> None:
    db.transact_write_items(TransactItems=[put("a", n={"N": "1"}), put("b", n={"N": "2"})])

    assert item(db, "a") == {"id": {"S": "a"}, "n": {"N": "1"}}
    assert item(db, "b") == {"id": {"S": "b"}, "n": {"N": "2"}}


def test_a_duplicate_put_is_refused_by_its_condition(db: Any) -> None:
    conditional = {"ConditionExpression": "attribute_not_exists(id)"}
    first = put("once", n={"N": "1"})
    first["Put"].update(conditional)
    db.transact_write_items(TransactItems=[first])
    again = put("once", n={"N": "2"})
    again["Put"].update(conditional)

    with pytest.raises(ClientError):
        db.transact_write_items(TransactItems=[again, put("other")])

    assert item(db, "once") == {"id": {"S": "once"}, "n": {"N": "1"}}
    assert item(db, "other") is None
