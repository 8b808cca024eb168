"""Every AWS request one job causes, end to end, on the dev stack: submit (authorizer and
api), claim, heartbeats, progress writes, previews and outputs, completion, the event, the
webhook delivery, and the reaper's and pollers' share — by service and action.

The functions and the agent append each call to one file (comfyfleet.aws_calls). The stack
runs with the deployment's agent timings (heartbeat 5 s, long poll 10 s) and a fakecomfy
step of 0.3 s (a 30-step job runs 9 s). One job at a time, each kind twice: a job's calls
are those of its window (submit → its webhook received, plus a second to settle) less what
the idle stack makes in as long (measured just before, the baseline of the same run: idle
heartbeats and long polls are not the job's). A client that polls adds a GET (and an api
invocation) per poll: the jobs here end by webhook. The three kinds: a model-free graph; a graph
whose checkpoint is already cached on the node; a 30-step sampler graph with previews.

``comfyfleet.sim.costs.PER_JOB_CALLS`` holds these counts for ``comfyfleet sim --costs``;
this prints them again so a change that adds calls shows.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.common import Figure
from comfyfleet.client import Client

IDLE_SECONDS = 20.0
SETTLE_SECONDS = 1.0
STACK_ENV = {
    "COMFYFLEET_HEARTBEAT_SECONDS": "5",
    "COMFYFLEET_RECEIVE_WAIT_SECONDS": "10",
}


class _Server:
    """A loopback HTTP server: GET serves ``body``, POST is counted and answered 204."""

    def __init__(self, body: bytes = b"") -> None:
        self.posts: list[float] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                owner.posts.append(time.monotonic())
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def graphs(checkpoint_url: str, index: int) -> dict[str, dict[str, Any]]:
    """The three kinds of job (a different seed or colour each time: no ComfyUI cache hit)."""

    def save(source: str) -> dict[str, Any]:
        return {
            "class_type": "SaveImage",
            "inputs": {"images": [source, 0], "filename_prefix": "cost"},
        }

    def text(prompt: str) -> dict[str, Any]:
        return {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": prompt}}

    model_free = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": index},
        },
        "2": save("1"),
    }
    loader: dict[str, Any] = {
        "class_type": "CheckpointLoaderSimple",
        "inputs": {"ckpt_name": checkpoint_url},
    }
    cached = {
        "4": loader,
        "5": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": index},
        },
        "6": {"class_type": "VAEEncode", "inputs": {"pixels": ["5", 0], "vae": ["4", 2]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["4", 2]}},
        "7": save("8"),
    }
    sampler = {
        "4": loader,
        "6": text("a lighthouse at dusk"),
        "7": text("blurry"),
        "5": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": 512, "height": 512, "batch_size": 1},
        },
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
                "seed": index,
                "steps": 30,
                "cfg": 7.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": save("8"),
    }
    return {"model-free": model_free, "cached model": cached, "30 steps, previews": sampler}


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _calls(lines: list[dict[str, Any]]) -> Counter[str]:
    return Counter(line["call"] for line in lines)


def measure(runs: int = 2) -> tuple[dict[str, Counter[str]], Counter[str], float]:
    """Per kind: the calls of one job (mean over ``runs``); the idle calls and their window."""
    from comfyfleet.dev.launch import launch_dev_stack
    from fakecomfy import placeholder_safetensors

    origin, hooks = _Server(placeholder_safetensors()), _Server()
    with tempfile.TemporaryDirectory(prefix="bench-aws-calls-") as folder:
        state, calls = Path(folder), Path(folder) / "calls.jsonl"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("COMFYFLEET_", "AWS_"))}
        env.update(STACK_ENV, COMFYFLEET_DEV_AWS_CALLS=str(calls))
        args = ["--step-seconds", "0.3"]
        try:
            with launch_dev_stack(state, agents=1, env=env, args=args) as stack:
                client = Client(stack.api_url, stack.user_key)
                checkpoint = f"{origin.url}/models/dream.safetensors"
                warm = graphs(checkpoint, 0)["cached model"]  # builds, caches the model
                client.wait(client.submit(warm)["job_id"], timeout=120)
                time.sleep(SETTLE_SECONDS)
                before = len(_lines(calls))
                time.sleep(IDLE_SECONDS)
                idle = _calls(_lines(calls)[before:])
                per_kind = {name: Counter[str]() for name in graphs(checkpoint, 0)}
                for index in range(1, runs + 1):
                    for name, graph in graphs(checkpoint, index).items():
                        job = _one_job(client, graph, hooks, calls, idle)
                        per_kind[name].update(job)
        finally:
            origin.close()
            hooks.close()
    mean = {
        name: Counter({call: round(count / runs, 1) for call, count in counts.items()})
        for name, counts in per_kind.items()
    }
    return mean, idle, IDLE_SECONDS


def _one_job(
    client: Client, graph: dict[str, Any], hooks: _Server, calls: Path, idle: Counter[str]
) -> Counter[str]:
    """The calls of one job's window, less the idle stack's in as long."""
    before, started = len(_lines(calls)), time.monotonic()
    delivered = len(hooks.posts)
    job = client.submit(graph, webhook_url=f"{hooks.url}/hook")
    # The end is the webhook, not polling: a client's GETs are its own choice, not the job's.
    deadline = time.monotonic() + 180
    while len(hooks.posts) <= delivered and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(SETTLE_SECONDS)
    window = time.monotonic() - started
    seen = _calls(_lines(calls)[before:])
    ended = client.get(job["job_id"])  # after the window
    if ended["status"] != "completed":
        raise RuntimeError(f"bench job {ended['status']}: {ended.get('error')}")
    share = window / IDLE_SECONDS
    return Counter(
        {
            call: max(0.0, count - idle.get(call, 0) * share)
            for call, count in seen.items()
            if count - idle.get(call, 0) * share > 0.05
        }
    )


def run(quick: bool = False) -> list[Figure]:
    per_kind, idle, idle_seconds = measure(runs=1 if quick else 2)
    idle_rate = sum(idle.values()) / idle_seconds
    figures = []
    for name, counts in per_kind.items():
        by_service = Counter[str]()
        for call, count in counts.items():
            by_service[call.split(".", 1)[0]] += count
        detail = ", ".join(f"{call} {count:g}" for call, count in sorted(counts.items()))
        figures.append(
            Figure(
                name=f"AWS requests per job: {name}",
                value=round(sum(counts.values()), 1),
                unit="requests",
                goal="report",
                ok=True,
                baseline=f"idle stack {idle_rate:.2f} requests/s (subtracted); "
                + ", ".join(f"{s} {c:g}" for s, c in sorted(by_service.items())),
                noise=detail,
            )
        )
    return figures


if __name__ == "__main__":
    mean, idle, seconds = measure()
    print(json.dumps({"per_job": mean, "idle": idle, "idle_seconds": seconds}, indent=1))
