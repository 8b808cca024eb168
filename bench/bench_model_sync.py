"""Model sync from the S3 mirror: the agent's tuned transfer vs boto3's default download_file.

Both download the same object from the same server in the same run, alternating, with the
page cache's dirty pages flushed before each timed run (so one run's write-back does not
land in the next one's time). The server is moto's ThreadedMotoServer on 127.0.0.1, in a
child process so that it does not share the client's GIL.

One fix is applied to that moto server: moto answers a ranged GET by reading the *whole*
object and slicing it (O(object) per part, serialised by a per-key lock), which would make
any comparison a count of parts rather than of transfer behaviour. The child process
patches ranged GETs to read just the range, as S3 does; nothing else about moto changes.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig

from bench.common import Figure, Timing
from comfyfleet.workflow.refs import ModelRef
from gpu_agent.mirror import ModelMirror, mirror_client

MiB = 1024 * 1024
BUCKET = "bench-model-mirror"
GOAL_RATIO = 1.0
_CREDENTIALS = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}


def run(quick: bool = False) -> list[Figure]:
    size = 64 * MiB if quick else 1024 * MiB
    repeats = 7 if quick else 5  # quick runs are short; more of them steady the median
    context = multiprocessing.get_context("spawn")
    endpoints: Any = context.Queue()
    server = context.Process(target=_serve_moto, args=(endpoints,), daemon=True)
    server.start()
    try:
        endpoint, patched = endpoints.get(timeout=60)
        return [_measure(endpoint, patched, size, repeats)]
    finally:
        server.terminate()
        server.join(timeout=10)


def _measure(endpoint: str, patched: bool, size: int, repeats: int) -> Figure:
    session = boto3.session.Session(region_name="us-east-1", **_CREDENTIALS)
    tuned_client = mirror_client(session=session, endpoint_url=endpoint)
    default_client = session.client("s3", endpoint_url=endpoint)  # boto3's defaults
    tuned_client.create_bucket(Bucket=BUCKET)
    key = "0" * 64
    ref = ModelRef("https://example.com/m.bin", key, "checkpoints", "m.safetensors", size=size)
    mirror = ModelMirror(tuned_client, BUCKET)
    object_key = mirror.object_key(key)
    with tempfile.TemporaryDirectory(prefix="bench-model-sync-") as work:
        _upload_random(tuned_client, object_key, Path(work) / "source", size)
        dest = Path(work) / "model"

        def tuned() -> None:
            assert mirror.download(ref, dest) is not None

        def default() -> None:
            default_client.download_file(BUCKET, object_key, str(dest), Config=TransferConfig())

        samples: dict[str, list[float]] = {"tuned": [], "default": []}
        runs: list[tuple[str, Callable[[], None]]] = [("tuned", tuned), ("default", default)]
        for repeat in range(repeats + 1):  # the first round warms both up, untimed
            for name, download in runs if repeat % 2 else runs[::-1]:
                elapsed = _timed(download, dest, size)
                if repeat:
                    samples[name].append(elapsed)
    tuned_time, default_time = Timing.of(samples["tuned"]), Timing.of(samples["default"])
    ratio = default_time.median / tuned_time.median
    label = f"{size // MiB} MiB" if size < 1024 * MiB else f"{size // (1024 * MiB)} GiB"
    server = "moto, ranged GET fixed" if patched else "moto as shipped"
    return Figure(
        name=f"model sync from S3 mirror, {label}",
        value=ratio,
        unit="x default",
        goal=f">= {GOAL_RATIO:.1f}x boto3 default download_file",
        ok=ratio >= GOAL_RATIO,
        baseline=f"tuned {size / tuned_time.median / MiB:.0f} MiB/s vs default "
        f"{size / default_time.median / MiB:.0f} MiB/s (medians; {server})",
        noise=f"spread tuned {tuned_time.noise:.0%}, default {default_time.noise:.0%}, "
        f"n={repeats} each",
    )


def _timed(download: Callable[[], None], dest: Path, size: int) -> float:
    dest.unlink(missing_ok=True)
    os.sync()  # the previous run's dirty pages are written back outside the timing
    start = time.perf_counter()
    download()
    elapsed = time.perf_counter() - start
    if dest.stat().st_size != size:
        raise RuntimeError(f"downloaded {dest.stat().st_size} bytes, expected {size}")
    return elapsed


def _upload_random(client: Any, key: str, scratch: Path, size: int) -> None:
    with scratch.open("wb") as file:
        for offset in range(0, size, 64 * MiB):
            file.write(os.urandom(min(64 * MiB, size - offset)))
    config = TransferConfig(multipart_chunksize=64 * MiB, max_concurrency=4)
    client.upload_file(str(scratch), BUCKET, key, Config=config)
    scratch.unlink()


# -- the server process ----------------------------------------------------------------------


def _serve_moto(endpoints: Any) -> None:
    """Run moto's server on an ephemeral loopback port until terminated."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    from moto.server import ThreadedMotoServer

    patched = _read_ranges_not_objects()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoints.put((f"http://{host}:{port}", patched))
    threading.Event().wait()


_SIMPLE_RANGE = re.compile(r"^bytes=(\d+)-(\d+)$")


class _ObjectWindow:
    """What moto's range handler slices in place of the whole object: reads just the slice."""

    def __init__(self, key: Any) -> None:
        self.key = key

    def __len__(self) -> int:
        return int(self.key.size)

    def __getitem__(self, span: slice) -> bytes:
        with self.key.lock:
            self.key._value_buffer.seek(span.start)
            return bytes(self.key._value_buffer.read(span.stop - span.start))


def _read_ranges_not_objects() -> bool:
    """Patch moto (in this process) so a GET with one byte range reads only that range."""
    try:
        from moto.s3.models import FakeKey
        from moto.s3.responses import S3Response

        whole_value: Any = vars(FakeKey)["value"]  # the property object itself
        key_response: Any = vars(S3Response)["key_response"]
    except (ImportError, KeyError):
        return False
    in_ranged_get = threading.local()

    def value(key: Any) -> Any:
        if getattr(in_ranged_get, "on", False):
            return _ObjectWindow(key)
        return whole_value.fget(key)

    def ranged_key_response(self: Any, request: Any, full_url: str, headers: Any) -> Any:
        in_ranged_get.on = request.method == "GET" and bool(
            _SIMPLE_RANGE.match(request.headers.get("range", ""))
        )
        try:
            return key_response(self, request, full_url, headers)
        finally:
            in_ranged_get.on = False

    FakeKey.value = property(value, whole_value.fset)  # type: ignore[method-assign,assignment]
    S3Response.key_response = ranged_key_response  # type: ignore[method-assign]
    return True
