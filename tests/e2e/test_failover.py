"""Losing an agent mid-job, and stopping the stack: the dev stack with two agents, short leases
and a fast reaper."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator

import pytest

from comfyfleet.client import Client
from comfyfleet.dev.launch import RunningStack, launch_dev_stack
from tests.e2e.conftest import stack_env
from tests.e2e.support import eventually, fetch_png

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    env = stack_env(
        COMFYFLEET_LEASE_SECONDS="3",
        COMFYFLEET_HEARTBEAT_SECONDS="1",
        COMFYFLEET_NODE_STALE_SECONDS="5",
    )
    state = tmp_path_factory.mktemp("failover")
    with launch_dev_stack(state, agents=2, env=env, args=["--reaper-seconds", "2"]) as running:
        yield running


def running_on(admin: Client, job_id: str) -> str | None:
    """The node whose agent runs the job (from the admin node list)."""
    for node in admin.nodes()["nodes"]:
        if node.get("current_job") == job_id:
            return str(node["node_id"])
    return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_job_whose_agent_is_killed_completes_on_another_agent_once(
    stack: RunningStack, checkpoint_url: str
) -> None:
    user = Client(stack.api_url, stack.user_key)
    admin = Client(stack.api_url, stack.admin_key)
    accepted = user.submit_template(
        "sd15",
        prompt="a lighthouse",
        checkpoint_url=checkpoint_url,
        steps=60,  # 3 s
        width=64,
        height=64,
        seed=5,
    )
    job_id = accepted["job_id"]
    victim = eventually(lambda: running_on(admin, job_id), timeout=30)
    pids = {agent["node_id"]: agent["pid"] for agent in stack.agents}

    os.kill(pids[victim], signal.SIGKILL)
    job = user.wait(job_id, timeout=60)

    assert job["status"] == "completed", job
    assert job["attempts"] == 2
    (image,) = job["outputs"]["images"]
    assert fetch_png(image).size == (64, 64)
    nodes = {node["node_id"]: node for node in admin.nodes()["nodes"]}
    survivor = next(node_id for node_id in pids if node_id != victim)
    assert nodes[survivor]["status"] in ("idle", "busy")


def test_a_killed_agent_and_a_killed_fakecomfy_start_again_with_new_pids(
    stack: RunningStack,
) -> None:
    admin = Client(stack.api_url, stack.admin_key)
    before = {agent["node_id"]: agent for agent in current(stack)}
    victim, other = sorted(before)
    os.kill(before[victim]["pid"], signal.SIGKILL)
    os.kill(before[other]["comfy_pid"], signal.SIGKILL)

    def restarted() -> bool:
        now = {agent["node_id"]: agent for agent in current(stack)}
        return (
            now[victim]["pid"] != before[victim]["pid"]
            and now[other]["comfy_pid"] != before[other]["comfy_pid"]
        )

    eventually(restarted, timeout=20)
    now = {agent["node_id"]: agent for agent in current(stack)}
    assert alive(now[victim]["pid"]) and alive(now[other]["comfy_pid"])
    assert now[victim]["restarts"] >= 1 and now[other]["restarts"] >= 1
    assert now[other]["pid"] == before[other]["pid"]  # its agent carried on
    # Both take jobs again: the restarted agent registers, the other sees ComfyUI back.
    eventually(
        lambda: (
            {n["node_id"]: n["status"] for n in admin.nodes()["nodes"]}.get(victim)
            in ("idle", "busy")
            and {n["node_id"]: n["status"] for n in admin.nodes()["nodes"]}.get(other)
            in ("idle", "busy")
        ),
        timeout=30,
    )
    assert "started again" in stack.log("stack")


def current(stack: RunningStack) -> list[dict]:
    """The agents as dev.json names them now (the stack rewrites it after a restart)."""
    return list(json.loads((stack.state_dir / "dev.json").read_text())["agents"])


def test_sigterm_stops_the_stack_and_everything_it_started(stack: RunningStack) -> None:
    # Last in this module: it stops the module's stack.
    children = [agent["pid"] for agent in current(stack)] + [
        agent["comfy_pid"] for agent in current(stack)
    ]

    stack.process.send_signal(signal.SIGTERM)
    code = stack.process.wait(timeout=30)

    assert code == 0
    eventually(lambda: not any(alive(pid) for pid in children), timeout=10)
    assert not (stack.state_dir / "dev.json").exists()
