"""A model origin on loopback for tests: Range, If-Range, redirects, drops and failures.

``OriginServer`` serves byte strings by path from ``http.server`` on 127.0.0.1 and an
ephemeral port (optionally over TLS), and records every request it sees. Per path it can
redirect, answer error statuses first, drop the connection once after N body bytes, ignore
``Range``, send the body chunked (no Content-Length), or hold its answers until released.
"""

from __future__ import annotations

import hashlib
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

_RANGE = re.compile(r"^bytes=(\d+)-$")


@dataclass
class SeenRequest:
    method: str
    path: str  # with its query string
    headers: dict[str, str]


@dataclass
class Behaviour:
    """How one path misbehaves; each one-shot behaviour is used up when it fires."""

    drop_after: int | None = None  # close the connection after this many body bytes, once
    statuses: list[int] = field(default_factory=list)  # answer these first, in order
    ignore_range: bool = False
    chunked: bool = False
    hold: threading.Event | None = None  # answer each GET only once this is set


class OriginServer:
    """A loopback HTTP(S) server of files, redirects and scripted failures."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.files: dict[str, bytes] = {}
        self.redirects: dict[str, tuple[int, str]] = {}
        self.behaviour: dict[str, Behaviour] = {}
        self.seen: list[SeenRequest] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        if ssl_context is not None:
            self._server.socket = ssl_context.wrap_socket(self._server.socket, server_side=True)
        self.scheme = "https" if ssl_context is not None else "http"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def add(self, path: str, body: bytes, **behaviour: Any) -> str:
        """Serve ``body`` at ``path``; return its URL."""
        self.files[path] = body
        self.behaviour[path] = Behaviour(**behaviour)
        return self.url(path)

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        self.redirects[path] = (status, location)
        return self.url(path)

    def requests_for(self, path: str) -> list[SeenRequest]:
        with self._lock:
            return [seen for seen in self.seen if urlsplit(seen.path).path == path]

    def __enter__(self) -> OriginServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _record(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.seen.append(SeenRequest(handler.command, handler.path, dict(handler.headers)))


def _handler_for(origin: OriginServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            origin._record(self)
            path = urlsplit(self.path).path
            if path in origin.redirects:
                status, location = origin.redirects[path]
                self._reply(status, b"", {"Location": location})
                return
            body = origin.files.get(path)
            behaviour = origin.behaviour.get(path, Behaviour())
            if body is None:
                self._reply(404, b"not found")
                return
            if behaviour.statuses:
                self._reply(behaviour.statuses.pop(0), b"try again")
                return
            if behaviour.hold is not None:
                behaviour.hold.wait(30)
            etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            start = 0
            match = _RANGE.match(self.headers.get("Range", ""))
            if_range = self.headers.get("If-Range")
            if match and not behaviour.ignore_range and if_range in (None, etag):
                start = int(match.group(1))
                if start >= len(body):
                    self._reply(416, b"", {"Content-Range": f"bytes */{len(body)}"})
                    return
            self.send_response(206 if start else 200)
            self.send_header("ETag", etag)
            self.send_header("Accept-Ranges", "bytes")
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            payload = body[start:]
            if behaviour.chunked:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for offset in range(0, len(payload), 65536):
                    piece = payload[offset : offset + 65536]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")
                return
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if behaviour.drop_after is not None:
                cut, behaviour.drop_after = behaviour.drop_after, None
                self.wfile.write(payload[:cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(payload)

        def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


def fake_resolver(
    names: dict[str, list[str]], real: Any = socket.getaddrinfo
) -> tuple[Any, list[str]]:
    """A getaddrinfo answering ``names`` from the table (others really); and its call log.

    A name maps to a list of addresses, or to several lists separated by ``"|"`` entries,
    answered in turn on successive lookups (a rebinding DNS server).
    """
    calls: list[str] = []
    answers: dict[str, Iterator[list[str]]] = {}

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in names:
            return real(host, port, *args, **kwargs)
        calls.append(host)
        if host not in answers:
            answers[host] = _rounds(names[host])
        result = []
        for address in next(answers[host]):
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            number = int(port or 0)
            sockaddr = (address, number, 0, 0) if ":" in address else (address, number)
            result.append((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
        return result

    return getaddrinfo, calls


def _rounds(addresses: list[str]) -> Iterator[list[str]]:
    rounds: list[list[str]] = [[]]
    for address in addresses:
        if address == "|":
            rounds.append([])
        else:
            rounds[-1].append(address)
    while True:
        yield from rounds[:-1]
        while True:
            yield rounds[-1]
