"""The chaos run's loopback servers: a model origin and a webhook receiver that checks every
signature and fails a share of first deliveries (so retries and their ids are exercised)."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from comfyfleet.webhooks import WebhookVerificationError, verify


class _Server:
    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class ModelOrigin(_Server):
    """Serves one file (a placeholder checkpoint fakecomfy's loaders accept)."""

    def __init__(self, path: str, data: bytes) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != path:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                self.wfile.write(data)

            def do_HEAD(self) -> None:
                self.send_response(200 if self.path == path else 404)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(Handler)
        self.path = path


@dataclass
class JobEvents:
    """What one job's deliveries said."""

    ids: set[str] = field(default_factory=set)
    endings: set[tuple[str, str, str]] = field(default_factory=set)  # type, status, ended at
    deliveries: int = 0


@dataclass
class Receiver(_Server):
    """Verifies each delivery with the accounts' secrets; answers 500 to the first delivery
    of a share of the events (picked by the event id's hash), 200 to the rest."""

    secrets: list[str] = field(default_factory=list)
    fail_share: float = 0.2
    events: dict[str, JobEvents] = field(default_factory=lambda: defaultdict(JobEvents))
    refused: int = 0  # deliveries answered 500 on purpose
    unsigned: int = 0  # deliveries no secret verifies
    _seen: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = receiver.take(dict(self.headers), body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(Handler)

    def add_secrets(self, secrets: Iterable[str]) -> None:
        self.secrets.extend(secrets)

    def _fails_first(self, event_id: str) -> bool:
        digest = hashlib.sha256(event_id.encode()).digest()
        return int.from_bytes(digest[:4], "big") / 2**32 < self.fail_share

    def take(self, headers: dict[str, str], body: bytes) -> int:
        event = self._verified(headers, body)
        if event is None:
            with self._lock:
                self.unsigned += 1
            return 401
        event_id = str(headers.get("webhook-id") or headers.get("Webhook-Id"))
        with self._lock:
            first = event_id not in self._seen
            self._seen.add(event_id)
            if first and self._fails_first(event_id):
                self.refused += 1
                return 500
            seen = self.events[str(event["job_id"])]
            seen.ids.add(event_id)
            seen.deliveries += 1
            ended = str(event.get("completed_at") or event.get("ended_at") or "")
            seen.endings.add((str(event["type"]), str(event.get("status")), ended))
        return 200

    def _verified(self, headers: dict[str, str], body: bytes) -> dict[str, Any] | None:
        for secret in self.secrets:
            try:
                document = verify(headers, body, secret)
            except WebhookVerificationError:
                continue
            return dict(document) if isinstance(document, dict) else json.loads(body)
        return None
