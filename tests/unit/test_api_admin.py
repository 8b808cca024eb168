"""The admin routes through the local gateway: accounts, keys, nodes and queues; every
bad input with its status and code; and that only the admin scope may call them."""

from __future__ import annotations

from typing import Any

import pytest

from comfyfleet.domain import Limits, NodeInfo, NodeStatus, Scope
from comfyfleet.scheduling import JobRequest
from comfyfleet.settings import Settings
from tests.api_support import RATE_HEADERS, Account, ApiClient, MemoryApi, error_of, memory_setup
from tests.support import basic_graph

UNKNOWN_ACCOUNT = "acct_01JZZZZZZZZZZZZZZZZZZZZZZZ"
UNKNOWN_KEY = "sk_live_ZZZZZZZZ"
MODEL = {"key": "k", "folder": "checkpoints", "url": "https://example.com/m", "filename": "m"}


@pytest.fixture
def app(settings: Settings) -> MemoryApi:
    return memory_setup(settings)


@pytest.fixture
def operator(app: MemoryApi) -> Account:
    return app.account()


@pytest.fixture
def admin(app: MemoryApi, operator: Account) -> ApiClient:
    return app.client(operator, admin=True)


def register_nodes(app: MemoryApi) -> None:
    """A node holding model ``k`` (jobs needing it go to its queue) and an empty one."""
    now = app.world.clock.now()
    for node_id, cached in (("i-warm", {"k": 8_000_000_000}), ("i-cold", {})):
        app.world.stores.nodes.register(
            NodeInfo(
                node_id,
                NodeStatus.IDLE,
                now,
                queue_url=f"memory://{node_id}",
                cached=cached,
                gpu="L4",
                registered_at=now,
            )
        )


def route_to_warm_node(app: MemoryApi, account: Account) -> str:
    """Admit a job that needs model ``k``: the router sends it to i-warm's queue."""
    limits = Limits.of(app.world.settings.tier("free"))
    admission = app.api.jobs.dispatcher.submit(
        account.account_id, "free", limits, JobRequest(basic_graph(), [MODEL])
    )
    assert admission.job.route == "i-warm"
    return admission.job.job_id


# -- accounts ----------------------------------------------------------------------------------


def test_an_account_is_created_with_its_webhook_secret(app: MemoryApi, admin: ApiClient) -> None:
    response = admin.post("/v1/admin/accounts", {"tier": "Pro", "name": "Acme"})

    assert response.status == 201
    body = response.json()
    assert body["account_id"].startswith("acct_") and body["tier"] == "pro"
    assert body["name"] == "Acme" and body["created_at"].endswith("Z")
    assert body["webhook_secret"].startswith("whsec_")
    stored = app.world.stores.accounts.get(body["account_id"])
    assert stored.webhook_secret == body["webhook_secret"] and stored.tier == "pro"
    assert all(response.header(name) is not None for name in RATE_HEADERS)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"tier": "platinum"}, "body.tier"),
        ({}, "body.tier"),
        ({"tier": ""}, "body.tier"),
        ({"tier": 3}, "body.tier"),
        ({"tier": "free", "name": "x" * 201}, "body.name"),
        ({"tier": "free", "extra": 1}, "body.extra"),
    ],
)
def test_a_bad_account_request_is_400_naming_the_field(
    admin: ApiClient, body: dict[str, Any], field: str
) -> None:
    response = admin.post("/v1/admin/accounts", body)

    assert response.status == 400
    error = error_of(response)
    assert error["code"] == "invalid_request"
    assert field in [detail["field"] for detail in error["details"]]


def test_an_account_request_that_is_not_json_is_400_malformed_json(admin: ApiClient) -> None:
    response = admin.call("POST", "/v1/admin/accounts", body=b"tier=free")

    assert response.status == 400 and error_of(response)["code"] == "malformed_json"


# -- keys --------------------------------------------------------------------------------------


def test_a_key_is_created_shown_once_listed_and_revoked(app: MemoryApi, admin: ApiClient) -> None:
    account_id = admin.post("/v1/admin/accounts", {"tier": "free"}).json()["account_id"]

    created = admin.post(
        "/v1/admin/keys", {"account_id": account_id, "scopes": ["jobs"], "name": "ci"}
    )

    assert created.status == 201
    key = created.json()
    assert key["api_key"].startswith("sk_live_") and key["key_id"] == key["api_key"][:16]
    assert key["account_id"] == account_id and key["scopes"] == ["jobs"]
    new_client = ApiClient(app.gateway, {"Authorization": f"Bearer {key['api_key']}"})
    assert new_client.get("/v1/jobs").status == 200

    listed = admin.get("/v1/admin/keys", query=f"account_id={account_id}")

    assert listed.status == 200
    assert listed.json()["keys"] == [
        {k: v for k, v in key.items() if k != "api_key"} | {"revoked_at": None}
    ]
    assert "api_key" not in listed.body.decode()

    revoked = admin.delete(f"/v1/admin/keys/{key['key_id']}")

    assert revoked.status == 200 and revoked.json()["revoked_at"].endswith("Z")
    assert new_client.get("/v1/jobs").status == 401
    again = admin.delete(f"/v1/admin/keys/{key['key_id']}")
    assert again.status == 200 and again.json()["revoked_at"] == revoked.json()["revoked_at"]


def test_a_key_may_carry_both_scopes(app: MemoryApi, admin: ApiClient, operator: Account) -> None:
    key = admin.post(
        "/v1/admin/keys", {"account_id": operator.account_id, "scopes": ["admin", "jobs"]}
    ).json()

    both = ApiClient(app.gateway, {"X-API-Key": key["api_key"]})

    assert key["scopes"] == ["admin", "jobs"]
    assert both.get("/v1/admin/nodes").status == 200 and both.get("/v1/jobs").status == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scopes": ["jobs"]}, "body.account_id"),
        ({"account_id": "", "scopes": ["jobs"]}, "body.account_id"),
        ({"account_id": "a" * 65, "scopes": ["jobs"]}, "body.account_id"),
        ({"account_id": UNKNOWN_ACCOUNT}, "body.scopes"),
        ({"account_id": UNKNOWN_ACCOUNT, "scopes": []}, "body.scopes"),
        ({"account_id": UNKNOWN_ACCOUNT, "scopes": ["root"]}, "body.scopes.0"),
        ({"account_id": UNKNOWN_ACCOUNT, "scopes": "jobs"}, "body.scopes"),
        ({"account_id": UNKNOWN_ACCOUNT, "scopes": ["jobs"], "ttl": 3}, "body.ttl"),
    ],
)
def test_a_bad_key_request_is_400_naming_the_field(
    admin: ApiClient, body: dict[str, Any], field: str
) -> None:
    response = admin.post("/v1/admin/keys", body)

    assert response.status == 400
    error = error_of(response)
    assert error["code"] == "invalid_request"
    assert field in [detail["field"] for detail in error["details"]]


@pytest.mark.parametrize("account_id", [UNKNOWN_ACCOUNT, "acct_nope", "x" * 64])
def test_a_key_for_an_unknown_account_is_404(admin: ApiClient, account_id: str) -> None:
    response = admin.post("/v1/admin/keys", {"account_id": account_id, "scopes": ["jobs"]})

    assert response.status == 404 and error_of(response)["code"] == "not_found"


def test_listing_keys_needs_a_known_account(admin: ApiClient) -> None:
    missing = admin.get("/v1/admin/keys")
    unknown = admin.get("/v1/admin/keys", query=f"account_id={UNKNOWN_ACCOUNT}")
    too_long = admin.get("/v1/admin/keys", query="account_id=" + "a" * 65)

    assert missing.status == 400 and error_of(missing)["code"] == "invalid_request"
    assert unknown.status == 404 and error_of(unknown)["code"] == "not_found"
    assert too_long.status == 400 and error_of(too_long)["code"] == "invalid_request"


@pytest.mark.parametrize("key_id", [UNKNOWN_KEY, "nope", "sk_live_" + "A" * 43])
def test_revoking_an_unknown_key_is_404(admin: ApiClient, key_id: str) -> None:
    response = admin.delete(f"/v1/admin/keys/{key_id}")

    assert response.status == 404 and error_of(response)["code"] == "not_found"


# -- nodes -------------------------------------------------------------------------------------


def test_nodes_are_listed_in_order(app: MemoryApi, admin: ApiClient) -> None:
    register_nodes(app)

    response = admin.get("/v1/admin/nodes")

    assert response.status == 200
    nodes = response.json()["nodes"]
    assert [node["node_id"] for node in nodes] == ["i-cold", "i-warm"]
    assert nodes[1]["status"] == "idle" and nodes[1]["gpu"] == "L4"
    assert nodes[1]["cached_models"] == 1 and nodes[1]["queue_url"] == "memory://i-warm"


def test_draining_a_node_moves_its_waiting_jobs_to_the_shared_queue(
    app: MemoryApi, admin: ApiClient, operator: Account
) -> None:
    register_nodes(app)
    job_id = route_to_warm_node(app, operator)

    response = admin.post("/v1/admin/nodes/i-warm/drain")

    assert response.status == 200
    assert response.json() == {"node_id": "i-warm", "status": "draining", "moved_jobs": 1}
    assert app.world.stores.nodes.get("i-warm").status is NodeStatus.DRAINING
    assert app.world.stores.jobs.get(job_id).route == "shared"
    assert app.world.queues.depth(app.world.shared_url) == 1


def test_removing_a_node_forgets_it_after_moving_its_jobs(
    app: MemoryApi, admin: ApiClient, operator: Account
) -> None:
    register_nodes(app)
    route_to_warm_node(app, operator)

    response = admin.delete("/v1/admin/nodes/i-warm")

    assert response.status == 200
    assert response.json() == {"node_id": "i-warm", "removed": True, "moved_jobs": 1}
    listed = admin.get("/v1/admin/nodes").json()["nodes"]
    assert [node["node_id"] for node in listed] == ["i-cold"]


@pytest.mark.parametrize("node_id", ["i-gone", "-bad", "x" * 129, "%20"])
def test_an_unknown_node_is_404(admin: ApiClient, node_id: str) -> None:
    drained = admin.post(f"/v1/admin/nodes/{node_id}/drain")
    removed = admin.delete(f"/v1/admin/nodes/{node_id}")

    for response in (drained, removed):
        assert response.status == 404 and error_of(response)["code"] == "not_found"


# -- queues ------------------------------------------------------------------------------------


def test_queues_tell_depth_and_oldest_age(
    app: MemoryApi, admin: ApiClient, operator: Account
) -> None:
    register_nodes(app)
    route_to_warm_node(app, operator)
    app.client(operator).post("/v1/jobs", {"prompt": basic_graph()})
    app.world.clock.advance(30)

    response = admin.get("/v1/admin/queues")

    assert response.status == 200
    queues = {queue["name"]: queue for queue in response.json()["queues"]}
    kinds = {queue["kind"] for queue in queues.values()}
    assert kinds == {"shared", "dead_letter", "webhooks", "node"}
    shared = next(q for q in queues.values() if q["kind"] == "shared")
    assert shared["visible"] == 1 and shared["in_flight"] == 0
    assert shared["oldest_age_seconds"] == pytest.approx(30)
    assert queues["i-warm"]["visible"] == 1 and queues["i-cold"]["visible"] == 0
    assert queues["i-cold"]["oldest_age_seconds"] is None


# -- who may call ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/admin/accounts", {"tier": "free"}),
        ("POST", "/v1/admin/keys", {"account_id": UNKNOWN_ACCOUNT, "scopes": ["admin"]}),
        ("GET", f"/v1/admin/keys?account_id={UNKNOWN_ACCOUNT}", None),
        ("DELETE", f"/v1/admin/keys/{UNKNOWN_KEY}", None),
        ("GET", "/v1/admin/nodes", None),
        ("POST", "/v1/admin/nodes/i-warm/drain", None),
        ("DELETE", "/v1/admin/nodes/i-warm", None),
        ("GET", "/v1/admin/queues", None),
        ("GET", "/v1/admin/no-such-route", None),
    ],
)
def test_a_key_without_the_admin_scope_is_403_on_every_admin_route(
    app: MemoryApi, operator: Account, method: str, path: str, body: Any
) -> None:
    register_nodes(app)
    path, _, query = path.partition("?")

    response = app.client(operator).call(method, path, json_body=body, query=query or None)

    assert response.status == 403 and error_of(response)["code"] == "forbidden"
    assert app.world.stores.nodes.get("i-warm").status is NodeStatus.IDLE


def test_an_admin_key_may_not_submit_jobs(app: MemoryApi, admin: ApiClient) -> None:
    response = admin.post("/v1/jobs", {"prompt": basic_graph()})

    assert response.status == 403 and error_of(response)["code"] == "forbidden"
    assert Scope.JOBS.value in error_of(response)["message"]
