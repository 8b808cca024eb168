"""A running job's lease: renewed from its own thread, lease before message, at most once
per 10 s by default, and given up once another node holds the job."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from comfyfleet.clock import FakeClock
from comfyfleet.domain import JobState, RingMessage
from comfyfleet.errors import JobStateConflict, StorageError
from comfyfleet.queues import Received
from comfyfleet.settings import SettingsError, read_settings
from gpu_agent.lease import LeaseKeeper
from gpu_agent.settings import AgentSettings

RECEIVED = Received(RingMessage("job-1", "acct", "shared", 2, 2), "receipt", "queue-url", 1)


class Recorder:
    """The job store's and the queues' calls a renewal makes, in one log."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.lease_error: Exception | None = None
        self.lock = threading.Lock()

    def extend_lease(self, job_id: str, node_id: str, *, until: float) -> bool:
        if self.lease_error is not None:
            raise self.lease_error
        with self.lock:
            self.calls.append(("lease", job_id, node_id, until))
        return False

    def change_visibility(self, received: Received, seconds: int) -> None:
        with self.lock:
            self.calls.append(("visibility", received.receipt, seconds))


def keeper(recorder: Recorder, clock: FakeClock, every: float = 10.0) -> LeaseKeeper:
    return LeaseKeeper(
        recorder,  # type: ignore[arg-type]
        recorder,  # type: ignore[arg-type]
        clock,
        job_id="job-1",
        node_id="node-a",
        received=RECEIVED,
        lease_seconds=30,
        every=every,
    )


def test_a_renewal_writes_the_lease_first_then_the_message_visibility() -> None:
    recorder, clock = Recorder(), FakeClock()

    assert keeper(recorder, clock).renew() is True

    # The message comes back only after the lease ran out: whoever receives it takes over.
    assert recorder.calls == [
        ("lease", "job-1", "node-a", clock.now() + 30),
        ("visibility", "receipt", 30),
    ]


def test_a_lease_another_node_holds_stops_the_renewals() -> None:
    recorder = Recorder()
    recorder.lease_error = JobStateConflict("job-1", JobState.RUNNING, "its lease is not ours")

    assert keeper(recorder, FakeClock()).renew() is None
    assert recorder.calls == []  # the message is not ours to hide either


def test_a_failed_renewal_is_tried_again() -> None:
    recorder = Recorder()
    recorder.lease_error = StorageError("throttled")

    assert keeper(recorder, FakeClock()).renew() is False


def test_the_lease_is_renewed_while_the_block_runs_and_never_after() -> None:
    recorder = Recorder()

    with keeper(recorder, FakeClock(), every=0.02) as kept:
        time.sleep(0.2)
    renewals = kept.renewals
    time.sleep(0.1)

    assert renewals >= 3
    assert sum(call[0] == "lease" for call in recorder.calls) == renewals  # none after the end


def test_by_default_a_running_job_writes_its_lease_once_per_10_s() -> None:
    settings = AgentSettings()

    assert settings.lease_seconds == 30
    assert settings.lease_renewal_seconds == 10  # a third of the lease: two may fail
    assert settings.heartbeat_seconds == 5  # the node's own record, not the job's


def test_a_renewal_interval_as_long_as_the_lease_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COMFYFLEET_LEASE_SECONDS", "30")
    monkeypatch.setenv("COMFYFLEET_LEASE_RENEW_SECONDS", "30")

    with pytest.raises(SettingsError, match="COMFYFLEET_LEASE_RENEW_SECONDS"):
        read_settings(AgentSettings)


def test_a_short_lease_is_renewed_a_third_as_often(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYFLEET_LEASE_SECONDS", "3")

    assert read_settings(AgentSettings).lease_renewal_seconds == 1
