"""The dev stack's HTTP front: a threaded http.server on loopback in front of LocalGateway.

It plays API Gateway's part for real HTTP clients (curl, the SDK, a browser): each request,
whatever its method, becomes one ``LocalGateway.request`` call, and its answer is written back
as it came; what the server refuses itself (a body too large, a malformed request) is answered
in the gateway's JSON error shape too, never with http.server's HTML page. HTTP/1.1 with
keep-alive, so a client's connection pool is reused as it would be against AWS.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar
from urllib.parse import urlsplit

from comfyfleet.api.local import LocalGateway, LocalResponse, gateway_response

# Not under "comfyfleet": the handlers hand that logger tree to Powertools when they start.
logger = logging.getLogger("devstack." + __name__.rsplit(".", 1)[-1])

# API Gateway's payload limit: larger bodies are refused before any function runs.
MAX_BODY_BYTES = 10 * 1024 * 1024
# Hop-by-hop headers the gateway answers itself.
_OWN_HEADERS = frozenset({"content-length", "connection", "transfer-encoding", "keep-alive"})


class HttpFront:
    """Serves ``gateway`` on ``host:port`` (port 0: an ephemeral one) in a thread."""

    def __init__(self, gateway: LocalGateway, host: str = "127.0.0.1", port: int = 0) -> None:
        self.gateway = gateway
        self._server = ThreadingHTTPServer((host, port), _handler_for(gateway))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> HttpFront:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="http-front",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.server_close()


class _GatewayHandler(BaseHTTPRequestHandler):
    """One request: its body read within API Gateway's limits, passed to the gateway, and
    the gateway's answer written back."""

    gateway: ClassVar[LocalGateway]  # set per front by _handler_for
    protocol_version = "HTTP/1.1"
    server_version = "comfyfleet-dev"
    # Headers and body leave in one segment: written separately, Nagle's algorithm and
    # the client's delayed ACK add ~40 ms to every keep-alive response.
    disable_nagle_algorithm = True
    wbufsize = 64 * 1024  # handle_one_request flushes after each response

    def _serve(self) -> None:
        body = self._read_body()
        if body is None:
            return
        target = urlsplit(self.path)
        response = self.gateway.request(
            self.command,
            target.path,
            target.query,
            list(self.headers.items()),
            body,
            source_ip=self.client_address[0],
        )
        self._answer(response)

    # -- the answer ------------------------------------------------------------------------

    def _answer(self, response: LocalResponse, *, close: bool = False) -> None:
        """Write the gateway's answer back as it came, less the headers this server owns."""
        self.send_response(response.status)
        for name, value in response.headers.items():
            if name.lower() not in _OWN_HEADERS:
                self.send_header(name, value)
        payload = b"" if self.command == "HEAD" else response.body
        self.send_header("Content-Length", str(len(payload)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(payload)

    def _refuse(self, status: int, message: str) -> None:
        """Refuse the request before the gateway sees it; the connection closes (what is
        left of the request is not read)."""
        self._answer(gateway_response(status, message), close=True)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """What http.server refuses itself (a malformed request line, headers too long), in
        the gateway's JSON shape rather than its HTML page."""
        self._refuse(code, message or HTTPStatus(code).phrase)

    # -- the request body ------------------------------------------------------------------

    def _read_body(self) -> bytes | None:
        """The request body (None after answering a bad one)."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self._refuse(400, "bad Content-Length")
            return None
        if length > MAX_BODY_BYTES:
            self._refuse(413, "Request Entity Too Large")
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes | None:
        chunks: list[bytes] = []
        total = 0
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.rfile.readline()
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                self._refuse(413, "Request Entity Too Large")
                return None
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    def __getattr__(self, name: str) -> Callable[[], None]:
        # http.server looks for do_<METHOD> and answers its own 501 page when there is none:
        # every method goes to the gateway instead, which answers as API Gateway does.
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("%s " + format, self.address_string(), *args)


def _handler_for(gateway: LocalGateway) -> type[BaseHTTPRequestHandler]:
    """A handler class serving ``gateway``: http.server builds one handler per request from a
    class, so each front gets its own subclass carrying its gateway."""

    class GatewayHandler(_GatewayHandler):
        pass

    GatewayHandler.gateway = gateway
    return GatewayHandler
