"""moto's server on loopback, as the dev stack's and the tests' AWS endpoint.

moto applies DynamoDB requests without locking, so two concurrent transactions can both
pass a condition only one of them should (measured: 12 of 50 concurrent submits admitted
against a limit of 10). DynamoDB itself applies each request atomically; this server
serialises DynamoDB requests to behave the same. Other services stay concurrent, so an
SQS long poll never holds anything up.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server

_DYNAMODB_TARGET = "DynamoDB_"


class _AtomicDynamoDB:
    """WSGI middleware: one DynamoDB request at a time."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith(_DYNAMODB_TARGET):
            return self.app(environ, start_response)
        with self.lock:
            # Drain the body inside the lock: moto does its work while it is produced.
            return list(self.app(environ, start_response))


class LocalAws:
    """moto's server on 127.0.0.1 and an ephemeral port; a context manager."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> LocalAws:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )

        from comfyfleet.dev.moto_transactions import item_level_rollback

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        item_level_rollback()  # transactions at the cost of their items, not their tables
        app = _AtomicDynamoDB(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(
            self.host, self.port, app, threaded=True, request_handler=MotoRequestHandler
        )
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="local-aws", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> LocalAws:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
