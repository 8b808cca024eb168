"""The authorizer function (functions/authorizer/app.handler) on real REQUEST-authorizer
events against moto: valid, revoked, malformed, missing and unknown keys; its JSON logs; and
the api function without the authorizer's context."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from comfyfleet.resources import Provisioned
from comfyfleet.store import Stores
from tests.api_support import LambdaContext, authorizer_event, rest_event
from tests.integration.lambda_functions import Functions


@pytest.fixture
def functions(aws: Provisioned, dynamo: Stores) -> Functions:
    return Functions.load(aws, dynamo)


# -- the authorizer function -------------------------------------------------------------------


def test_the_authorizer_function_resolves_a_key_to_the_caller(functions: Functions) -> None:
    account = functions.account("pro")

    answer = functions.authorize(account.key)

    assert answer["principalId"] == account.account_id
    statement = answer["policyDocument"]["Statement"][0]
    assert statement["Effect"] == "Allow"
    assert statement["Resource"] == "arn:aws:execute-api:us-east-1:123456789012:abc123/prod/*"
    assert answer["context"]["tier"] == "pro" and answer["context"]["scopes"] == "jobs"
    assert json.loads(answer["context"]["limits"])["requests_per_minute"] == 300


@pytest.mark.parametrize("key", [None, "sk_live_short", "sk_live_" + "Q" * 43])
def test_the_authorizer_function_refuses_missing_malformed_and_unknown_keys(
    functions: Functions, key: str | None
) -> None:
    with pytest.raises(Exception, match="^Unauthorized$"):
        functions.authorize(key)


def test_the_authorizer_function_refuses_a_revoked_key(functions: Functions) -> None:
    account = functions.account()
    admin = functions.call(
        "GET", "/v1/admin/keys", account.admin_key, query={"account_id": account.account_id}
    )
    jobs_key = next(k for k in admin.body["keys"] if k["scopes"] == ["jobs"])
    revoked = functions.call("DELETE", f"/v1/admin/keys/{jobs_key['key_id']}", account.admin_key)
    assert revoked.status == 200

    with pytest.raises(Exception, match="^Unauthorized$"):
        functions.authorize(account.key)


def test_the_api_function_refuses_an_event_without_the_authorizers_context(
    functions: Functions,
) -> None:
    response = functions.api.handler(rest_event("GET", "/v1/jobs"), LambdaContext())

    assert response["statusCode"] == 401
    assert json.loads(response["body"])["error"]["code"] == "unauthorized"


# -- logs --------------------------------------------------------------------------------------


@pytest.fixture
def authorizer_log(functions: Functions) -> Iterator[io.StringIO]:
    """What the authorizer function logs. Powertools keeps one handler per service name
    for the process, bound to the stream of the first test that made it: point it here."""
    stream = io.StringIO()
    (handler,) = logging.getLogger(functions.authorizer.SERVICE).handlers
    assert isinstance(handler, logging.StreamHandler)
    previous = handler.setStream(stream)
    yield stream
    handler.setStream(previous)


def test_logs_are_json_with_the_request_id_and_never_the_key(
    functions: Functions, authorizer_log: io.StringIO
) -> None:
    unknown_key = "sk_live_" + "S" * 43
    event = authorizer_event({"Authorization": f"Bearer {unknown_key}"})

    with pytest.raises(Exception, match="^Unauthorized$"):
        functions.authorizer.handler(event, LambdaContext())

    output = authorizer_log.getvalue()
    records = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    (refused,) = [record for record in records if record.get("message") == "key refused"]
    assert refused["correlation_id"] == event["requestContext"]["requestId"]
    assert refused["service"] == "comfyfleet-authorizer" and refused["reason"] == "unknown"
    assert refused["key_id"] == unknown_key[:16]
    assert unknown_key not in output
