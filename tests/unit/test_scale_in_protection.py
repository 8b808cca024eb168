"""Scale-in protection shared by the agents of one instance, and the launch lifecycle: waiting
for InService and completing the launch hook. On fakes of the Auto Scaling client and IMDS."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from gpu_agent.lifecycle import TARGET_STATE, complete_launch, wait_in_service
from gpu_agent.scale_in import ScaleInProtection


class FakeAutoScaling:
    """Records set_instance_protection and complete_lifecycle_action; fails when told."""

    def __init__(self, error: str | None = None) -> None:
        self.protection: list[bool] = []
        self.completed: list[dict[str, Any]] = []
        self.error = error

    def _fail(self, operation: str) -> None:
        if self.error:
            raise ClientError({"Error": {"Code": self.error, "Message": "no"}}, operation)

    def set_instance_protection(self, **kwargs: Any) -> None:
        self._fail("SetInstanceProtection")
        assert kwargs["AutoScalingGroupName"] == "fleet" and kwargs["InstanceIds"] == ["i-1"]
        self.protection.append(kwargs["ProtectedFromScaleIn"])

    def complete_lifecycle_action(self, **kwargs: Any) -> None:
        self._fail("CompleteLifecycleAction")
        self.completed.append(kwargs)


def protection(client: FakeAutoScaling, busy: Path, agent: str = "i-1") -> ScaleInProtection:
    return ScaleInProtection(client, group="fleet", instance_id="i-1", agent=agent, busy_dir=busy)


def test_protected_while_running_and_cleared_after(tmp_path: Path) -> None:
    client = FakeAutoScaling()
    guard = protection(client, tmp_path)
    with guard.running():
        assert client.protection == [True]
    assert client.protection == [True, False]


def test_cleared_when_the_run_raises(tmp_path: Path) -> None:
    client = FakeAutoScaling()
    with pytest.raises(RuntimeError), protection(client, tmp_path).running():
        raise RuntimeError("the job broke")
    assert client.protection == [True, False]


def test_two_gpus_keep_the_instance_protected_while_either_runs(tmp_path: Path) -> None:
    client = FakeAutoScaling()
    gpu0, gpu1 = protection(client, tmp_path, "i-1-gpu0"), protection(client, tmp_path, "i-1-gpu1")
    first, second = gpu0.running(), gpu1.running()
    first.__enter__()
    second.__enter__()
    assert client.protection == [True]  # the second agent finds it already protected
    first.__exit__(None, None, None)
    assert client.protection == [True]  # gpu1 still runs
    second.__exit__(None, None, None)
    assert client.protection == [True, False]


def test_a_failed_call_is_not_raised_and_is_tried_again(tmp_path: Path) -> None:
    client = FakeAutoScaling(error="Throttling")
    guard = protection(client, tmp_path)
    with guard.running():
        pass
    assert client.protection == []
    client.error = None
    with guard.running():
        assert client.protection == [True]  # nothing recorded as applied: told again


def test_reset_drops_a_mark_left_by_a_killed_agent(tmp_path: Path) -> None:
    client = FakeAutoScaling()
    (tmp_path / "i-1.busy").touch()  # the agent died mid-job
    protection(client, tmp_path).reset()
    assert client.protection == [False]
    assert not list(tmp_path.glob("*.busy"))


def states(*answers: str | None) -> Iterator[str | None]:
    yield from answers
    raise AssertionError("asked once too often")


def test_waits_through_warmed_states_until_in_service() -> None:
    answers = states("Warmed:Pending", "Warmed:Stopped", "InService")
    asked: list[str] = []

    def metadata(path: str) -> str | None:
        asked.append(path)
        return next(answers)

    assert wait_in_service(threading.Event(), metadata=metadata, poll_seconds=0) is True
    assert asked == [TARGET_STATE] * 3


def test_no_metadata_means_no_group_to_wait_for() -> None:
    assert wait_in_service(threading.Event(), metadata=lambda _: None) is True


def test_a_stop_while_warming_ends_the_wait_without_service() -> None:
    stop = threading.Event()

    def metadata(_path: str) -> str:
        stop.set()  # SIGTERM: the warm-pool instance is being stopped
        return "Warmed:Stopped"

    assert wait_in_service(stop, metadata=metadata, poll_seconds=0) is False


def test_complete_launch_continues_this_instances_hook() -> None:
    client = FakeAutoScaling()
    assert complete_launch(client, group="fleet", hook="launch", metadata=lambda _: "i-1")
    assert client.completed == [
        {
            "AutoScalingGroupName": "fleet",
            "LifecycleHookName": "launch",
            "InstanceId": "i-1",
            "LifecycleActionResult": "CONTINUE",
        }
    ]


def test_no_waiting_hook_is_not_an_error_but_other_failures_are() -> None:
    assert not complete_launch(
        FakeAutoScaling(error="ValidationError"), group="g", hook="h", metadata=lambda _: "i-1"
    )
    with pytest.raises(ClientError):
        complete_launch(
            FakeAutoScaling(error="AccessDenied"), group="g", hook="h", metadata=lambda _: "i-1"
        )
    assert not complete_launch(FakeAutoScaling(), group="", hook="h", metadata=lambda _: "i-1")
