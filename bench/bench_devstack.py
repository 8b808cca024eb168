"""The dev stack (`comfyfleet dev`) over HTTP from one client process: submits per second
through its front, and the end-to-end latency of a model-free job with fakecomfy.

Baselines from the same run: requests per second of ``GET /v1/health`` through the same
front (the gateway and the api function, no key and no AWS call), and the jobs' own run
time (``execution_time_ms``: claimed → completed, ComfyUI and the upload included), which
shows what queueing and the agent's claim add on top.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Figure, Timing
from comfyfleet.client import Client

BENCH_TIER = {
    "requests_per_minute": 1_000_000,
    "concurrency": 50,
    "queue_depth": 100_000,
    "weight": 2.0,
}
POLL_SECONDS = 0.01


def _graph(index: int) -> dict[str, Any]:
    # A different colour each time: ComfyUI serves an identical graph from its cache.
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": index % 0xFFFFFF},
        },
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "b"}},
    }


def _seconds(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def run(quick: bool = False) -> list[Figure]:
    from comfyfleet.dev.launch import launch_dev_stack

    jobs, submits = (5, 40) if quick else (20, 200)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMFYFLEET_", "AWS_"))}
    env["COMFYFLEET_TIERS"] = json.dumps({"bench": BENCH_TIER})
    with tempfile.TemporaryDirectory(prefix="bench-devstack-") as state:
        with launch_dev_stack(Path(state), agents=1, env=env) as stack:
            admin = Client(stack.api_url, stack.admin_key)
            account = admin.create_account(tier="bench", name="bench")
            key = admin.create_key(account["account_id"], scopes=("jobs",))["api_key"]
            client = Client(stack.api_url, key)
            client.submit(_graph(0))  # warm: the handlers build on their first request
            observed, server_side, execution = _latencies(client, jobs)
            # No agent from here on: submits measure the front and the API alone.
            admin.drain_node(stack.agents[0]["node_id"])
            submit_rate, submit_timing = _submit_rate(client, submits)
            health_rate = _health_rate(client, submits)
    latency = Timing.of(observed)
    server = Timing.of(server_side)
    run_time = Timing.of(execution)
    return [
        Figure(
            name="dev stack: submits/s through the HTTP front (one client)",
            value=submit_rate,
            unit="submits/s",
            goal="report",
            ok=True,
            baseline=f"GET /v1/health {health_rate:.0f} req/s through the same front; "
            f"submit p50 {submit_timing.median * 1000:.1f} ms, p95 "
            f"{submit_timing.p95 * 1000:.1f} ms",
            noise=f"spread {submit_timing.noise:.0%}, n={submit_timing.runs}",
        ),
        Figure(
            name="dev stack: model-free job, submit -> completed (fakecomfy)",
            value=latency.median * 1000,
            unit="ms",
            goal="report",
            ok=True,
            baseline=f"created->completed {server.median * 1000:.0f} ms (server clock); the "
            f"run itself (claimed->completed) {run_time.median * 1000:.0f} ms; p95 "
            f"{latency.p95 * 1000:.0f} ms; polled every {POLL_SECONDS * 1000:.0f} ms",
            noise=f"spread {latency.noise:.0%}, n={latency.runs}",
        ),
    ]


def _latencies(client: Client, jobs: int) -> tuple[list[float], list[float], list[float]]:
    """Sequential model-free jobs: client-observed, server-side and run seconds of each."""
    observed, server_side, execution = [], [], []
    for index in range(1, jobs + 1):
        started = time.perf_counter()
        job_id = client.submit(_graph(index))["job_id"]
        while True:
            job = client.get(job_id)
            if job["status"] in ("completed", "failed", "cancelled"):
                break
            time.sleep(POLL_SECONDS)
        observed.append(time.perf_counter() - started)
        if job["status"] != "completed":
            raise RuntimeError(f"bench job {job_id} ended {job['status']}: {job.get('error')}")
        server_side.append(_seconds(job["completed_at"]) - _seconds(job["created_at"]))
        execution.append((job.get("execution_time_ms") or 0) / 1000)
    return observed, server_side, execution


def _submit_rate(client: Client, count: int) -> tuple[float, Timing]:
    samples = []
    started = time.perf_counter()
    for index in range(count):
        t0 = time.perf_counter()
        client.submit(_graph(10_000 + index))
        samples.append(time.perf_counter() - t0)
    return count / (time.perf_counter() - started), Timing.of(samples)


def _health_rate(client: Client, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        client.health()
    return count / (time.perf_counter() - started)
