"""AccountStore, KeyStore and LimitStore on DynamoDB."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from botocore.exceptions import ClientError

from comfyfleet.apikeys import hash_key, new_api_key, new_webhook_secret
from comfyfleet.domain import Account, ApiKey, Counters, Scope, rate_window
from comfyfleet.errors import AccountNotFound, KeyNotFound, StorageError
from comfyfleet.ids import new_account_id
from comfyfleet.resources import ACCOUNTS, API_KEYS, LIMITS
from comfyfleet.settings import Settings
from comfyfleet.store.dynamo import counters as c
from comfyfleet.store.dynamo.codec import (
    Item,
    as_json,
    call,
    error_code,
    get_json,
    get_n,
    get_s,
    n,
    s,
)


def _account_item(account: Account) -> Item:
    item: Item = {
        "account_id": s(account.account_id),
        "tier": s(account.tier),
        "created_at": n(account.created_at),
        "name": s(account.name),
        "limit_overrides": as_json(account.limit_overrides),
        "webhook_secret": s(account.webhook_secret),
    }
    if account.webhook_url:
        item["webhook_url"] = s(account.webhook_url)
    if account.previous_webhook_secret and account.previous_secret_expires_at is not None:
        item["previous_webhook_secret"] = s(account.previous_webhook_secret)
        item["previous_secret_expires_at"] = n(account.previous_secret_expires_at)
    return item


def _account_from(item: Item) -> Account:
    return Account(
        account_id=item["account_id"]["S"],
        tier=item["tier"]["S"],
        created_at=float(item["created_at"]["N"]),
        name=get_s(item, "name") or "",
        limit_overrides=get_json(item, "limit_overrides") or {},
        webhook_url=get_s(item, "webhook_url"),
        webhook_secret=get_s(item, "webhook_secret") or "",
        previous_webhook_secret=get_s(item, "previous_webhook_secret"),
        previous_secret_expires_at=get_n(item, "previous_secret_expires_at"),
    )


class DynamoAccountStore:
    def __init__(self, dynamodb: Any, settings: Settings) -> None:
        self.db = dynamodb
        self.table = ACCOUNTS.name(settings)
        self.limits = LIMITS.name(settings)

    def create(
        self, *, tier: str, name: str, now: float, webhook_url: str | None = None
    ) -> Account:
        account = Account(
            account_id=new_account_id(now),
            tier=tier,
            created_at=now,
            name=name,
            webhook_url=webhook_url,
            webhook_secret=new_webhook_secret(),
        )
        zeros = {counter: n(0) for counter in c.COUNTERS}
        call(
            "create account",
            self.db.transact_write_items,
            TransactItems=[
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": _account_item(account),
                        "ConditionExpression": "attribute_not_exists(account_id)",
                    }
                },
                {
                    "Put": {
                        "TableName": self.limits,
                        "Item": {**c.state_key(account.account_id), **zeros},
                        "ConditionExpression": "attribute_not_exists(account_id)",
                    }
                },
            ],
        )
        return account

    def get(self, account_id: str) -> Account:
        item = call(
            "get account",
            self.db.get_item,
            TableName=self.table,
            Key={"account_id": s(account_id)},
        ).get("Item")
        if item is None:
            raise AccountNotFound(account_id)
        return _account_from(item)

    def update(self, account: Account) -> None:
        try:
            self.db.put_item(
                TableName=self.table,
                Item=_account_item(account),
                ConditionExpression="attribute_exists(account_id)",
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise AccountNotFound(account.account_id) from None
            raise StorageError(f"update account failed: {error_code(exc)}") from exc


class DynamoLimitStore:
    def __init__(self, dynamodb: Any, settings: Settings) -> None:
        self.db = dynamodb
        self.table = LIMITS.name(settings)

    def counters(self, account_id: str, *, now: float) -> Counters:
        start, _ = rate_window(now)
        state_key, rate_key = c.state_key(account_id), c.rate_key(account_id, start)
        response = call(
            "read counters",
            self.db.batch_get_item,
            RequestItems={self.table: {"Keys": [state_key, rate_key], "ConsistentRead": True}},
        )
        state = rate = None
        for item in response.get("Responses", {}).get(self.table, []):
            if item["sk"]["S"] == c.STATE_SK:
                state = item
            else:
                rate = item
        return c.counters_from(state, rate, now=now)

    def backlogged(self, *, now: float) -> dict[str, Counters]:
        # One small state item per account (rate windows expire by TTL): a bounded scan.
        request: dict[str, Any] = {
            "TableName": self.table,
            "FilterExpression": "sk = :state AND #backlog > :zero",
            "ExpressionAttributeNames": {"#backlog": "backlog"},
            "ExpressionAttributeValues": {":state": s(c.STATE_SK), ":zero": n(0)},
        }
        found: dict[str, Counters] = {}
        while True:
            response = call("scan backlogged accounts", self.db.scan, **request)
            for item in response.get("Items", []):
                found[item["account_id"]["S"]] = c.counters_from(item, None, now=now)
            if "LastEvaluatedKey" not in response:
                return found
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]


def _key_item(key: ApiKey) -> Item:
    item: Item = {
        "key_hash": s(key.key_hash),
        "key_id": s(key.key_id),
        "account_id": s(key.account_id),
        "scopes": {"SS": sorted(scope.value for scope in key.scopes)},
        "created_at": n(key.created_at),
        "name": s(key.name),
    }
    if key.revoked_at is not None:
        item["revoked_at"] = n(key.revoked_at)
    return item


def _key_from(item: Item) -> ApiKey:
    return ApiKey(
        key_id=item["key_id"]["S"],
        key_hash=item["key_hash"]["S"],
        account_id=item["account_id"]["S"],
        scopes=frozenset(Scope(value) for value in item.get("scopes", {}).get("SS", [])),
        created_at=float(item["created_at"]["N"]),
        name=get_s(item, "name") or "",
        revoked_at=get_n(item, "revoked_at"),
    )


class DynamoKeyStore:
    def __init__(self, dynamodb: Any, settings: Settings) -> None:
        self.db = dynamodb
        self.table = API_KEYS.name(settings)

    def create(
        self, account_id: str, scopes: Iterable[Scope], *, name: str, now: float
    ) -> tuple[ApiKey, str]:
        plaintext, key_id, key_hash = new_api_key()
        key = ApiKey(
            key_id=key_id,
            key_hash=key_hash,
            account_id=account_id,
            scopes=frozenset(scopes),
            created_at=now,
            name=name,
        )
        call(
            "create key",
            self.db.put_item,
            TableName=self.table,
            Item=_key_item(key),
            ConditionExpression="attribute_not_exists(key_hash)",
        )
        return key, plaintext

    def find(self, plaintext: str) -> ApiKey | None:
        item = call(
            "find key",
            self.db.get_item,
            TableName=self.table,
            Key={"key_hash": s(hash_key(plaintext))},
        ).get("Item")
        return _key_from(item) if item else None

    def get(self, key_id: str) -> ApiKey:
        items = call(
            "get key",
            self.db.query,
            TableName=self.table,
            IndexName="by_key_id",
            KeyConditionExpression="key_id = :k",
            ExpressionAttributeValues={":k": s(key_id)},
        ).get("Items", [])
        if not items:
            raise KeyNotFound(key_id)
        return _key_from(items[0])

    def revoke(self, key_id: str, *, now: float) -> ApiKey:
        key = self.get(key_id)
        attributes = call(
            "revoke key",
            self.db.update_item,
            TableName=self.table,
            Key={"key_hash": s(key.key_hash)},
            UpdateExpression="SET revoked_at = if_not_exists(revoked_at, :now)",
            ExpressionAttributeValues={":now": n(now)},
            ReturnValues="ALL_NEW",
        )["Attributes"]
        return _key_from(attributes)

    def list_for_account(self, account_id: str) -> list[ApiKey]:
        request: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": "by_account",
            "KeyConditionExpression": "account_id = :a",
            "ExpressionAttributeValues": {":a": s(account_id)},
        }
        keys: list[ApiKey] = []
        while True:
            response = call("list keys", self.db.query, **request)
            keys.extend(_key_from(item) for item in response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                return keys
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]
