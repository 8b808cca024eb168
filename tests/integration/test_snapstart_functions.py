"""The api and authorizer functions as SnapStart runs them, against moto: init builds and
primes them without a single AWS call reaching moto, the before-snapshot hooks run, then —
as in a restored copy — the after-restore hooks, and the functions serve real requests."""

from __future__ import annotations

import sys
import threading
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from comfyfleet import ids
from comfyfleet.api import priming
from comfyfleet.aws import client, reset_clients
from comfyfleet.observability import JOBS_SUBMITTED
from comfyfleet.resources import Provisioned
from comfyfleet.settings import get_settings
from comfyfleet.store import Stores
from tests.api_support import load_function
from tests.integration.lambda_functions import Functions, emitted_metrics

REGION = "us-east-1"


@pytest.fixture
def hooks(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """Lambda's snapshot_restore_py, keeping the hooks to run them where Lambda would."""
    registered: dict[str, list[Any]] = {"before": [], "after": []}
    monkeypatch.setitem(
        sys.modules,
        "snapshot_restore_py",
        types.SimpleNamespace(
            register_before_snapshot=lambda f, *a, **k: registered["before"].append(f),
            register_after_restore=lambda f, *a, **k: registered["after"].append(f),
        ),
    )
    monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", "snap-start")
    return registered


@pytest.fixture
def primed(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """What each priming of the api answered and called."""
    seen: list[Any] = []
    original = priming.prime

    def recording(api: Any, clients: list[Any]) -> Any:
        result = original(api, clients)
        seen.append(result)
        return result

    monkeypatch.setattr(priming, "prime", recording)
    return seen


def queued(provisioned: Provisioned) -> str:
    attributes = client("sqs", region=REGION).get_queue_attributes(
        QueueUrl=provisioned.queue_urls["shared"],
        AttributeNames=["ApproximateNumberOfMessages"],
    )["Attributes"]
    return str(attributes["ApproximateNumberOfMessages"])


def test_init_primes_offline_and_a_restored_copy_serves(
    aws: Provisioned,
    dynamo: Stores,
    hooks: dict[str, list[Any]],
    primed: list[Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    functions = Functions.load(aws, dynamo)  # Lambda's init: build, prime, register

    ((statuses, calls),) = primed
    assert statuses == [200, 202, 202, 404, 200], "/doc, two submits, a read, a list"
    assert {"dynamodb.TransactWriteItems", "sqs.SendMessage"} <= set(calls.calls)
    # (moto in-process sees the primed calls too: it listens on the same botocore event.
    # That nothing leaves the process is the next test's, with a real endpoint.)
    assert functions.api.metrics.metric_set == {}, "the primed submit counts for no one"
    assert len(hooks["before"]) == len(hooks["after"]) == 2  # api and authorizer

    for hook in reversed(hooks["before"]):  # Lambda runs them in reverse order
        hook()
    api_app = functions.api._app.built.handler.__self__
    assert api_app.jobs.dispatcher.snapshot._value is None
    capsys.readouterr()
    # A restored copy: the snapshot's state, then the after-restore hooks.
    for hook in hooks["after"]:
        hook()
    assert ids._last_ms == 0

    account = functions.account()
    reply = functions.submit(account, metadata={"after": "restore"})

    assert reply.status == 202, reply.body
    job = functions.stores.jobs.get(reply.body["job_id"])
    assert job.account_id == account.account_id and job.metadata == {"after": "restore"}
    assert queued(aws) in ("1", "2")  # 2: the primed message moto saw, see above
    read = functions.call("GET", f"/v1/jobs/{job.job_id}", account.key)
    assert read.status == 200 and read.body["status"] == "queued"
    submitted = [
        blob for blob in emitted_metrics(capsys.readouterr().out) if JOBS_SUBMITTED in blob
    ]
    assert len(submitted) == 1 and submitted[0][JOBS_SUBMITTED] == [1.0]


class CountingEndpoint:
    """An HTTP server on loopback that counts what reaches it (and answers 500)."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        seen = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                seen.append(self.path)
                self.send_response(500)
                self.end_headers()

            do_GET = do_PUT = do_POST  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("name", ["api", "authorizer"])
def test_priming_sends_nothing_out_of_the_process(
    name: str, hooks: dict[str, list[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = CountingEndpoint()
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint.url)
    monkeypatch.setenv("COMFYFLEET_SHARED_QUEUE_URL", f"{endpoint.url}/000000000000/shared.fifo")
    reset_clients()
    try:
        module = load_function(name)  # init: build and prime
        assert module is not None and hooks["before"], "built under SnapStart"
        assert endpoint.requests == []
    finally:
        endpoint.close()
        reset_clients()


def test_a_refused_primed_submit_counts_for_no_one(
    aws: Provisioned,
    dynamo: Stores,
    hooks: dict[str, list[Any]],
    primed: list[Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The template's model URLs name huggingface.co, which this deployment does not allow.
    monkeypatch.setenv("COMFYFLEET_MODEL_HOSTS", "models.example.com")
    get_settings.cache_clear()
    try:
        functions = Functions.load(aws, dynamo)
    finally:
        get_settings.cache_clear()

    ((statuses, _),) = primed
    assert statuses == [200, 202, 400, 404, 200], "the template's submit refused"
    assert emitted_metrics(capsys.readouterr().out) == [], "no JobsRejected at init"
    assert functions.api.metrics.metric_set == {}
