"""What the agent adds around ComfyUI with a warm model cache (goal: <= 50 ms each way).

Two spans per job, timed in the agent's process; fakecomfy (``comfyfleet fakecomfy``) and
moto's server (``LocalAws``) run in child processes, as ComfyUI and AWS are not in the
agent's interpreter either:
- **receive → POST /prompt**: from the SQS message in hand to the prompt being posted
  (the conditional claim and the promotion of the account's next job, the cache's check
  and links, the rewrite, opening the socket);
- **last event → completed**: from ComfyUI's ``executing`` null to the job store having
  written the job completed with its outputs, what a poll sees (``/history``, ``/view``,
  the S3 upload, the conditional finish). What follows — the job event, the promotion,
  the message's delete — is reported beside it, to ``handle`` returning.

Measured with AWS round trips (moto's server) and without them (in-memory stores, queues,
S3 and events), against the same-run baseline of a thin wrapper: a bare loop that opens
the socket, posts the same graph, waits for ``executing`` null, then reads ``/history`` and
``/view`` — what any ComfyUI worker must do — with the agent's own HTTP settings. The three
run interleaved, one job each per round, so load on the machine hits them alike. The AWS
calls made inside each span are counted, and the median time of one call is measured in
the same run: on a loaded host moto's latency dominates the figure, and the count says
what the agent itself asks for.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.client
import requests
import websocket

from bench.common import Figure, Timing
from comfyfleet.aws import client, reset_clients
from comfyfleet.dev.local_aws import LocalAws
from comfyfleet.domain import Limits
from comfyfleet.events import MemoryJobEvents
from comfyfleet.queues import MemoryQueues
from comfyfleet.resources import MODEL_MIRROR_PREFIX, provision
from comfyfleet.scheduling import JobRequest
from comfyfleet.settings import Settings
from comfyfleet.store.memory import memory_stores
from comfyfleet.templates import render_template
from comfyfleet.workflow.refs import ModelRef, ref_for_url
from fakecomfy import placeholder_safetensors
from gpu_agent.main import Parts, build
from gpu_agent.runner import Ending
from gpu_agent.settings import AgentSettings
from gpu_agent.sources import Fetched, Source

GOAL_MS = 50.0
REGION = "us-east-1"
CHECKPOINT_URL = "https://huggingface.co/bench/tiny/resolve/main/tiny.safetensors"
LIMITS = Limits(requests_per_minute=10**6, concurrency=4, queue_depth=10**6, ring_slots=4)
_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}


def run(quick: bool = False) -> list[Figure]:
    rounds = 15 if quick else 60
    calls = _AwsCalls()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-agent-") as scratch:
            work = Path(scratch)
            # Two phases, each agent with a thin wrapper interleaved on its own fakecomfy, so
            # one agent's background threads (heartbeat, metrics) never slow the other.
            with _aws_environment("http://127.0.0.1:9"):  # a stray AWS call fails
                memory = _MemoryAgent(work / "memory")
                try:
                    thin_memory = _ThinWrapper(memory.comfy, memory.warm_up())
                    _interleave(rounds, memory, thin_memory, calls)
                finally:
                    memory.close()
            with _ChildAws() as endpoint, _aws_environment(endpoint):
                on_aws = _AwsAgent(work / "aws", endpoint)
                try:
                    thin_aws = _ThinWrapper(on_aws.comfy, on_aws.warm_up())
                    calls.calls.clear()
                    _interleave(rounds, on_aws, thin_aws, calls)
                finally:
                    on_aws.close()
    finally:
        calls.close()
    rtt = Timing.of([seconds for _, seconds in calls.calls])
    return _figures(on_aws.spans, thin_aws.spans, memory.spans, thin_memory.spans, rtt)


def _interleave(rounds: int, agent: _Agent, wrapper: _ThinWrapper, calls: _AwsCalls) -> None:
    for _ in range(3):  # connection pools, code paths: warm, untimed
        agent.job(calls), wrapper.job()
    for _ in range(rounds):
        agent.spans.add(agent.job(calls))
        wrapper.spans.add(wrapper.job())


# -- the servers, each in a process of its own: ComfyUI and AWS do not share the agent's GIL --


class _ChildComfy:
    """fakecomfy (``comfyfleet fakecomfy``) in a child process, as a real ComfyUI runs."""

    def __init__(self, root: Path) -> None:
        with socket.socket() as probe:  # a free port (fakecomfy takes it a moment later)
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url, self.ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws"
        command = [sys.executable, "-m", "comfyfleet.cli", "fakecomfy", "--port", str(port)]
        self.process = subprocess.Popen(
            [*command, "--root", str(root), "--step-seconds", "0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{self.url}/system_stats", timeout=1).raise_for_status()
                return
            except requests.RequestException:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("fakecomfy did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@contextmanager
def _ChildAws() -> Iterator[str]:  # noqa: N802  (a context manager named as the server)
    """moto's server (comfyfleet.dev.local_aws.LocalAws) in a child process; its endpoint."""
    context = multiprocessing.get_context("spawn")
    endpoints: Any = context.Queue()
    server = context.Process(target=_serve_aws, args=(endpoints,), daemon=True)
    server.start()
    try:
        yield endpoints.get(timeout=60)
    finally:
        server.terminate()
        server.join(timeout=10)


def _serve_aws(endpoints: Any) -> None:
    aws = LocalAws().start()
    endpoints.put(aws.url)
    threading.Event().wait()


@dataclass
class _Spans:
    """Seconds of each job's two spans; for the agent also to the message's delete, and the
    AWS calls (count, seconds) made inside each span."""

    before: list[float] = field(default_factory=list)
    after: list[float] = field(default_factory=list)
    to_delete: list[float] = field(default_factory=list)
    calls_before: list[int] = field(default_factory=list)
    calls_after: list[int] = field(default_factory=list)

    def add(self, timed: _Timed) -> None:
        self.before.append(timed.before)
        self.after.append(timed.after)
        self.to_delete.append(timed.to_delete)
        self.calls_before.append(timed.calls_before)
        self.calls_after.append(timed.calls_after)


@dataclass(frozen=True)
class _Timed:
    before: float
    after: float
    to_delete: float = 0.0
    calls_before: int = 0
    calls_after: int = 0


class _AwsCalls:
    """Every AWS API call the measuring (main) thread makes: when it began, how long it took.
    The heartbeat and metrics threads' calls run beside the job and are not counted."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, float]] = []
        self._original = botocore.client.BaseClient._make_api_call
        main, calls, original = threading.main_thread(), self.calls, self._original

        def timed(client: Any, operation: str, params: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(client, operation, params)
            finally:
                if threading.current_thread() is main:
                    calls.append((start, time.perf_counter() - start))

        botocore.client.BaseClient._make_api_call = timed

    def between(self, start: float, end: float) -> int:
        return sum(1 for began, _ in self.calls if start <= began <= end)

    def close(self) -> None:
        botocore.client.BaseClient._make_api_call = self._original


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _figures(
    on_aws: _Spans, thin_aws: _Spans, memory: _Spans, thin_memory: _Spans, rtt: Timing
) -> list[Figure]:
    load = os.getloadavg()[0]
    figures = []
    spans = (("before", "receive -> POST /prompt"), ("after", "last event -> completed"))
    for span, label in spans:
        aws_t = Timing.of(getattr(on_aws, span))
        mem_t = Timing.of(getattr(memory, span))
        thin_t = Timing.of(getattr(thin_aws, span))
        calls = statistics.median(getattr(on_aws, f"calls_{span}"))
        extra = ""
        if span == "after":
            extra = f"; to the message's delete {_ms(statistics.median(on_aws.to_delete))}"
        figures.append(
            Figure(
                name=f"agent overhead {label}, warm cache, AWS on moto",
                value=aws_t.median * 1000,
                unit="ms",
                goal=f"<= {GOAL_MS:.0f} ms",
                ok=aws_t.median * 1000 <= GOAL_MS,
                baseline=f"thin wrapper {_ms(thin_t.median)}; AWS excluded {_ms(mem_t.median)}; "
                f"{calls:.0f} AWS calls at {_ms(rtt.median)} median each{extra}",
                noise=f"p95 {_ms(aws_t.p95)}, spread {aws_t.noise:.0%}, n={aws_t.runs}, "
                f"load average {load:.1f}",
            )
        )
    mem_total = Timing.of([a + b for a, b in zip(memory.before, memory.after, strict=True)])
    thin_total = Timing.of(
        [a + b for a, b in zip(thin_memory.before, thin_memory.after, strict=True)]
    )
    added = (mem_total.median - thin_total.median) * 1000
    figures.append(
        Figure(
            name="agent overhead both spans, AWS excluded, minus a thin wrapper's",
            value=added,
            unit="ms",
            goal="<= 5 ms (what a popular thin wrapper adds)",
            ok=added <= 5.0,
            baseline=f"agent {_ms(mem_total.median)} vs thin wrapper "
            f"{_ms(thin_total.median)} per job (medians)",
            noise=f"p95 agent {_ms(mem_total.p95)} / wrapper {_ms(thin_total.p95)}, "
            f"spread {mem_total.noise:.0%} / {thin_total.noise:.0%}, n={mem_total.runs}",
        )
    )
    return figures


@contextmanager
def _aws_environment(endpoint: str) -> Iterator[None]:
    """boto3 pointed at ``endpoint`` with dummy credentials, for the duration only."""
    values = {**_CREDENTIALS, "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": endpoint}
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    reset_clients()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        reset_clients()


def _graph() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    params = {
        "prompt": "a lighthouse",
        "checkpoint_url": CHECKPOINT_URL,
        "steps": 1,
        "width": 64,
        "height": 64,
        "seed": 7,
    }
    graph = render_template("sd15", params).graph
    return graph, [ref_for_url(CHECKPOINT_URL, "checkpoints").to_dict()]


class _Probe:
    """Timestamps inside the agent's ComfyUI client: the POST of /prompt, ``executing`` null."""

    def __init__(self, comfy: Any) -> None:
        self.posted = self.done = 0.0
        self.graph: dict[str, Any] = {}
        request, follow = comfy._request, comfy._follow

        def timed_request(method: str, path: str, **kwargs: Any) -> Any:
            if method == "POST" and path == "/prompt":
                self.posted = time.perf_counter()
                self.graph = kwargs["json"]["prompt"]
            return request(method, path, **kwargs)

        def timed_follow(*args: Any) -> Any:
            seen = follow(*args)
            self.done = time.perf_counter()
            return seen

        comfy._request, comfy._follow = timed_request, timed_follow

    def watch_finish(self, jobs: Any) -> None:
        """Also note when the job store has written the job completed (what a poll sees)."""
        self.completed = 0.0
        finish = jobs.finish

        def timed_finish(*args: Any, **kwargs: Any) -> Any:
            done = finish(*args, **kwargs)
            self.completed = time.perf_counter()
            return done

        jobs.finish = timed_finish


class _Agent:
    """One agent (built by gpu_agent.main.build) beside its own fakecomfy."""

    parts: Parts
    comfy: _ChildComfy

    def __init__(self) -> None:
        self.spans = _Spans()
        self.graph, self.models = _graph()
        self.account = ""

    def _settings(self, root: Path, name: str, **extra: Any) -> AgentSettings:
        self.comfy = _ChildComfy(root / "comfy")
        return AgentSettings(
            comfy_url=self.comfy.url,
            comfy_root=root / "comfy",
            cache_dir=root / "cache",
            cache_budget_bytes=10**9,
            node_id=name,
            receive_wait_seconds=1,
            **extra,
        )

    @contextmanager
    def _stopping_comfy_on_error(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            self.comfy.stop()  # no orphan fakecomfy process
            raise

    def _started(self, parts: Parts) -> None:
        self.parts = parts
        self.probe = _Probe(parts.agent.comfy)
        self.probe.watch_finish(parts.agent.dispatcher.stores.jobs)
        parts.agent.start()
        stores = parts.agent.dispatcher.stores
        self.account = stores.accounts.create(tier="pro", name="", now=time.time()).account_id

    def warm_up(self) -> dict[str, Any]:
        """Run the first job (the model sync), untimed; the graph as the agent posted it."""
        self.job()
        return self.probe.graph

    def job(self, calls: _AwsCalls | None = None) -> _Timed:
        """Submit and run one job; its spans."""
        agent = self.parts.agent
        agent.dispatcher.submit(self.account, "pro", LIMITS, JobRequest(self.graph, self.models))
        received = None
        while received is None:
            received = agent._receive()
        start = time.perf_counter()
        ending = agent.handle(received)
        end = time.perf_counter()
        if ending is not Ending.COMPLETED:
            raise RuntimeError(f"bench job ended {ending}")
        probe = self.probe
        return _Timed(
            probe.posted - start,
            probe.completed - probe.done,
            end - probe.done,
            calls.between(start, probe.posted) if calls else 0,
            calls.between(probe.done, probe.completed) if calls else 0,
        )

    def close(self) -> None:
        self.parts.agent.shutdown()
        self.parts.sources.close()
        self.parts.cache.close()
        self.parts.http.close()
        self.comfy.stop()


class _LocalSource:
    """The checkpoint from memory: the in-memory agent's model source (no S3 mirror)."""

    def fetch(self, ref: ModelRef, dest: Path) -> Fetched:
        data = placeholder_safetensors()
        dest.write_bytes(data)
        return Fetched(len(data), None, Source.ORIGIN, 0.0)


class _MemoryS3:
    """put_object and presigning, in memory: the outputs' S3 with no round trip."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.meta = type("Meta", (), {"region_name": REGION})()

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, **_: Any) -> None:  # noqa: N803
        self.objects[(Bucket, Key)] = Body

    def generate_presigned_url(self, _: str, *, Params: dict[str, str], **__: Any) -> str:  # noqa: N803
        return f"https://{Params['Bucket']}.s3.amazonaws.com/{Params['Key']}?X-Amz-Signature=0"


class _NoCloudWatch:
    def put_metric_data(self, **_: Any) -> None:
        return None


class _MemoryAgent(_Agent):
    """Stores, queues, S3, events and metrics in memory: the agent's own cost alone."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        settings = self._settings(root, "bench-memory", shared_queue_url="memory://shared")
        with self._stopping_comfy_on_error():
            parts = build(
                settings,
                stores=memory_stores(settings),
                queues=MemoryQueues(time.time),
                s3=_MemoryS3(),
                node_queue_url="memory://node-bench-memory",
                on_ec2=False,
                events=MemoryJobEvents(),
            )
            parts.cache.source = _LocalSource()
            if parts.agent.metrics is not None:
                parts.agent.metrics.sink.cloudwatch = _NoCloudWatch()
            self._started(parts)


class _AwsAgent(_Agent):
    """DynamoDB, SQS, S3, SNS and CloudWatch on moto's server: every round trip is real."""

    def __init__(self, root: Path, endpoint: str) -> None:
        super().__init__()
        provisioned = provision(Settings(), endpoint_url=endpoint, region=REGION)
        settings = self._settings(
            root, "bench-aws", shared_queue_url=provisioned.queue_urls["shared"]
        )
        ref = ModelRef(**self.models[0])
        with self._stopping_comfy_on_error():
            # The model waits in the S3 mirror: the warm-up job syncs it from there.
            client("s3").put_object(
                Bucket=settings.model_bucket_name,
                Key=f"{MODEL_MIRROR_PREFIX}{ref.key}",
                Body=placeholder_safetensors(),
            )
            self._started(build(settings, s3=client("s3"), on_ec2=False))


class _ThinWrapper:
    """The baseline: a bare ComfyUI client loop on the same fakecomfy, same graph."""

    def __init__(self, comfy: _ChildComfy, graph: dict[str, Any]) -> None:
        self.comfy = comfy
        self.graph = graph
        self.spans = _Spans()
        self.http = requests.Session()
        self.http.trust_env = False  # the agent's client settings: the baseline is no strawman
        self.client_id = f"thin-{uuid.uuid4().hex}"

    def job(self) -> _Timed:
        prompt_id = str(uuid.uuid4())
        graph = _with_prefix(self.graph, prompt_id)  # a new output, as each job has
        start = time.perf_counter()
        ws = websocket.create_connection(
            f"{self.comfy.ws_url}?clientId={self.client_id}", skip_utf8_validation=True
        )
        body = {"prompt": graph, "client_id": self.client_id, "prompt_id": prompt_id}
        posted = time.perf_counter()
        self.http.post(f"{self.comfy.url}/prompt", json=body, timeout=10).raise_for_status()
        done = _wait_done(ws, prompt_id)
        ws.close()
        entry = self.http.get(f"{self.comfy.url}/history/{prompt_id}", timeout=10).json()
        for output in entry[prompt_id]["outputs"].values():
            for image in output.get("images", []):
                params = {k: image[k] for k in ("filename", "subfolder", "type")}
                view = self.http.get(f"{self.comfy.url}/view", params=params, timeout=10)
                view.raise_for_status()  # the bytes, read: what the wrapper hands on
        return _Timed(posted - start, time.perf_counter() - done)


def _with_prefix(graph: dict[str, Any], prefix: str) -> dict[str, Any]:
    fresh = json.loads(json.dumps(graph))
    for node in fresh.values():
        if "filename_prefix" in node.get("inputs", {}):
            node["inputs"]["filename_prefix"] = f"thin/{prefix}"
    return fresh


def _wait_done(ws: websocket.WebSocket, prompt_id: str) -> float:
    while True:
        frame = ws.recv()
        if isinstance(frame, bytes):
            continue
        message = json.loads(frame)
        data = message.get("data") or {}
        if (
            message.get("type") == "executing"
            and data.get("node") is None
            and data.get("prompt_id") == prompt_id
        ):
            return time.perf_counter()
