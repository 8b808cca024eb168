"""Serving a ``FakeComfy``: in a background thread (tests, embedding) or blocking (the CLI)."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from fakecomfy.server import FakeComfy

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
# How long stopping waits for open requests (a WebSocket is closed first, so this is short).
SHUTDOWN_TIMEOUT_S = 2.0


class RunningFakeComfy:
    """A ``FakeComfy`` answering on ``url`` from its own thread and event loop.

    ``stop`` (or leaving a ``with`` block) closes sockets, interrupts the running prompt,
    joins the worker and server threads and releases the port.
    """

    def __init__(
        self,
        fake: FakeComfy,
        host: str,
        port: int,
        loop: asyncio.AbstractEventLoop,
        thread: threading.Thread,
    ) -> None:
        self.fake = fake
        self.host = host
        self.port = port
        self.url = f"http://{host}:{port}"
        self.ws_url = f"ws://{host}:{port}/ws"
        self._loop = loop
        self._thread = thread

    @property
    def root(self) -> Path:
        return self.fake.folders.root

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and wait for the threads to end (idempotent)."""
        if self._thread.is_alive() and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._loop.stop)
            except RuntimeError:  # the loop closed meanwhile
                pass
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.error("fakecomfy did not stop in time", extra={"url": self.url})

    def __enter__(self) -> RunningFakeComfy:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()


def start_fakecomfy(
    root: Path,
    *,
    port: int = 0,
    host: str = LOOPBACK,
    step_seconds: float = 0.05,
    previews: bool = False,
    catalogue: dict[str, Any] | None = None,
    timeout: float = 10.0,
) -> RunningFakeComfy:
    """Serve a new ``FakeComfy`` over ``root`` on ``host:port`` (0: an ephemeral port).

    Returns once the port accepts connections, like a real ComfyUI whose port opens only when
    it is ready; raises what prevented it from starting (e.g. the port is taken).
    """
    fake = FakeComfy(root, step_seconds=step_seconds, previews=previews, catalogue=catalogue)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    started: dict[str, Any] = {}

    def serve_in_thread() -> None:
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(
            fake.make_app(), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S
        )
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, host, port)
            loop.run_until_complete(site.start())
            started["port"] = runner.addresses[0][1]
        except BaseException as exc:  # reported to the caller of start_fakecomfy
            started["error"] = exc
        ready.set()
        try:
            if "error" not in started:
                loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.close()

    thread = threading.Thread(target=serve_in_thread, name="fakecomfy-server", daemon=True)
    thread.start()
    if not ready.wait(timeout):
        raise TimeoutError(f"fakecomfy did not start within {timeout} s")
    if "error" in started:
        thread.join(timeout)
        raise started["error"]
    running = RunningFakeComfy(fake, host, started["port"], loop, thread)
    logger.info("fakecomfy started", extra={"url": running.url, "root": str(root)})
    return running


def serve(
    host: str,
    port: int,
    root: Path,
    *,
    step_seconds: float = 0.05,
    previews: bool = False,
    catalogue: dict[str, Any] | None = None,
) -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM), then stop cleanly."""
    fake = FakeComfy(root, step_seconds=step_seconds, previews=previews, catalogue=catalogue)
    logger.info("fakecomfy serving", extra={"host": host, "port": port, "root": str(root)})
    web.run_app(
        fake.make_app(),
        host=host,
        port=port,
        access_log=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        print=lambda message: logger.info("%s", message.strip()),
    )
