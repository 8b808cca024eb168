"""``python -m bench.chaos``: the dev stack under many faults at once, with the counts that
say whether anything was lost (part of ``make bench``, through bench/bench_chaos.py).

On a dev stack with 3 agents, 4 accounts submit N jobs (model-free, slow, and with a model
by URL, mixed) with a signed webhook to a local receiver that fails a share of first
deliveries, while every few seconds an agent or a fakecomfy is SIGKILLed (the stack starts it
again) and 5 % of the functions' and agents' AWS calls fail as AWS fails them
(``COMFYFLEET_DEV_FAULTS``). Then it waits for every job to end, and for its event.

Counted: submitted (admitted), completed, failed by code, cancelled, **lost** (admitted, never
ended), **completed twice** (two different endings delivered for one job, or an output
object written twice), **events** (distinct event ids delivered per ended job: one each),
stray outputs (objects a killed run uploaded before its job ran elsewhere), the time to drain
and the p95 of submit → completed. Exit 0 when lost, completed twice and the events are as
they must be.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bench.chaos_checks import Outcome, collect, enable_versioning, outputs_written
from bench.chaos_servers import ModelOrigin, Receiver
from comfyfleet.aws_faults import FAULTS, FAULTS_ENV, SEED_ENV
from comfyfleet.client import Client
from comfyfleet.client_errors import ApiError, ConnectionFailed
from comfyfleet.dev.launch import RunningStack, launch_dev_stack
from comfyfleet.templates import render_template
from fakecomfy import placeholder_safetensors

PLAIN = json.loads((Path(__file__).parents[1] / "examples" / "hello.json").read_text())
ENDED = ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class ChaosPlan:
    """One chaos run. The defaults are the bench's; the e2e test runs a short one."""

    jobs: int = 200
    agents: int = 3
    accounts: int = 4
    seed: int = 1
    fault_share: float = 0.05
    kill_every: tuple[float, float] = (3.0, 6.0)
    webhook_fail_share: float = 0.2
    cancel_share: float = 0.05
    submit_seconds: float = 60.0  # submissions spread over this
    drain_timeout: float = 600.0
    env: dict[str, str] = field(default_factory=dict)  # more of the stack's environment
    args: tuple[str, ...] = ()  # more of `comfyfleet dev`'s arguments


@dataclass
class Submitted:
    job_id: str
    account: int
    kind: str
    at: float  # time.monotonic() when admitted


@dataclass
class Chaos:
    """What the run did to the stack."""

    agents_killed: int = 0
    comfys_killed: int = 0
    submit_retries: int = 0
    cancels: int = 0


def stack_environment(plan: ChaosPlan) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMFYFLEET_", "AWS_"))}
    env[FAULTS_ENV] = ",".join(f"{service}={plan.fault_share}" for service in FAULTS)
    env[SEED_ENV] = str(plan.seed)
    env.update(plan.env)
    return env


def run_chaos(plan: ChaosPlan, state_dir: Path) -> Outcome:
    rng = random.Random(plan.seed)
    origin = ModelOrigin("/models/chaos.safetensors", placeholder_safetensors())
    receiver = Receiver(fail_share=plan.webhook_fail_share)
    origin.start()
    receiver.start()
    try:
        with launch_dev_stack(
            state_dir, agents=plan.agents, env=stack_environment(plan), args=plan.args
        ) as stack:
            return _run(plan, stack, rng, origin, receiver)
    finally:
        origin.stop()
        receiver.stop()


def _run(
    plan: ChaosPlan,
    stack: RunningStack,
    rng: random.Random,
    origin: ModelOrigin,
    receiver: Receiver,
) -> Outcome:
    admin = Client(stack.api_url, stack.admin_key)
    enable_versioning(stack)
    chaos = Chaos()
    users = []
    for index in range(plan.accounts):
        account = _retrying(chaos, lambda i=index: admin.create_account(tier="pro", name=f"c{i}"))
        key = _retrying(chaos, lambda a=account: admin.create_key(a["account_id"]))
        receiver.add_secrets([account["webhook_secret"]])
        users.append(Client(stack.api_url, key["api_key"]))
    stop = threading.Event()
    killer = threading.Thread(
        target=_kill_loop, args=(stack, random.Random(rng.random()), plan, stop, chaos), daemon=True
    )
    started = time.monotonic()
    killer.start()
    try:
        submitted = _submit_all(plan, users, rng, origin, receiver, chaos)
        last_submit = time.monotonic()
        ends = _wait_for_ends(users, submitted, plan.drain_timeout)
    finally:
        stop.set()
        killer.join(timeout=10)
    _wait_for_events(receiver, ends, timeout=180.0)
    written = outputs_written(stack, ends)
    return collect(
        plan=plan,
        submitted=submitted,
        ends=ends,
        receiver=receiver,
        written=written,
        chaos=chaos.__dict__,
        drain_seconds=max((e["_ended_at"] for e in ends.values()), default=last_submit)
        - last_submit,
        run_seconds=time.monotonic() - started,
    )


def _retrying(chaos: Chaos, call: Any, tries: int = 8) -> Any:
    """A call the faults may fail with a 5xx: again (the same request; idempotent here)."""
    for attempt in range(tries):
        try:
            return call()
        except (ApiError, ConnectionFailed) as exc:
            status = getattr(exc, "status", 500)
            if attempt == tries - 1 or (isinstance(status, int) and status < 500 and status != 429):
                raise
            chaos.submit_retries += 1
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _job_body(kind: str, rng: random.Random, checkpoint: str) -> dict[str, Any]:
    if kind == "plain":
        graph = json.loads(json.dumps(PLAIN))
        # A colour of its own: ComfyUI serves an identical graph from its cache.
        graph["1"]["inputs"]["color"] = rng.randrange(0xFFFFFF)
        return dict(graph)
    steps = 80 if kind == "slow" else 4  # fakecomfy: 0.05 s a step
    params = {
        "prompt": "a lighthouse in a storm",
        "checkpoint_url": checkpoint,
        "steps": steps,
        "width": 64,
        "height": 64,
        "seed": rng.randrange(2**31),
    }
    return render_template("sd15", params).graph


def _submit_all(
    plan: ChaosPlan,
    users: list[Client],
    rng: random.Random,
    origin: ModelOrigin,
    receiver: Receiver,
    chaos: Chaos,
) -> list[Submitted]:
    """The jobs, spread over submit_seconds; a few cancelled soon after."""
    submitted = []
    hook = receiver.url("/hook")
    gap = plan.submit_seconds / max(1, plan.jobs)
    for index in range(plan.jobs):
        account = rng.randrange(len(users))
        kind = rng.choices(["plain", "slow", "model"], weights=[2, 1, 1])[0]
        graph = _job_body(kind, rng, origin.url(origin.path))
        user = users[account]
        key = f"chaos-{plan.seed}-{index}"  # a retried submit is the same job
        answer = _retrying(
            chaos, partial(user.submit, graph, webhook_url=hook, idempotency_key=key)
        )
        submitted.append(Submitted(answer["job_id"], account, kind, time.monotonic()))
        if rng.random() < plan.cancel_share:
            chaos.cancels += 1
            job_id = answer["job_id"]
            try:
                _retrying(chaos, partial(user.cancel, job_id))
            except ApiError as exc:
                if exc.status != 409:  # already ended: nothing to cancel
                    raise
        time.sleep(gap * rng.uniform(0.5, 1.5))
    return submitted


def _kill_loop(
    stack: RunningStack, rng: random.Random, plan: ChaosPlan, stop: threading.Event, chaos: Chaos
) -> None:
    """Every few seconds: SIGKILL an agent or a fakecomfy (the stack starts it again)."""
    while not stop.wait(rng.uniform(*plan.kill_every)):
        try:
            agents = json.loads((stack.state_dir / "dev.json").read_text())["agents"]
        except (OSError, ValueError, KeyError):
            continue
        victim = rng.choice(agents)
        kill_agent = rng.random() < 0.5
        pid = victim["pid"] if kill_agent else victim["comfy_pid"]
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, TypeError, ValueError):
            continue
        if kill_agent:
            chaos.agents_killed += 1
        else:
            chaos.comfys_killed += 1


def _wait_for_ends(
    users: list[Client], submitted: list[Submitted], timeout: float
) -> dict[str, dict[str, Any]]:
    """Each job's final record (with ``_ended_at``, when it was first seen ended)."""
    ends: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    waiting = list(submitted)
    while waiting and time.monotonic() < deadline:
        still = []
        for job in waiting:
            try:
                record = users[job.account].get(job.job_id)
            except (ApiError, ConnectionFailed):
                still.append(job)  # a fault on the read: look again
                continue
            if record.get("status") in ENDED:
                ends[job.job_id] = {**record, "_ended_at": time.monotonic()}
            else:
                still.append(job)
        waiting = still
        if waiting:
            time.sleep(1.0)
    return ends


def _wait_for_events(receiver: Receiver, ends: dict[str, Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(receiver.events[job_id].ids for job_id in ends):
            return
        time.sleep(1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--jobs", type=int, default=ChaosPlan.jobs)
    parser.add_argument("--seed", type=int, default=ChaosPlan.seed)
    parser.add_argument(
        "--faults", type=float, default=ChaosPlan.fault_share, help="share of AWS calls that fail"
    )
    parser.add_argument("--submit-seconds", type=float, default=ChaosPlan.submit_seconds)
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    args = parser.parse_args(argv)
    plan = ChaosPlan(
        jobs=args.jobs, seed=args.seed, fault_share=args.faults, submit_seconds=args.submit_seconds
    )
    with tempfile.TemporaryDirectory(prefix="comfyfleet-chaos-") as state:
        outcome = run_chaos(plan, Path(state))
    print(json.dumps(outcome.counts, indent=2) if args.json else outcome.table())
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())
