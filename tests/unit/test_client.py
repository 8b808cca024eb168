"""The client SDK against a scripted loopback HTTP server: typed errors, retries, waiting."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from comfyfleet.client import (
    ApiError,
    Client,
    ConnectionFailed,
    Forbidden,
    InvalidWorkflow,
    JobTimeout,
    NotCancellable,
    NotFound,
    QueueFull,
    RateLimitExceeded,
    ServerError,
    StorageUnavailable,
    Unauthorized,
)
from tests.support import basic_graph


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class ScriptedApi:
    """Answers each request with the next scripted (status, body, headers) for its path."""

    answers: dict[str, list[tuple[int, Any, dict[str, str]]]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    url: str = ""

    def script(self, path: str, *answers: tuple[int, Any, dict[str, str]]) -> None:
        self.answers.setdefault(path, []).extend(answers)


def error(code: str, message: str = "no") -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "request_id": "req-1"}}


@pytest.fixture
def api() -> Iterator[ScriptedApi]:
    scripted = ScriptedApi()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            path = self.path.split("?")[0]
            scripted.seen.append(
                Seen(self.command, self.path, dict(self.headers), json.loads(raw) if raw else None)
            )
            queue = scripted.answers.get(path) or [(404, error("not_found"), {})]
            status, body, headers = queue.pop(0) if len(queue) > 1 else queue[0]
            payload = json.dumps(body).encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_DELETE = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    )
    thread.start()
    scripted.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield scripted
    server.shutdown()
    server.server_close()


def client_of(api: ScriptedApi, slept: list[float] | None = None, **options: Any) -> Client:
    record = slept if slept is not None else []
    return Client(api.url, "sk_live_x", sleep=record.append, **options)


def test_submit_wraps_a_bare_graph_and_sends_the_key_as_a_bearer_token(api: ScriptedApi) -> None:
    api.script("/v1/jobs", (202, {"job_id": "j1", "status": "queued"}, {}))

    accepted = client_of(api).submit(basic_graph(), webhook_url="https://example.com/h")

    assert accepted["job_id"] == "j1"
    (seen,) = api.seen
    assert seen.headers["Authorization"] == "Bearer sk_live_x"
    assert seen.body == {"prompt": basic_graph(), "webhook_url": "https://example.com/h"}


def test_submit_passes_a_whole_request_body_through(api: ScriptedApi) -> None:
    api.script("/v1/jobs", (202, {"job_id": "j1"}, {}))
    body = {"prompt": basic_graph(), "metadata": {"mine": 1}}

    client_of(api).submit(body, idempotency_key="k-1")

    assert api.seen[0].body == body
    assert api.seen[0].headers["Idempotency-Key"] == "k-1"


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (400, "invalid_workflow", InvalidWorkflow),
        (401, "unauthorized", Unauthorized),
        (403, "forbidden", Forbidden),
        (404, "not_found", NotFound),
        (409, "not_cancellable", NotCancellable),
        (429, "queue_full", QueueFull),
        (500, "internal_error", ServerError),
    ],
)
def test_an_error_answer_raises_the_exception_of_its_code(
    api: ScriptedApi, status: int, code: str, kind: type[ApiError]
) -> None:
    api.script("/v1/jobs/j1/cancel", (status, error(code, "told so"), {}))

    with pytest.raises(kind) as raised:
        client_of(api, max_retries=0).cancel("j1")

    assert raised.value.status == status
    assert raised.value.code == code
    assert raised.value.request_id == "req-1"


def test_an_unknown_code_falls_back_to_the_exception_of_its_status(api: ScriptedApi) -> None:
    api.script("/v1/jobs/j1", (403, error("brand_new_code"), {}))

    with pytest.raises(Forbidden):
        client_of(api).get("j1")


def test_a_429_is_retried_after_its_retry_after(api: ScriptedApi) -> None:
    limited = (429, error("rate_limit_exceeded"), {"Retry-After": "7"})
    api.script("/v1/jobs", limited, limited, (202, {"job_id": "j1"}, {}))
    slept: list[float] = []

    accepted = client_of(api, slept).submit(basic_graph())

    assert accepted["job_id"] == "j1"
    assert slept == [7.0, 7.0]
    assert len(api.seen) == 3


def test_a_429_past_the_retries_is_raised_with_its_retry_after(api: ScriptedApi) -> None:
    api.script("/v1/jobs", (429, error("rate_limit_exceeded"), {"Retry-After": "3"}))
    slept: list[float] = []

    with pytest.raises(RateLimitExceeded) as raised:
        client_of(api, slept, max_retries=2).submit(basic_graph())

    assert raised.value.retry_after == 3.0
    assert slept == [3.0, 3.0]


def test_a_503_is_retried_on_reads_but_not_on_submits(api: ScriptedApi) -> None:
    busy = (503, error("storage_unavailable"), {"Retry-After": "1"})
    api.script("/v1/jobs/j1", busy, (200, {"job_id": "j1", "status": "queued"}, {}))
    api.script("/v1/jobs", busy)

    assert client_of(api).get("j1")["status"] == "queued"
    with pytest.raises(StorageUnavailable):
        client_of(api).submit(basic_graph())


def test_wait_polls_until_the_job_ends_backing_off_while_nothing_changes(
    api: ScriptedApi,
) -> None:
    queued = (200, {"job_id": "j1", "status": "queued", "queue_position": 1}, {})
    running = (200, {"job_id": "j1", "status": "running", "progress": {"percent": 50}}, {})
    done = (200, {"job_id": "j1", "status": "completed", "outputs": {"images": ["u"]}}, {})
    api.script("/v1/jobs/j1", queued, queued, queued, running, done)
    slept: list[float] = []
    polled: list[str] = []

    job = client_of(api, slept).wait("j1", on_progress=lambda j: polled.append(j["status"]))

    assert job["status"] == "completed"
    assert polled == ["queued", "queued", "queued", "running", "completed"]
    assert slept[0] < slept[1] < slept[2]  # unchanged: longer pauses
    assert slept[3] == slept[0]  # changed: back to the first pause


def test_wait_gives_up_after_its_timeout_with_the_last_state(api: ScriptedApi) -> None:
    api.script("/v1/jobs/j1", (200, {"job_id": "j1", "status": "running"}, {}))

    with pytest.raises(JobTimeout) as raised:
        Client(api.url, "k").wait("j1", timeout=0.3, initial_interval=0.05)

    assert raised.value.job["status"] == "running"


def test_list_sends_only_the_filters_given(api: ScriptedApi) -> None:
    api.script("/v1/jobs", (200, {"jobs": [], "next_cursor": None}, {}))

    client_of(api).list(status="completed", limit=5)

    assert api.seen[0].path == "/v1/jobs?status=completed&limit=5"


def test_an_unreachable_api_is_a_connection_failure() -> None:
    with pytest.raises(ConnectionFailed):
        Client("http://127.0.0.1:9", "k", timeout=2).usage()
