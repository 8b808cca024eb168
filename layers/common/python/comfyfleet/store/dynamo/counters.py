"""The account counters every job transition moves, as DynamoDB transaction items.

The limits table holds, per account, one ``state`` item and one item per rate window.
DynamoDB conditions cannot add, so sums the conditions need are kept as counters too:

    waiting = ring + backlog      (queued jobs; bounded by the queue depth)
    active  = ring + running      (bounded by the concurrency: a message is only sent for a
                                   job its account could run now)

Every write that moves one moves the others with it, in the same transaction.
"""

from __future__ import annotations

import re
from typing import Any

from comfyfleet.domain import SHARED_ROUTE, Counters, rate_window
from comfyfleet.store.dynamo.codec import Item, get_int, n, s

STATE_SK = "state"
COUNTERS = ("waiting", "ring", "backlog", "running", "active")
SHARED_QUEUE_ITEM = "#shared"  # the nodes-table item counting the shared queue's messages

# Counter deltas of each transition.
ADMIT_TO_RING = {"waiting": 1, "ring": 1, "active": 1}
ADMIT_TO_BACKLOG = {"waiting": 1, "backlog": 1}
PROMOTE = {"backlog": -1, "ring": 1, "active": 1}
CLAIM = {"ring": -1, "waiting": -1, "running": 1}
FINISH_RUNNING = {"running": -1, "active": -1}
REQUEUE_RUNNING = {"running": -1, "waiting": 1, "ring": 1}
DROP_FROM_RING = {"waiting": -1, "ring": -1, "active": -1}
DROP_FROM_BACKLOG = {"waiting": -1, "backlog": -1}

# Conditions (values :depth, :slots, :conc come from the account's limits).
HAS_ROOM_IN_RING = "#waiting < :depth AND #ring < :slots AND #active < :conc AND #backlog = :zero"
MUST_WAIT = "#waiting < :depth AND (#ring >= :slots OR #active >= :conc OR #backlog > :zero)"
SLOT_FREE = "#ring < :slots AND #active < :conc"
UNDER_CONCURRENCY = "#running < :conc"
_NAME = re.compile(r"#(\w+)")
_VALUE = re.compile(r":\w+")


def state_key(account_id: str) -> Item:
    return {"account_id": s(account_id), "sk": s(STATE_SK)}


def rate_key(account_id: str, window_start: int) -> Item:
    return {"account_id": s(account_id), "sk": s(f"rate#{window_start}")}


def limit_values(*, depth: int = 0, slots: int = 0, conc: int = 0) -> dict[str, Any]:
    return {":depth": n(depth), ":slots": n(slots), ":conc": n(conc), ":zero": n(0)}


def move_counters(
    table: str,
    account_id: str,
    deltas: dict[str, int],
    *,
    condition: str | None = None,
    values: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A transaction item that adds ``deltas`` to the account's counters."""
    expression = "ADD " + ", ".join(f"#{name} :d_{name}" for name in deltas)
    attribute_values = {f":d_{name}": n(delta) for name, delta in deltas.items()}
    update: dict[str, Any] = {
        "TableName": table,
        "Key": state_key(account_id),
        "UpdateExpression": expression,
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }
    if condition is not None:
        update["ConditionExpression"] = condition
        used = set(_VALUE.findall(condition))
        attribute_values.update({k: v for k, v in (values or {}).items() if k in used})
    # DynamoDB refuses placeholders an expression does not use, so name exactly those used.
    used_names = set(_NAME.findall(expression + " " + (condition or "")))
    update["ExpressionAttributeNames"] = {f"#{name}": name for name in used_names}
    update["ExpressionAttributeValues"] = attribute_values
    return {"Update": update}


def count_request(table: str, account_id: str, *, now: float, limit: int) -> dict[str, Any]:
    """A transaction item that counts one request in the current rate window."""
    start, end = rate_window(now)
    return {
        "Update": {
            "TableName": table,
            "Key": rate_key(account_id, start),
            "UpdateExpression": "ADD #count :one SET expires_at = :expires",
            "ConditionExpression": "attribute_not_exists(#count) OR #count < :limit",
            "ExpressionAttributeNames": {"#count": "count"},
            "ExpressionAttributeValues": {
                ":one": n(1),
                ":limit": n(limit),
                ":expires": n(end + 60),
            },
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
    }


def move_route(nodes_table: str, route: str, delta: int, *, must_exist: bool) -> dict[str, Any]:
    """A transaction item that moves the queued count of a node's queue (or the shared one)."""
    key = SHARED_QUEUE_ITEM if route == SHARED_ROUTE else route
    update: dict[str, Any] = {
        "TableName": nodes_table,
        "Key": {"node_id": s(key)},
        "UpdateExpression": "ADD queued :delta",
        "ExpressionAttributeValues": {":delta": n(delta)},
    }
    if must_exist and route != SHARED_ROUTE:
        update["ConditionExpression"] = "attribute_exists(node_status)"
    return {"Update": update}


def counters_from(state: Item | None, rate: Item | None, *, now: float) -> Counters:
    state = state or {}
    _, end = rate_window(now)
    return Counters(
        window_requests=get_int(rate or {}, "count"),
        window_reset=float(end),
        waiting=max(0, get_int(state, "waiting")),
        ring=max(0, get_int(state, "ring")),
        running=max(0, get_int(state, "running")),
    )
