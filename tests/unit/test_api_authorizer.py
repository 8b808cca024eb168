"""The REQUEST authorizer: which keys it accepts (Bearer or X-API-Key), the policy and context
it answers with, how it refuses (``Unauthorized``: API Gateway's 401), and the gateway's
401/403 answers in this API's error shape."""

from __future__ import annotations

import json
from typing import Any

import pytest

from comfyfleet.api.auth import KeyAuthorizer, Unauthorized, presented_key, whole_api_arn
from comfyfleet.api.context import Caller
from comfyfleet.domain import ApiKey, Scope
from comfyfleet.settings import Settings
from tests.api_support import MemoryApi, authorizer_event, error_of, memory_setup
from tests.support import basic_graph

MALFORMED = (
    "sk_live_short",
    "sk_live_" + "A" * 42 + "!",
    "sk_test_" + "A" * 43,
    "sk_live_" + "A" * 44,
    " " * 10,
)


@pytest.fixture
def app(settings: Settings) -> MemoryApi:
    return memory_setup(settings)


class CountingKeys:
    """A KeyStore that counts lookups (to show malformed keys are refused before any)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.lookups = 0

    def find(self, plaintext: str) -> ApiKey | None:
        self.lookups += 1
        found: ApiKey | None = self.inner.find(plaintext)
        return found


def authorizer_of(app: MemoryApi) -> KeyAuthorizer:
    stores = app.world.stores
    return KeyAuthorizer(stores.keys, stores.accounts, app.world.settings)


def refusal(authorizer: KeyAuthorizer, headers: dict[str, str]) -> Unauthorized:
    with pytest.raises(Unauthorized) as refused:
        authorizer.authorize(authorizer_event(headers))
    assert str(refused.value) == "Unauthorized"  # API Gateway's word for a 401
    return refused.value


# -- the authorizer's answer -------------------------------------------------------------------


def test_a_valid_bearer_key_gets_a_policy_for_the_whole_api_and_the_callers_context(
    app: MemoryApi,
) -> None:
    account = app.account("pro")

    answer = authorizer_of(app).authorize(
        authorizer_event({"Authorization": f"Bearer {account.key}"}, method="POST")
    )

    assert answer["principalId"] == account.account_id
    assert answer["policyDocument"]["Statement"] == [
        {
            "Action": "execute-api:Invoke",
            "Effect": "Allow",
            "Resource": "arn:aws:execute-api:us-east-1:123456789012:abc123/prod/*",
        }
    ]
    context = answer["context"]
    assert all(isinstance(value, str) for value in context.values())  # API Gateway's rule
    assert context["account_id"] == account.account_id
    assert context["tier"] == "pro" and context["scopes"] == "jobs"
    assert context["key_id"] == account.key[:16]
    assert json.loads(context["limits"]) == {
        "requests_per_minute": 300,
        "concurrency": 10,
        "queue_depth": 100,
        "ring_slots": 3,
    }


def test_the_context_reads_back_as_the_same_caller(app: MemoryApi) -> None:
    account = app.account("pro")
    authorizer = authorizer_of(app)

    answer = authorizer.authorize(authorizer_event({"X-API-Key": account.admin_key}))

    caller = Caller.from_context(answer["context"], app.world.settings)
    assert caller == authorizer.caller(account.admin_key)
    assert caller is not None and caller.scopes == frozenset({Scope.ADMIN})


@pytest.mark.parametrize(
    "headers",
    [
        lambda key: {"Authorization": f"Bearer {key}"},
        lambda key: {"authorization": f"bearer {key}"},
        lambda key: {"Authorization": f"  Bearer   {key}  "},
        lambda key: {"X-API-Key": key},
        lambda key: {"x-api-key": f" {key} "},
    ],
    ids=["bearer", "lower-case", "spaces", "x-api-key", "x-api-key-lower"],
)
def test_a_key_is_read_from_either_header_whatever_its_case(app: MemoryApi, headers: Any) -> None:
    account = app.account()

    answer = authorizer_of(app).authorize(authorizer_event(headers(account.key)))

    assert answer["principalId"] == account.account_id


def test_a_bearer_token_takes_precedence_over_x_api_key(app: MemoryApi) -> None:
    account = app.account()
    authorizer = authorizer_of(app)

    assert presented_key({"Authorization": "Bearer a", "X-API-Key": "b"}) == "a"
    assert presented_key({"Authorization": "Basic a", "X-API-Key": "b"}) == "b"
    refused = refusal(
        authorizer, {"Authorization": "Bearer sk_live_" + "B" * 43, "X-API-Key": account.key}
    )
    assert refused.reason == "unknown"


# -- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": ""}, {"Authorization": "Bearer "}, {"X-API-Key": "  "}],
    ids=["none", "empty", "bearer-only", "blank"],
)
def test_a_missing_key_is_refused(app: MemoryApi, headers: dict[str, str]) -> None:
    assert refusal(authorizer_of(app), headers).reason == "missing"


@pytest.mark.parametrize("key", MALFORMED)
def test_a_malformed_key_is_refused_before_any_lookup(app: MemoryApi, key: str) -> None:
    stores = app.world.stores
    keys = CountingKeys(stores.keys)
    authorizer = KeyAuthorizer(keys, stores.accounts, app.world.settings)  # type: ignore[arg-type]

    refused = refusal(authorizer, {"X-API-Key": key})

    assert refused.reason in ("malformed", "missing") and keys.lookups == 0


def test_basic_auth_is_no_key(app: MemoryApi) -> None:
    assert refusal(authorizer_of(app), {"Authorization": "Basic dXNlcjpwYXNz"}).reason == "missing"


def test_an_unknown_key_is_refused(app: MemoryApi) -> None:
    refused = refusal(authorizer_of(app), {"Authorization": "Bearer sk_live_" + "A" * 43})

    assert refused.reason == "unknown"


def test_a_revoked_key_is_refused_and_the_accounts_other_keys_still_work(app: MemoryApi) -> None:
    account = app.account()
    stores = app.world.stores
    key = stores.keys.find(account.key)
    assert key is not None
    stores.keys.revoke(key.key_id, now=app.world.clock.now())
    authorizer = authorizer_of(app)

    assert refusal(authorizer, {"Authorization": f"Bearer {account.key}"}).reason == "revoked"
    assert authorizer.authorize(authorizer_event({"X-API-Key": account.admin_key}))


def test_a_key_whose_account_is_gone_is_refused(app: MemoryApi) -> None:
    stores = app.world.stores
    _, orphan = stores.keys.create(
        "acct_01JZZZZZZZZZZZZZZZZZZZZZZZ", {Scope.JOBS}, name="", now=app.world.clock.now()
    )

    assert refusal(authorizer_of(app), {"X-API-Key": orphan}).reason == "account gone"


@pytest.mark.parametrize(
    ("method_arn", "allowed"),
    [
        (
            "arn:aws:execute-api:us-east-1:123456789012:abc123/prod/GET/v1/jobs/01J",
            "arn:aws:execute-api:us-east-1:123456789012:abc123/prod/*",
        ),
        ("arn:aws:execute-api:eu-west-1:1:api/v2", "arn:aws:execute-api:eu-west-1:1:api/v2/*"),
        ("", "*"),
        ("not-an-arn", "*"),
    ],
)
def test_the_policy_names_every_route_of_the_stage(method_arn: str, allowed: str) -> None:
    assert whole_api_arn(method_arn) == allowed


# -- through the local gateway -----------------------------------------------------------------


@pytest.mark.parametrize("header", ["Authorization", "X-API-Key"])
def test_a_valid_key_in_either_header_reaches_the_api(app: MemoryApi, header: str) -> None:
    account = app.account()
    value = f"Bearer {account.key}" if header == "Authorization" else account.key

    response = app.anonymous.post(
        "/v1/jobs", {"prompt": basic_graph()}, headers={header: value}
    )

    assert response.status == 202
    job = app.world.stores.jobs.get(response.json()["job_id"])
    assert job.account_id == account.account_id  # the account the authorizer named


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-Key": "sk_live_short"},
        {"X-API-Key": "sk_live_" + "A" * 43},
        {"Authorization": "Token sk_live_" + "A" * 43},
    ],
    ids=["missing", "malformed", "unknown", "other-scheme"],
)
def test_a_refused_key_is_401_unauthorized_in_the_error_shape(
    app: MemoryApi, headers: dict[str, str]
) -> None:
    response = app.anonymous.get("/v1/jobs", headers=headers)

    assert response.status == 401
    assert response.json() == {
        "error": {
            "code": "unauthorized",
            "message": "a valid API key is required",
            "request_id": response.header("X-Request-Id"),
        }
    }


def test_a_revoked_key_in_x_api_key_is_401(app: MemoryApi) -> None:
    account = app.account()
    admin = app.client(account, admin=True)
    listed = admin.get("/v1/admin/keys", query=f"account_id={account.account_id}").json()
    admin_key_id = next(k["key_id"] for k in listed["keys"] if k["scopes"] == ["admin"])
    assert admin.delete(f"/v1/admin/keys/{admin_key_id}").status == 200

    response = admin.get("/v1/admin/nodes")

    assert response.status == 401 and error_of(response)["code"] == "unauthorized"


def test_the_wrong_scope_is_403_forbidden_in_the_error_shape(app: MemoryApi) -> None:
    account = app.account()

    response = app.client(account).post("/v1/admin/accounts", {"tier": "free"})

    assert response.status == 403
    error = error_of(response)
    assert error["code"] == "forbidden" and "admin" in error["message"]
    assert error["request_id"] == response.header("X-Request-Id")


def test_the_public_paths_need_no_key_even_with_a_bad_one(app: MemoryApi) -> None:
    bad = {"Authorization": "Bearer nonsense"}

    assert app.anonymous.get("/v1/health", headers=bad).status == 200
    assert app.anonymous.get("/doc", query="format=json", headers=bad).status == 200


def test_a_failing_key_store_is_503_not_a_401(app: MemoryApi) -> None:
    from comfyfleet.api.local import LocalGateway
    from comfyfleet.errors import StorageError

    def broken(_event: dict[str, Any], _context: Any) -> dict[str, Any]:
        raise StorageError("get item failed: timeout")

    gateway = LocalGateway(app.api.handle, broken)

    response = gateway.request("GET", "/v1/jobs", headers={"X-API-Key": app.account().key})

    assert response.status == 503 and error_of(response)["code"] == "storage_unavailable"
