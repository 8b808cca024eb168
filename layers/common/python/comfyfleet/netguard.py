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

import ipaddress
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

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_TIMEOUT = (10.0, 60.0)  # seconds: connect, then between bytes read
MAX_REDIRECTS = 5
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Headers that must not follow a redirect to another host.
_CREDENTIAL_HEADERS = ("Authorization", "Cookie", "Proxy-Authorization")


def _networks(*cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


# First match names the reason; anything not matched must still be globally routable.
_METADATA = _networks(
    "169.254.169.254/32",  # EC2 instance metadata (IMDS)
    "169.254.170.2/32",  # ECS task metadata and credentials
    "169.254.170.23/32",  # EKS pod identity agent
    "fd00:ec2::254/128",  # IMDS over IPv6
    "fd00:ec2::23/128",  # EKS pod identity agent over IPv6
)
_LOOPBACK = _networks("127.0.0.0/8", "::1/128")
_BLOCKED: tuple[tuple[str, tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]], ...] = (
    ("unspecified", _networks("0.0.0.0/8", "::/128")),
    ("link-local", _networks("169.254.0.0/16", "fe80::/10")),
    ("private", _networks("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")),
    ("carrier-grade NAT", _networks("100.64.0.0/10")),
    ("multicast", _networks("224.0.0.0/4", "ff00::/8")),
    ("site-local", _networks("fec0::/10")),
    ("local-use NAT64", _networks("64:ff9b:1::/48")),
    (
        "reserved",
        _networks(
            "192.0.0.0/24",  # IETF protocol assignments
            "192.0.2.0/24",  # documentation
            "198.18.0.0/15",  # benchmarking
            "198.51.100.0/24",  # documentation
            "203.0.113.0/24",  # documentation
            "240.0.0.0/4",  # future use, and the broadcast address
            "100::/64",  # discard-only
            "2001:db8::/32",  # documentation
        ),
    ),
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class FetchRefused(ValueError):
    """An outbound fetch the guard will not make; the message says why."""


class BlockedAddress(FetchRefused):
    """A host resolves to an address outbound fetches must not reach."""

    def __init__(self, host: str, address: str, reason: str) -> None:
        super().__init__(f"host {host!r} resolves to {address}, a {reason} address: refused")
        self.host = host
        self.address = address
        self.reason = reason


class BlockedUrl(FetchRefused):
    """A URL (or a redirect's target) the guard refuses before resolving anything."""


class TooManyRedirects(FetchRefused):
    """A fetch redirected more often than allowed."""


def address_problem(address: str | IPAddress, *, allow_loopback: bool = False) -> str | None:
    """Why an outbound fetch must not connect to ``address``, or None if it may.

    IPv6 forms that embed an IPv4 address (mapped, compatible, NAT64, 6to4) are judged by
    the address they embed, so ``::ffff:169.254.169.254`` is the metadata endpoint; Teredo
    tunnels are refused outright.
    """
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.teredo is not None:
            return "Teredo tunnel"
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            problem = address_problem(embedded, allow_loopback=allow_loopback)
            return None if problem is None else f"{problem} (embedded in {ip})"
    if any(ip in net for net in _METADATA):
        return "cloud metadata"
    if any(ip in net for net in _LOOPBACK):
        return None if allow_loopback else "loopback"
    for reason, networks in _BLOCKED:
        if any(ip in net for net in networks):
            return reason
    if not ip.is_global or ip.is_multicast or ip.is_reserved:
        return "non-public"
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form routes to: mapped, compatible, NAT64 or 6to4."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1):  # not :: or ::1
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def vet_address(host: str, address: str, *, allow_loopback: bool = False) -> None:
    """Raise BlockedAddress if ``host``'s resolved ``address`` must not be connected to."""
    problem = address_problem(address.split("%", 1)[0], allow_loopback=allow_loopback)
    if problem is not None:
        raise BlockedAddress(host, address, problem)


AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, Any]


def resolve_vetted(
    host: str, port: int, *, allow_loopback: bool = False, loopback_only: bool = False
) -> list[AddrInfo]:
    """Resolve ``host`` once and vet every address; the result is what to connect to.

    Any one bad address refuses the host: a name answering with both a public and a private
    address is the shape of a rebinding attack, not a misconfiguration to work around.
    """
    infos: list[AddrInfo] = list(socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM))
    for info in infos:
        address = str(info[4][0])
        vet_address(host, address, allow_loopback=allow_loopback)
        if loopback_only and address_problem(address) != "loopback":
            raise BlockedAddress(host, address, "non-loopback (plain http is loopback only)")
    return infos


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
