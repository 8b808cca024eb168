"""Outbound HTTP that cannot be pointed at the deployment's own network (DESIGN §10).

Every fetch of a user-supplied URL — the agent's model downloads, the webhook POSTs — goes
through :class:`OutboundClient`. A host is resolved **once**, inside the connection itself,
every address it resolves to is vetted, and the socket connects to a vetted address: there is
no second lookup a rebinding DNS server could answer differently. The request keeps naming
the host, so the ``Host`` header, TLS SNI and certificate checks are those of the name, not of
the IP. Redirects are followed here, one hop at a time, each hop re-checked from scratch.

Why a urllib3 connection class rather than rewriting the URL to the IP: rewriting needs the
Host header, SNI and ``assert_hostname`` patched back per request and defeats connection
pooling; overriding ``_new_conn`` (the one place urllib3 resolves and connects) keeps
everything else stock, and the check cannot be skipped by any request the session sends,
including ones requests builds itself.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.timeout import _DEFAULT_TIMEOUT

from comfyfleet.address_policy import (
    AddrInfo,
    BlockedAddress,
    FetchRefused,
    IPAddress,
    address_problem,
    resolve_vetted,
    vet_address,
)

# The address rules live in comfyfleet.address_policy; callers keep importing them from here.
__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_REDIRECTS",
    "AddrInfo",
    "BlockedAddress",
    "BlockedUrl",
    "FetchRefused",
    "GuardedAdapter",
    "IPAddress",
    "OutboundClient",
    "TooManyRedirects",
    "address_problem",
    "redact_url",
    "resolve_vetted",
    "vet_address",
]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = (10.0, 60.0)  # seconds: connect, then between bytes read
MAX_REDIRECTS = 5
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Headers that must not follow a redirect to another host.
_CREDENTIAL_HEADERS = ("Authorization", "Cookie", "Proxy-Authorization")


class BlockedUrl(FetchRefused):
    """A URL (or a redirect's target) the guard refuses before resolving anything."""


class TooManyRedirects(FetchRefused):
    """A fetch redirected more often than allowed."""


def _connect(conn: HTTPConnection, allow_loopback: bool, loopback_only: bool) -> socket.socket:
    """What urllib3's ``_new_conn`` does, but connecting only to vetted addresses."""
    host = conn._dns_host.strip("[]")
    try:
        infos = resolve_vetted(
            host, conn.port, allow_loopback=allow_loopback, loopback_only=loopback_only
        )
    except socket.gaierror as exc:
        raise NameResolutionError(conn.host, conn, exc) from exc
    error: OSError | None = None
    for family, kind, proto, _, sockaddr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            for level, option, value in conn.socket_options or ():
                sock.setsockopt(level, option, value)
            if conn.timeout is not _DEFAULT_TIMEOUT:
                sock.settimeout(conn.timeout)
            if conn.source_address:
                sock.bind(conn.source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    if isinstance(error, TimeoutError):
        message = f"Connection to {conn.host} timed out. (connect timeout={conn.timeout})"
        raise ConnectTimeoutError(conn, message) from error
    raise NewConnectionError(conn, f"Failed to establish a new connection: {error}")


class _PublicHTTPSConnection(HTTPSConnection):
    allow_loopback: ClassVar[bool] = False

    def _new_conn(self) -> socket.socket:
        return _connect(self, self.allow_loopback, loopback_only=False)


class _DevHTTPSConnection(_PublicHTTPSConnection):
    allow_loopback = True


class _LoopbackHTTPConnection(HTTPConnection):
    """Plain http exists only for the dev stack's loopback servers."""

    def _new_conn(self) -> socket.socket:
        return _connect(self, allow_loopback=True, loopback_only=True)


class _RefusedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        raise BlockedUrl(f"plain http to {self.host!r} is refused; use https")


class _PublicHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _PublicHTTPSConnection


class _DevHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _DevHTTPSConnection


class _LoopbackHTTPPool(HTTPConnectionPool):
    ConnectionCls = _LoopbackHTTPConnection


class _RefusedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _RefusedHTTPConnection


class GuardedAdapter(HTTPAdapter):
    """A requests adapter whose every connection goes to a vetted address, never a proxy."""

    def __init__(self, *, allow_loopback: bool = False, pool_maxsize: int = 10) -> None:
        self.allow_loopback = allow_loopback
        super().__init__(pool_maxsize=pool_maxsize, max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        pools: dict[str, type[HTTPConnectionPool]] = (
            {"https": _DevHTTPSPool, "http": _LoopbackHTTPPool}
            if self.allow_loopback
            else {"https": _PublicHTTPSPool, "http": _RefusedHTTPPool}
        )
        self.poolmanager.pool_classes_by_scheme = pools

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        # Through a proxy the address we vet is the proxy's, not the target's.
        raise BlockedUrl("guarded fetches never go through a proxy")


def redact_url(url: str) -> str:
    """``url`` fit for logs and error messages: no user info, query string or fragment.

    Query strings carry credentials (civitai ``token=``, presigned signatures).
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparsable URL>"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "?…" if parts.query else "", ""))


class _RedactRequestTargets(logging.Filter):
    """Strip query strings from urllib3's DEBUG lines, which quote each request target."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                arg.split("?", 1)[0] + "?…" if isinstance(arg, str) and "?" in arg else arg
                for arg in record.args
            )
        return True


# Module-wide on purpose: a token must not reach a log whichever session sent it.
logging.getLogger("urllib3.connectionpool").addFilter(_RedactRequestTargets())


@dataclass(frozen=True, slots=True)
class _Hop:
    scheme: str
    host: str


class OutboundClient:
    """A requests session for user-supplied URLs: vetted addresses, re-checked redirects.

    ``allow_loopback`` is for the dev stack (``--allow-local-urls``) only: it permits
    127.0.0.0/8 and ::1, and plain http to those; every other rule still applies.
    """

    def __init__(
        self,
        *,
        allow_loopback: bool = False,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        max_redirects: int = MAX_REDIRECTS,
        verify: bool | str = True,
        pool_maxsize: int = 10,
    ) -> None:
        self.allow_loopback = allow_loopback
        self.timeout = timeout
        self.max_redirects = max_redirects
        self.session = requests.Session()
        self.session.trust_env = False  # no proxies, no .netrc credentials from the host
        self.session.verify = verify
        adapter = GuardedAdapter(allow_loopback=allow_loopback, pool_maxsize=pool_maxsize)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)

    def check_url(self, url: str) -> None:
        """Raise BlockedUrl unless ``url``'s form may be fetched (addresses are vetted later)."""
        self._hop(url)

    def _hop(self, url: str) -> _Hop:
        try:
            parts = urlsplit(url)
            _ = parts.port  # raises ValueError on a bad port
        except ValueError:
            raise BlockedUrl(f"URL {redact_url(url)} cannot be parsed") from None
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").rstrip(".")
        if scheme != "https" and not (scheme == "http" and self.allow_loopback):
            raise BlockedUrl(f"scheme {scheme or '(none)'!r} for {host!r} is refused; use https")
        if not host:
            raise BlockedUrl(f"URL {redact_url(url)} has no host")
        if parts.username is not None or parts.password is not None:
            raise BlockedUrl(f"URL for {host!r} must not carry a user name or password")
        return _Hop(scheme, host)

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
        stream: bool = False,
    ) -> requests.Response:
        """Send a request, following up to ``max_redirects`` redirects, each re-vetted.

        Raises FetchRefused (BlockedUrl, BlockedAddress, TooManyRedirects) for what the
        guard refuses, requests' exceptions for network failures. The caller closes the
        response (use it as a context manager when streaming).
        """
        send_headers = dict(headers or {})
        hop = self._hop(url)
        for _ in range(self.max_redirects + 1):
            response = self.session.request(
                method,
                url,
                headers=send_headers,
                data=data,
                stream=stream,
                timeout=self.timeout,
                allow_redirects=False,
            )
            location = response.headers.get("Location")
            if response.status_code not in _REDIRECT_STATUSES or not location:
                return response
            response.close()
            target = urljoin(url, location)
            next_hop = self._hop(target)
            if next_hop.scheme == "http" and hop.scheme == "https":
                raise BlockedUrl(f"redirect from https to plain http ({next_hop.host!r}) refused")
            if next_hop.host != hop.host:
                for name in _CREDENTIAL_HEADERS:
                    send_headers.pop(name, None)
            if response.status_code == 303 or (
                response.status_code in (301, 302) and method == "POST"
            ):
                method, data = "GET", None
            logger.info(
                "following redirect",
                extra={"status": response.status_code, "to": redact_url(target)},
            )
            url, hop = target, next_hop
        raise TooManyRedirects(f"more than {self.max_redirects} redirects, last to {hop.host!r}")

    def get(
        self, url: str, *, headers: Mapping[str, str] | None = None, stream: bool = False
    ) -> requests.Response:
        """GET ``url`` under the guard (see :meth:`request`)."""
        return self.request("GET", url, headers=headers, stream=stream)

    def close(self) -> None:
        """Close the session's pooled connections."""
        self.session.close()

    def __enter__(self) -> OutboundClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
