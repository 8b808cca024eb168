"""The api function (functions/api/app.handler) on real REST proxy events (v1) carrying the
authorizer function's context, against moto: submit, read, list by pages, cancel, someone
else's job, limits and their headers, idempotency, metrics, the published catalogue."""

from __future__ import annotations

import pytest

from comfyfleet.api.objects import CatalogueCache, S3Objects
from comfyfleet.aws import client
from comfyfleet.catalogue import NodeCatalogue
from comfyfleet.clock import FakeClock
from comfyfleet.observability import JOBS_REJECTED, JOBS_SUBMITTED, NAMESPACE, SUBMIT_LATENCY
from comfyfleet.resources import CATALOGUE_KEY, Provisioned, preview_key
from comfyfleet.settings import Settings
from comfyfleet.store import Stores
from tests.api_support import RATE_HEADERS
from tests.integration.lambda_functions import Functions, emitted_metrics
from tests.support import basic_graph

REGION = "us-east-1"
BASE_URL = "https://abc123.execute-api.us-east-1.amazonaws.com/prod"


@pytest.fixture
def functions(aws: Provisioned, dynamo: Stores) -> Functions:
    return Functions.load(aws, dynamo)


# -- jobs --------------------------------------------------------------------------------------


def test_a_submit_is_stored_queued_and_answered_with_its_links(functions: Functions) -> None:
    account = functions.account()

    reply = functions.submit(account, metadata={"order": 1})

    assert reply.status == 202
    job_id = reply.body["job_id"]
    assert reply.body["status"] == "queued" and reply.body["queue_position"] == 1
    assert reply.body["links"] == {
        "self": f"{BASE_URL}/v1/jobs/{job_id}",
        "cancel": f"{BASE_URL}/v1/jobs/{job_id}/cancel",
    }
    assert reply.headers["X-Request-Id"] == f"req-{functions.requests:04d}"
    assert all(name in reply.headers for name in RATE_HEADERS)
    assert reply.headers["X-Queue-Current"] == "1"
    job = functions.stores.jobs.get(job_id)
    assert job.account_id == account.account_id and job.metadata == {"order": 1}
    sqs = client("sqs", region=REGION)
    attributes = sqs.get_queue_attributes(
        QueueUrl=functions.provisioned.queue_urls["shared"],
        AttributeNames=["ApproximateNumberOfMessages"],
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "1"


def test_a_job_reads_back_and_another_accounts_is_not_found(functions: Functions) -> None:
    owner, stranger = functions.account(), functions.account()
    job_id = functions.submit(owner).body["job_id"]

    mine = functions.call("GET", f"/v1/jobs/{job_id}", owner.key)
    theirs = [
        functions.call("GET", f"/v1/jobs/{job_id}", stranger.key),
        functions.call("POST", f"/v1/jobs/{job_id}/cancel", stranger.key),
        functions.call("DELETE", f"/v1/jobs/{job_id}", stranger.key),
        functions.call("GET", f"/v1/jobs/{job_id}/preview", stranger.key),
    ]

    assert mine.status == 200
    assert mine.body["job_id"] == job_id and mine.body["status"] == "queued"
    assert mine.body["queue_position"] == 1 and mine.body["created_at"].endswith("Z")
    for reply in theirs:
        assert reply.status == 404 and reply.code == "not_found"
    assert functions.stores.jobs.get(job_id).state.value == "queued"


def test_jobs_are_listed_newest_first_page_by_page(functions: Functions) -> None:
    account = functions.account("pro")
    submitted = [functions.submit(account).body["job_id"] for _ in range(3)]
    functions.submit(functions.account())  # someone else's: never listed

    first = functions.call("GET", "/v1/jobs", account.key, query={"limit": "2"})
    cursor = first.body["next_cursor"]
    second = functions.call("GET", "/v1/jobs", account.key, query={"limit": "2", "cursor": cursor})

    assert first.status == 200 and second.status == 200
    pages = [job["job_id"] for job in first.body["jobs"] + second.body["jobs"]]
    assert pages == list(reversed(submitted))
    assert cursor and second.body["next_cursor"] is None
    running = functions.call("GET", "/v1/jobs", account.key, query={"status": "running"})
    assert running.status == 200 and running.body["jobs"] == []


def test_a_bad_cursor_is_400_invalid_cursor(functions: Functions) -> None:
    reply = functions.call("GET", "/v1/jobs", functions.account().key, query={"cursor": "nope"})

    assert reply.status == 400 and reply.code == "invalid_cursor"


def test_a_queued_job_is_cancelled_once_then_not_cancellable(functions: Functions) -> None:
    account = functions.account()
    job_id = functions.submit(account).body["job_id"]

    cancelled = functions.call("POST", f"/v1/jobs/{job_id}/cancel", account.key)
    again = functions.call("DELETE", f"/v1/jobs/{job_id}", account.key)

    assert cancelled.status == 200 and cancelled.body["status"] == "cancelled"
    assert again.status == 409 and again.code == "not_cancellable"
    assert functions.stores.jobs.get(job_id).state.value == "cancelled"


def test_the_preview_is_a_short_lived_link_once_the_agent_wrote_one(
    functions: Functions, settings: Settings
) -> None:
    account = functions.account()
    job_id = functions.submit(account).body["job_id"]
    path = f"/v1/jobs/{job_id}/preview"

    before = functions.call("GET", path, account.key)
    client("s3", region=REGION).put_object(
        Bucket=settings.output_bucket_name, Key=preview_key(job_id, "webp"), Body=b"RIFF"
    )
    after = functions.call("GET", path, account.key)

    assert before.status == 404 and before.code == "not_found"
    assert after.status == 302
    assert preview_key(job_id, "webp") in after.headers["Location"]
    assert after.body["url"] == after.headers["Location"]


# -- limits ------------------------------------------------------------------------------------


def test_over_the_rate_is_429_with_retry_after_and_the_usage_headers(
    functions: Functions,
) -> None:
    account = functions.account(requests_per_minute=2)

    # A minute boundary between submits would reset the window: allow for one.
    replies = []
    for _ in range(5):
        replies.append(functions.submit(account))
        if replies[-1].status == 429:
            break
    refused = replies[-1]

    assert refused.status == 429 and refused.code == "rate_limit_exceeded"
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["X-RateLimit-Limit"] == "2"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert int(refused.headers["X-RateLimit-Reset"]) > 0
    assert refused.body["error"]["request_id"] == refused.headers["X-Request-Id"]


def test_a_full_queue_is_429_queue_full(functions: Functions) -> None:
    account = functions.account(queue_depth=1)
    assert functions.submit(account).status == 202

    refused = functions.submit(account)

    assert refused.status == 429 and refused.code == "queue_full"
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["X-Queue-Limit"] == "1" and refused.headers["X-Queue-Current"] == "1"


# -- idempotency -------------------------------------------------------------------------------


def test_the_same_idempotency_key_and_body_return_the_same_job(functions: Functions) -> None:
    account = functions.account()
    headers = {"Idempotency-Key": "order-1234"}
    body = {"prompt": basic_graph()}

    first = functions.call("POST", "/v1/jobs", account.key, body=body, headers=headers)
    second = functions.call("POST", "/v1/jobs", account.key, body=body, headers=headers)

    assert first.status == second.status == 202
    assert second.body == first.body
    assert second.headers.get("Idempotent-Replayed") == "true"
    listed = functions.call("GET", "/v1/jobs", account.key)
    assert [job["job_id"] for job in listed.body["jobs"]] == [first.body["job_id"]]


def test_the_same_idempotency_key_with_another_body_is_409(functions: Functions) -> None:
    account = functions.account()
    headers = {"Idempotency-Key": "order-1234"}
    first = functions.call(
        "POST", "/v1/jobs", account.key, body={"prompt": basic_graph()}, headers=headers
    )
    other = {"prompt": basic_graph(), "metadata": {"another": True}}

    conflict = functions.call("POST", "/v1/jobs", account.key, body=other, headers=headers)

    assert first.status == 202
    assert conflict.status == 409 and conflict.code == "idempotency_conflict"


# -- metrics -----------------------------------------------------------------------------------


def test_submits_emit_jobs_submitted_and_latency_and_refusals_their_reason(
    functions: Functions, capsys: pytest.CaptureFixture[str]
) -> None:
    account = functions.account(queue_depth=1)
    capsys.readouterr()

    assert functions.submit(account).status == 202
    accepted = emitted_metrics(capsys.readouterr().out)
    assert functions.submit(account).status == 429
    refused = emitted_metrics(capsys.readouterr().out)
    assert functions.call("GET", "/v1/jobs", account.key).status == 200
    read = emitted_metrics(capsys.readouterr().out)

    (blob,) = accepted
    directive = blob["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == NAMESPACE and directive["Dimensions"] == [["service"]]
    names = {metric["Name"] for metric in directive["Metrics"]}
    assert names == {JOBS_SUBMITTED, SUBMIT_LATENCY}
    assert blob["service"] == "comfyfleet-api"
    assert blob[JOBS_SUBMITTED] == [1.0] and blob[SUBMIT_LATENCY][0] > 0
    (rejection,) = refused
    directive = rejection["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == NAMESPACE
    assert sorted(directive["Dimensions"][0]) == ["reason", "service"]
    assert [metric["Name"] for metric in directive["Metrics"]] == [JOBS_REJECTED]
    assert rejection["reason"] == "queue_full" and rejection["service"] == "comfyfleet-api"
    assert rejection[JOBS_REJECTED] == [1.0]
    assert not read  # reads emit nothing


# -- the catalogue -----------------------------------------------------------------------------


def test_the_published_catalogue_deepens_validation(
    functions: Functions, settings: Settings, catalogue: NodeCatalogue
) -> None:
    client("s3", region=REGION).put_object(
        Bucket=settings.model_bucket_name, Key=CATALOGUE_KEY, Body=catalogue.to_json().encode()
    )
    account = functions.account()
    unknown = basic_graph()
    unknown["4"] = {"class_type": "NoSuchNode", "inputs": {}}

    refused = functions.call("POST", "/v1/jobs", account.key, body={"prompt": unknown})

    assert refused.status == 400 and refused.code == "invalid_workflow"
    assert refused.body["error"]["details"][0]["code"] == "unknown_class_type"
    assert functions.submit(account).status == 202


def test_the_catalogue_is_read_again_only_when_s3_says_it_changed(
    aws: Provisioned, settings: Settings, catalogue: NodeCatalogue
) -> None:
    s3 = client("s3", region=REGION)
    reads: list[int] = []
    s3.meta.events.register("after-call.s3.GetObject", lambda **kw: reads.append(1))
    clock = FakeClock()
    cache = CatalogueCache(S3Objects(s3), settings.model_bucket_name, clock)
    body = catalogue.to_json().encode()
    s3.put_object(Bucket=settings.model_bucket_name, Key=CATALOGUE_KEY, Body=body)

    first = cache.get()
    clock.advance(30)
    within_the_minute = cache.get()
    clock.advance(31)
    unchanged = cache.get()  # a conditional GET: 304, the body is not sent again
    s3.put_object(Bucket=settings.model_bucket_name, Key=CATALOGUE_KEY, Body=b"{not json")
    clock.advance(61)
    invalid = cache.get()  # not a catalogue: the last good one stays

    assert first is not None and "KSampler" in first
    assert within_the_minute is first and unchanged is first and invalid is first
    assert len(reads) == 3
