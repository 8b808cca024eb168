"""Which addresses outbound fetches may reach, and the one lookup that vets a host (DESIGN §10).

The policy half of comfyfleet.netguard, which connects only to what :func:`resolve_vetted`
returns; import these names from there. Kept apart so the rules can be read (and tested)
without the urllib3 plumbing that enforces them.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


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
