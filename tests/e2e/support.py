"""What the end-to-end tests share: graphs, a webhook receiver, reading PNGs behind links."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests
from PIL import Image

from tests.support import checkpoint_graph


def fetch_png(url: str) -> Image.Image:
    """The image behind an output link, fetched as a browser would (no API key)."""
    response = requests.get(url, timeout=10)
    assert response.status_code == 200, response.text[:200]
    assert response.content[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image


def loader_graph(checkpoint_url: str) -> dict[str, Any]:
    """A loader node naming a model by URL, feeding a saved image (no sampler)."""
    return checkpoint_graph(checkpoint_url)


def eventually(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1) -> Any:
    """``check()``'s first truthy answer within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        if answer:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {check}")
        time.sleep(interval)


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes


class WebhookReceiver:
    """A loopback HTTP server recording every POST and answering 200."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.deliveries.append(Delivery(self.path, dict(self.headers), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def received(self, path: str) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if d.path == path]

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
