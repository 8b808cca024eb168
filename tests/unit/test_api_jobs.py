"""Reading, listing, cancelling jobs, previews, usage and health through the local gateway;
who may call what (401, 403, someone else's job is 404) and unknown routes (404, 405)."""

from __future__ import annotations

import pytest

from comfyfleet.domain import JobState, RingShare
from comfyfleet.resources import preview_key
from comfyfleet.settings import Settings
from tests.api_support import RATE_HEADERS, ApiClient, MemoryApi, error_of, memory_setup, rest_event
from tests.support import basic_graph

OUTPUTS = {
    "images": ["https://cdn.example.com/o/1.png"],
    "files": [
        {
            "url": "https://cdn.example.com/o/1.png",
            "filename": "comfyfleet_00001_.png",
            "content_type": "image/png",
            "size": 1234,
            "node_id": "3",
        }
    ],
}


@pytest.fixture
def app(settings: Settings) -> MemoryApi:
    return memory_setup(settings)


def submit(client: ApiClient, **fields: object) -> str:
    response = client.post("/v1/jobs", {"prompt": basic_graph(), **fields})
    assert response.status == 202, response.body
    job_id: str = response.json()["job_id"]
    return job_id


def test_health_needs_no_key_and_tells_version_and_time(app: MemoryApi) -> None:
    response = app.anonymous.get("/v1/health")

    assert response.status == 200
    body = response.json()
    assert body["status"] == "ok" and body["version"] and body["time"].endswith("Z")
    assert response.header("X-Request-Id")
    assert response.header("X-RateLimit-Limit") is None  # not an authenticated response


def test_a_queued_job_reads_back_with_its_position(app: MemoryApi) -> None:
    client = app.client(app.account())
    first = submit(client, webhook_url="https://hooks.example.com/x", metadata={"k": "v"})
    submit(client)
    third = submit(client)  # free tier: two ring slots, then the backlog

    view = client.get(f"/v1/jobs/{first}").json()
    waiting = client.get(f"/v1/jobs/{third}").json()

    assert view["status"] == "queued" and view["queue_position"] == 2
    assert view["progress"] is None and view["outputs"] is None and view["error"] is None
    assert view["attempts"] == 0 and view["metadata"] == {"k": "v"}
    assert view["webhook"] == {
        "url": "https://hooks.example.com/x",
        "state": "waiting",
        "attempts": 0,
    }
    assert waiting["queue_position"] == 3


def test_a_running_job_shows_its_progress(app: MemoryApi) -> None:
    client = app.client(app.account())
    job_id = submit(client)
    app.claim(job_id)
    app.world.stores.jobs.record_progress(job_id, "i-node1", {"value": 5, "max": 20, "node": "3"})

    view = client.get(f"/v1/jobs/{job_id}").json()

    assert view["status"] == "running" and view["started_at"]
    assert view["queue_position"] is None
    assert view["progress"] == {"value": 5.0, "max": 20.0, "node": "3", "percent": 25.0}
    assert view["attempts"] == 1


def test_a_finished_job_shows_outputs_error_and_times(app: MemoryApi) -> None:
    client = app.client(app.account())
    done, failed = submit(client), submit(client)
    for job_id in (done, failed):
        app.claim(job_id)
    dispatcher, share = app.api.jobs.dispatcher, RingShare(2, 2)
    dispatcher.finish(
        app.world.stores.jobs.get(done), "i-node1", JobState.COMPLETED, share, outputs=OUTPUTS
    )
    error = {"code": "execution_error", "message": "boom", "node_id": "2", "node_type": "X"}
    dispatcher.finish(
        app.world.stores.jobs.get(failed), "i-node1", JobState.FAILED, share, error=error
    )

    completed = client.get(f"/v1/jobs/{done}").json()
    errored = client.get(f"/v1/jobs/{failed}").json()

    assert completed["status"] == "completed" and completed["outputs"] == OUTPUTS
    assert completed["completed_at"] and completed["execution_time_ms"] == 0
    assert errored["error"] == {**error, "details": None}


def test_someone_elses_job_is_not_found(app: MemoryApi) -> None:
    owner, other = app.client(app.account()), app.client(app.account())
    job_id = submit(owner)

    for response in (
        other.get(f"/v1/jobs/{job_id}"),
        other.post(f"/v1/jobs/{job_id}/cancel"),
        other.delete(f"/v1/jobs/{job_id}"),
        other.get(f"/v1/jobs/{job_id}/preview"),
        other.get("/v1/jobs/not-a-job-id"),
        other.get("/v1/jobs/" + "A" * 3000),
    ):
        assert response.status == 404
        assert error_of(response)["code"] == "not_found"
    assert app.world.stores.jobs.get(job_id).state is JobState.QUEUED


def test_jobs_are_listed_newest_first_by_page_and_state(app: MemoryApi) -> None:
    client = app.client(app.account())
    ids = [submit(client) for _ in range(5)]
    client.post(f"/v1/jobs/{ids[0]}/cancel")

    first = client.get("/v1/jobs", query="limit=2").json()
    second = client.get("/v1/jobs", query=f"limit=2&cursor={first['next_cursor']}").json()
    cancelled = client.get("/v1/jobs", query="status=cancelled").json()

    assert [j["job_id"] for j in first["jobs"]] == ids[:2:-1][:2]
    assert [j["job_id"] for j in second["jobs"]] == [ids[2], ids[1]]
    assert [j["job_id"] for j in cancelled["jobs"]] == [ids[0]]
    assert cancelled["next_cursor"] is None


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("status=exploded", "invalid_request"),
        ("limit=0", "invalid_request"),
        ("limit=1000", "invalid_request"),
        ("limit=ten", "invalid_request"),
        ("cursor=%%%", "invalid_cursor"),
    ],
)
def test_bad_list_parameters_are_400(app: MemoryApi, query: str, code: str) -> None:
    response = app.client(app.account()).get("/v1/jobs", query=query)

    assert response.status == 400
    assert error_of(response)["code"] == code


def test_cancelling_a_queued_job_ends_it(app: MemoryApi) -> None:
    client = app.client(app.account())
    job_id = submit(client)

    response = client.post(f"/v1/jobs/{job_id}/cancel")

    assert response.status == 200
    assert response.json()["status"] == "cancelled"
    assert response.header("X-Queue-Current") == "0"


def test_deleting_a_running_job_asks_its_agent_to_stop(app: MemoryApi) -> None:
    client = app.client(app.account())
    job_id = submit(client)
    app.claim(job_id)

    response = client.delete(f"/v1/jobs/{job_id}")

    assert response.status == 200
    assert response.json()["status"] == "running" and response.json()["cancel_requested"]


def test_a_finished_job_is_not_cancellable(app: MemoryApi) -> None:
    client = app.client(app.account())
    job_id = submit(client)
    client.delete(f"/v1/jobs/{job_id}")

    for response in (client.delete(f"/v1/jobs/{job_id}"), client.post(f"/v1/jobs/{job_id}/cancel")):
        assert response.status == 409
        assert error_of(response)["code"] == "not_cancellable"


def test_the_preview_redirects_to_a_short_lived_link_and_is_404_without_one(
    app: MemoryApi,
) -> None:
    client = app.client(app.account())
    job_id = submit(client)
    missing = client.get(f"/v1/jobs/{job_id}/preview")
    bucket = app.world.settings.output_bucket_name
    app.world.objects.put(bucket, preview_key(job_id, "png"), b"old")
    app.world.clock.advance(2)
    app.world.objects.put(bucket, preview_key(job_id, "webp"), b"newer")

    found = client.get(f"/v1/jobs/{job_id}/preview")

    assert missing.status == 404 and error_of(missing)["code"] == "not_found"
    assert found.status == 302
    location = found.header("Location")
    assert location is not None and f"previews/{job_id}/latest.webp" in location
    assert found.json() == {"url": location, "expires_in_seconds": 60}


def test_usage_tells_limits_and_current_counts(app: MemoryApi) -> None:
    client = app.client(app.account("pro"))
    submit(client)

    response = client.get("/v1/usage")

    body = response.json()
    assert body["tier"] == "pro"
    assert body["limits"] == {"requests_per_minute": 300, "concurrency": 10, "queue_depth": 100}
    assert body["current"]["requests_this_minute"] == 1 and body["current"]["queued"] == 1
    assert response.header("X-Queue-Current") == "1"


def test_every_authenticated_response_carries_the_usage_headers(app: MemoryApi) -> None:
    client = app.client(app.account())
    job_id = submit(client)

    for response in (
        client.get(f"/v1/jobs/{job_id}"),
        client.get("/v1/jobs"),
        client.get("/v1/nothing-here"),
        client.call("PUT", "/v1/jobs"),
        client.get("/v1/admin/nodes"),
    ):
        assert all(response.header(name) is not None for name in RATE_HEADERS), response.status
        assert response.header("X-Request-Id")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer sk_live_short"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer sk_live_" + "A" * 43},
        {"X-API-Key": "not-a-key"},
    ],
)
def test_a_missing_or_bad_key_is_401(app: MemoryApi, headers: dict[str, str]) -> None:
    response = app.anonymous.get("/v1/jobs", headers=headers)

    assert response.status == 401
    error = error_of(response)
    assert error["code"] == "unauthorized" and error["request_id"]


def test_a_revoked_key_is_401(app: MemoryApi) -> None:
    account = app.account()
    key = app.world.stores.keys.find(account.key)
    assert key is not None
    app.world.stores.keys.revoke(key.key_id, now=app.world.clock.now())

    assert app.client(account).get("/v1/jobs").status == 401


def test_without_the_authorizers_context_the_api_itself_answers_401(app: MemoryApi) -> None:
    response = app.api.handle(rest_event("GET", "/v1/jobs"))

    assert response["statusCode"] == 401
    assert '"code":"unauthorized"' in response["body"]
    assert response["multiValueHeaders"]["X-Request-Id"] == ["e6a5a1b8-7c4d-4d0f-9c41-2f5e8d6b7a10"]


def test_a_key_without_the_scope_is_403(app: MemoryApi) -> None:
    account = app.account()

    admin_only = app.client(account, admin=True).post("/v1/jobs", {"prompt": basic_graph()})
    jobs_only = app.client(account).get("/v1/admin/nodes")

    for response in (admin_only, jobs_only):
        assert response.status == 403
        assert error_of(response)["code"] == "forbidden"


def test_an_unknown_route_is_404_and_a_wrong_method_405(app: MemoryApi) -> None:
    client = app.client(app.account())
    job_id = submit(client)

    unknown = client.get("/v1/jobz")
    wrong = client.call("PATCH", f"/v1/jobs/{job_id}")

    assert unknown.status == 404 and error_of(unknown)["code"] == "not_found"
    assert wrong.status == 405 and error_of(wrong)["code"] == "method_not_allowed"
    assert wrong.header("Allow") == "DELETE, GET"


def test_links_use_the_configured_public_url() -> None:
    app = memory_setup(Settings(public_base_url="https://api.example.com/"))
    client = app.client(app.account())

    body = client.post("/v1/jobs", {"prompt": basic_graph()}).json()

    assert body["links"]["self"] == f"https://api.example.com/v1/jobs/{body['job_id']}"


def test_the_preview_as_json_is_200_with_a_null_link_until_a_frame_exists(app: MemoryApi) -> None:
    client = app.client(app.account())
    job_id = submit(client)

    before = client.get(f"/v1/jobs/{job_id}/preview", query="redirect=false")
    app.world.objects.put(app.world.settings.output_bucket_name, preview_key(job_id, "png"), b"x")
    after = client.get(f"/v1/jobs/{job_id}/preview", query="redirect=false")

    assert before.status == 200 and before.json() == {"url": None, "expires_in_seconds": 0}
    assert after.status == 200 and f"previews/{job_id}/latest.png" in after.json()["url"]
    assert after.header("Location") is None and after.header("Cache-Control") == "no-store"
