"""The API's side of webhooks: cancel publishes the event, the secret rotation route (both
secrets sign during the grace), and the replay route (same event id; 409 before the end;
someone else's job is 404)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from comfyfleet.api.models import iso
from comfyfleet.delivery import QueuedEvent, WebhookDelivery
from comfyfleet.domain import JobState
from comfyfleet.events import encode_event
from comfyfleet.settings import Settings
from comfyfleet.webhooks import signature_headers, signing_secrets, verify
from tests.api_support import ApiClient, MemoryApi, error_of, memory_setup
from tests.support import basic_graph

HOOK = "https://hooks.example.com/comfy"


@pytest.fixture
def app(settings: Settings) -> MemoryApi:
    return memory_setup(settings)


def submit(client: ApiClient, **fields: object) -> str:
    response = client.post("/v1/jobs", {"prompt": basic_graph(), **fields})
    assert response.status == 202, response.body
    job_id: str = response.json()["job_id"]
    return job_id


def test_cancelling_a_queued_job_publishes_exactly_one_event(app: MemoryApi) -> None:
    account = app.account()
    client = app.client(account)
    job_id = submit(client, webhook_url=HOOK)

    assert client.post(f"/v1/jobs/{job_id}/cancel").status == 200
    assert client.post(f"/v1/jobs/{job_id}/cancel").status == 409

    [event] = app.world.events.of_job(job_id)
    assert event["type"] == "job.cancelled" and event["status"] == "cancelled"
    assert app.world.events.attributes == [{"type": "job.cancelled", "account": account.account_id}]
    view = client.get(f"/v1/jobs/{job_id}").json()
    assert view["webhook"] == {"url": HOOK, "state": "pending", "attempts": 0}


def test_cancelling_a_running_job_publishes_nothing_until_it_ends(app: MemoryApi) -> None:
    client = app.client(app.account())
    job_id = submit(client)
    app.claim(job_id)

    response = client.post(f"/v1/jobs/{job_id}/cancel")

    assert response.json()["cancel_requested"] and app.world.events.of_job(job_id) == []


def test_rotating_the_secret_returns_a_new_one_and_both_sign_for_the_grace(
    app: MemoryApi,
) -> None:
    account = app.account()
    old = app.world.stores.accounts.get(account.account_id).webhook_secret
    now = app.world.clock.now()

    response = app.client(account, admin=True).post(
        f"/v1/admin/accounts/{account.account_id}/webhook-secret/rotate"
    )

    assert response.status == 200, response.body
    body = response.json()
    assert body["account_id"] == account.account_id
    assert body["webhook_secret"].startswith("whsec_") and body["webhook_secret"] != old
    assert body["previous_secret_expires_at"] == iso(now + 86400)
    stored = app.world.stores.accounts.get(account.account_id)
    assert stored.webhook_secret == body["webhook_secret"]
    secrets = signing_secrets(stored, now + 60)
    assert secrets == [body["webhook_secret"], old]
    headers = signature_headers(secrets, "evt_x", b"{}", timestamp=int(now))
    for secret in secrets:
        assert verify(headers, b"{}", secret, now=now) == {}
    assert signing_secrets(stored, now + 86400) == [body["webhook_secret"]]


def test_the_grace_is_a_setting() -> None:
    app = memory_setup(Settings(webhook_secret_grace_seconds=0))
    account = app.account()

    body = (
        app.client(account, admin=True)
        .post(f"/v1/admin/accounts/{account.account_id}/webhook-secret/rotate")
        .json()
    )

    assert body["previous_secret_expires_at"] is None
    stored = app.world.stores.accounts.get(account.account_id)
    assert signing_secrets(stored, app.world.clock.now()) == [body["webhook_secret"]]


@pytest.mark.parametrize(
    ("who", "target", "status", "code"),
    [
        ("jobs key", "own", 403, "forbidden"),
        ("admin", "acct_00000000000000000000000000", 404, "not_found"),
        ("admin", "not-an-account", 404, "not_found"),
    ],
)
def test_rotation_needs_the_admin_scope_and_an_existing_account(
    app: MemoryApi, who: str, target: str, status: int, code: str
) -> None:
    account = app.account()
    account_id = account.account_id if target == "own" else target

    response = app.client(account, admin=who == "admin").post(
        f"/v1/admin/accounts/{account_id}/webhook-secret/rotate"
    )

    assert response.status == status and error_of(response)["code"] == code


def test_replaying_an_ended_jobs_webhook_resends_the_same_event(app: MemoryApi) -> None:
    client = app.client(app.account())
    job_id = submit(client, webhook_url=HOOK)
    client.post(f"/v1/jobs/{job_id}/cancel")
    app.world.stores.jobs.record_delivery(
        job_id, {"state": "delivered", "attempts": 2, "event_id": f"evt_{job_id}"}
    )

    response = client.post(f"/v1/jobs/{job_id}/webhook/replay")

    assert response.status == 202, response.body
    assert response.json() == {
        "job_id": job_id,
        "event_id": f"evt_{job_id}",
        "type": "job.cancelled",
        "state": "pending",
    }
    first, again = app.world.events.of_job(job_id)
    assert first == again
    delivery = app.world.stores.jobs.get(job_id).webhook
    assert delivery is not None
    assert delivery["state"] == "pending" and delivery["replays"] == 1
    assert delivery["attempts"] == 2
    assert client.get(f"/v1/jobs/{job_id}").json()["webhook"]["state"] == "pending"


def test_a_job_that_has_not_ended_has_no_webhook_to_replay(app: MemoryApi) -> None:
    client = app.client(app.account())
    queued = submit(client)
    running = submit(client)
    app.claim(queued)  # the first in the ring is the first received

    for job_id in (queued, running):
        response = client.post(f"/v1/jobs/{job_id}/webhook/replay")
        assert response.status == 409 and error_of(response)["code"] == "job_state_conflict"
    assert app.world.events.published == []
    assert app.world.stores.jobs.get(queued).state is JobState.RUNNING


def test_someone_elses_job_cannot_be_replayed(app: MemoryApi) -> None:
    owner, other = app.client(app.account()), app.client(app.account())
    job_id = submit(owner)
    owner.post(f"/v1/jobs/{job_id}/cancel")

    for path in (f"/v1/jobs/{job_id}/webhook/replay", "/v1/jobs/not-a-job/webhook/replay"):
        response = other.post(path)
        assert response.status == 404 and error_of(response)["code"] == "not_found"
    assert len(app.world.events.of_job(job_id)) == 1


class Accepting:
    def __init__(self) -> None:
        self.urls: list[str] = []

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        self.urls.append(url)
        return 204


class NoRetries:
    def retry_in(self, event: QueuedEvent, seconds: int) -> None:
        raise AssertionError("a delivered event is not retried")


def test_a_delivery_to_the_accounts_default_url_shows_on_the_job(app: MemoryApi) -> None:
    account = app.account()
    stored = app.world.stores.accounts.get(account.account_id)
    stored.webhook_url = "https://default.example.com/hook"
    app.world.stores.accounts.update(stored)
    client = app.client(account)
    job_id = submit(client)
    client.post(f"/v1/jobs/{job_id}/cancel")
    assert client.get(f"/v1/jobs/{job_id}").json()["webhook"] is None  # nothing sent yet
    poster = Accepting()
    delivery = WebhookDelivery(app.world.stores, poster, NoRetries(), app.world.clock)
    [event] = app.world.events.of_job(job_id)

    delivery.deliver(QueuedEvent("m-1", "r-1", encode_event(event), 1, "arn:aws:sqs:x:1:q"))

    assert poster.urls == ["https://default.example.com/hook"]
    assert client.get(f"/v1/jobs/{job_id}").json()["webhook"] == {
        "url": "https://default.example.com/hook",
        "state": "delivered",
        "attempts": 1,
    }
