"""SnapStart in the entry points: the build at init only under Lambda's snap-start flag, the
runtime hooks registered and doing their part, AWS answered offline while priming."""

from __future__ import annotations

import random
import sys
import types
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from comfyfleet import aws, ids
from comfyfleet.api import entry
from comfyfleet.api.entry import Built, LazyHandler, under_snapstart
from comfyfleet.offline import offline_aws

SNAPSTART = {"AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start"}
# Nothing listens on the discard port: a call that left the process would fail to connect.
NOWHERE = "http://127.0.0.1:9"


class Recorder:
    """A builder whose Built records what was called, in order."""

    def __init__(self, *, refresh_fails: bool = False) -> None:
        self.calls: list[str] = []
        self.refresh_fails = refresh_fails

    def build(self) -> Built:
        self.calls.append("build")
        return Built(
            lambda event, context: ("served", event),
            prime=lambda: self.calls.append("prime"),
            before_snapshot=lambda: self.calls.append("before"),
            after_restore=self._refresh,
        )

    def _refresh(self) -> None:
        self.calls.append("after")
        if self.refresh_fails:
            raise RuntimeError("the registry is unreachable")


@pytest.fixture
def runtime_hooks(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """Lambda's snapshot_restore_py, keeping what is registered."""
    hooks: dict[str, list[Any]] = {"before": [], "after": []}
    fake = types.SimpleNamespace(
        register_before_snapshot=lambda f, *a, **k: hooks["before"].append(f),
        register_after_restore=lambda f, *a, **k: hooks["after"].append(f),
    )
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", fake)
    return hooks


def test_only_lambdas_snap_start_init_counts() -> None:
    assert under_snapstart(SNAPSTART)
    assert not under_snapstart({"AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand"})
    assert not under_snapstart({})


def test_without_snapstart_the_build_waits_for_the_first_request(
    runtime_hooks: dict[str, list[Any]],
) -> None:
    recorder = Recorder()
    handler = LazyHandler(recorder.build, environ={})
    assert recorder.calls == [] and runtime_hooks == {"before": [], "after": []}

    assert handler("event", None) == ("served", "event")
    assert handler("again", None) == ("served", "again")
    assert recorder.calls == ["build"], "built once, never primed"


def test_under_snapstart_init_builds_primes_and_registers_the_hooks(
    runtime_hooks: dict[str, list[Any]],
) -> None:
    recorder = Recorder()
    handler = LazyHandler(recorder.build, environ=SNAPSTART)

    assert recorder.calls == ["build", "prime"]
    assert runtime_hooks == {"before": [handler.before_snapshot], "after": [handler.after_restore]}
    assert handler("event", None) == ("served", "event")
    assert recorder.calls == ["build", "prime"], "the request found it built"


def test_the_hooks_drop_connections_and_id_state_and_reseed(
    runtime_hooks: dict[str, list[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[int] = []
    monkeypatch.setattr(aws, "close_connections", lambda: closed.append(1) or 0)
    recorder = Recorder()
    handler = LazyHandler(recorder.build, environ=SNAPSTART)
    ids.ulid()
    assert ids._last_ms != 0

    (before,), (after,) = runtime_hooks["before"], runtime_hooks["after"]
    before()
    assert recorder.calls[-1] == "before" and len(closed) == 1 and ids._last_ms == 0
    # Two restored copies of one snapshot: each draws its own random state.
    random.seed(42)
    snapshot_state = random.getstate()
    after()
    first_copy = random.random()
    random.setstate(snapshot_state)
    after()
    second_copy = random.random()

    assert first_copy != second_copy
    assert recorder.calls[-2:] == ["after", "after"] and len(closed) == 3
    assert handler("event", None) == ("served", "event")


def test_a_failed_refresh_after_restore_is_logged_not_raised(
    runtime_hooks: dict[str, list[Any]], caplog: pytest.LogCaptureFixture
) -> None:
    handler = LazyHandler(Recorder(refresh_fails=True).build, environ=SNAPSTART)
    handler.after_restore()
    assert "refresh after restore failed" in caplog.text
    assert handler("event", None) == ("served", "event")


def test_without_the_hooks_library_init_still_builds(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", None)  # import fails
    recorder = Recorder()
    LazyHandler(recorder.build, environ=SNAPSTART)
    assert recorder.calls == ["build", "prime"]
    assert "hooks not registered" in caplog.text


def test_a_plain_handler_gets_the_common_hooks_only(
    runtime_hooks: dict[str, list[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[int] = []
    monkeypatch.setattr(aws, "close_connections", lambda: closed.append(1) or 0)
    handler = LazyHandler(lambda: lambda event, context: "ok", environ=SNAPSTART)
    handler.before_snapshot()
    handler.after_restore()
    assert closed == [1, 1] and handler(None, None) == "ok"
    assert entry.SNAPSTART_INIT == "snap-start"


@pytest.fixture
def clients() -> list[Any]:
    aws.reset_clients()
    made = [
        aws.client(service, endpoint_url=NOWHERE, region="us-east-1")
        for service in ("dynamodb", "sqs", "s3")
    ]
    yield made
    aws.reset_clients()


def test_offline_calls_are_signed_parsed_and_answered_in_the_process(
    clients: list[Any],
) -> None:
    dynamodb, sqs, s3 = clients
    with offline_aws(clients) as seen:
        item = dynamodb.get_item(TableName="jobs", Key={"pk": {"S": "x"}})
        sent = sqs.send_message(QueueUrl=f"{NOWHERE}/0/q.fifo", MessageBody="{}")
        with pytest.raises(ClientError) as missing:
            s3.get_object(Bucket="models", Key="catalogue/core/object_info.json")

    assert "Item" not in item and sent["MessageId"]
    assert missing.value.response["Error"]["Code"] == "NoSuchKey"
    assert seen.calls == ["dynamodb.GetItem", "sqs.SendMessage", "s3.GetObject"]
    with pytest.raises(EndpointConnectionError):  # afterwards, calls go out again
        dynamodb.get_item(TableName="jobs", Key={"pk": {"S": "x"}})


def test_closing_connections_empties_every_clients_pool(clients: list[Any]) -> None:
    sessions = [client._endpoint.http_session for client in clients]
    for session in sessions:
        session._manager.connection_from_url("https://example.com")  # a pool, as a call makes
        assert len(session._manager.pools) == 1
    assert aws.close_connections() == 3
    assert all(len(session._manager.pools) == 0 for session in sessions)
