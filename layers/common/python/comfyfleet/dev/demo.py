"""``make demo``: the dev stack up, two jobs through it, their images in ./out, the stack down.

    python -m comfyfleet.dev.demo [--out out] [--state-dir .comfyfleet/demo]

Submits examples/hello.json (a model-free graph) and an sd15 template job. The template
needs a checkpoint: with fakecomfy, a placeholder file served by a loopback HTTP server
stands in for the model host (the stack runs with --allow-local-urls), so the agent's whole
model path — download, cache, symlink, loader — runs as it would with a real model.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CHECKPOINT_PATH = "/models/demo-checkpoint.safetensors"
PROMPT = "a lighthouse on a cliff at dusk"


@contextmanager
def model_host(files: dict[str, bytes]) -> Iterator[str]:
    """A loopback HTTP server of ``files`` by path; yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path.split("?")[0])
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def run(out: Path, state_dir: Path, example: Path) -> int:
    from comfyfleet.cli_client import follow
    from comfyfleet.client import Client
    from comfyfleet.dev.launch import launch_dev_stack
    from fakecomfy import placeholder_safetensors

    graph = json.loads(example.read_text())
    started = time.monotonic()
    with model_host({CHECKPOINT_PATH: placeholder_safetensors()}) as host:
        print("== starting the dev stack (moto, API, one agent with fakecomfy)…", flush=True)
        with launch_dev_stack(state_dir, agents=1) as stack:
            print(f"   up in {time.monotonic() - started:.1f} s at {stack.api_url}", flush=True)
            with Client(stack.api_url, stack.user_key) as client:
                hello = client.submit(graph)
                print(f"== submitted {example} as job {hello['job_id']}", flush=True)
                template = client.submit_template(
                    "sd15",
                    prompt=PROMPT,
                    checkpoint_url=host + CHECKPOINT_PATH,
                    steps=20,
                    seed=42,
                )
                print(f"== submitted the sd15 template as job {template['job_id']}", flush=True)
                print(f"== following both; images go to {out}/", flush=True)
                jobs = follow(client, [hello["job_id"], template["job_id"]], out=out)
            print("== stopping the dev stack…", flush=True)
    failed = [job for job in jobs if job.get("status") != "completed"]
    if failed:
        print(f"demo: {len(failed)} job(s) did not complete", file=sys.stderr)
        return 1
    images = sorted(out.glob("*.png"))
    print(f"== done in {time.monotonic() - started:.0f} s: {len(images)} image(s) in {out}/")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m comfyfleet.dev.demo")
    parser.add_argument("--out", default="out", help="where the images go")
    parser.add_argument("--state-dir", default=".comfyfleet/demo", help="the stack's folder")
    parser.add_argument("--example", default="examples/hello.json", help="the model-free job")
    args = parser.parse_args(argv)
    return run(Path(args.out), Path(args.state_dir).resolve(), Path(args.example))


if __name__ == "__main__":
    sys.exit(main())
