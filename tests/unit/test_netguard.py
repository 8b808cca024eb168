"""The SSRF guard: which addresses outbound fetches refuse, and how the client enforces it."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from comfyfleet.netguard import (
    BlockedAddress,
    BlockedUrl,
    OutboundClient,
    TooManyRedirects,
    address_problem,
    redact_url,
    resolve_vetted,
)
from tests.origin_server import OriginServer, fake_resolver

BLOCKED = [
    ("169.254.169.254", "cloud metadata"),
    ("169.254.170.2", "cloud metadata"),
    ("fd00:ec2::254", "cloud metadata"),
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("::1", "loopback"),
    ("10.0.0.1", "private"),
    ("172.16.5.4", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("::", "unspecified"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("100.127.255.254", "carrier-grade NAT"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("192.0.2.1", "reserved"),
    ("198.18.0.1", "reserved"),
    ("2001:db8::1", "reserved"),
    ("fec0::1", "site-local"),
    # IPv6 spellings of IPv4 addresses are judged by the IPv4 address.
    ("::ffff:169.254.169.254", "cloud metadata"),
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:10.1.2.3", "private"),
    ("::ffff:100.64.0.1", "carrier-grade NAT"),
    ("::ffff:0.0.0.0", "unspecified"),
    ("::10.1.2.3", "private"),
    ("64:ff9b::a9fe:a9fe", "cloud metadata"),
    ("2002:a9fe:a9fe::1", "cloud metadata"),
    ("2001::1", "Teredo"),
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "52.216.0.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize(("address", "reason"), BLOCKED)
def test_blocked_ranges_are_refused_with_their_reason(address: str, reason: str) -> None:
    assert reason in (address_problem(address) or "")


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_problem(address) is None


@pytest.mark.parametrize("address", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_allow_loopback_permits_loopback_only(address: str) -> None:
    assert address_problem(address, allow_loopback=True) is None


@pytest.mark.parametrize(
    "address", [a for a, reason in BLOCKED if reason != "loopback" and "127.0.0.1" not in a]
)
def test_allow_loopback_still_refuses_everything_else(address: str) -> None:
    assert address_problem(address, allow_loopback=True) is not None


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("2130706433", "127.0.0.1"),  # decimal
        ("0x7f000001", "127.0.0.1"),  # hex
        ("0177.0.0.1", "127.0.0.1"),  # octal
        ("127.1", "127.0.0.1"),  # short form
        ("0x7f.1", "127.0.0.1"),
        ("0xa9fea9fe", "169.254.169.254"),
        ("2852039166", "169.254.169.254"),
    ],
)
def test_numeric_host_forms_are_judged_after_resolution(host: str, address: str) -> None:
    with pytest.raises(BlockedAddress) as caught:
        resolve_vetted(host, 443)
    assert caught.value.address == address
    assert host in str(caught.value)


def test_a_name_resolving_to_a_private_address_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resolver, _ = fake_resolver({"models.internal.example": ["10.20.30.40"]})
    monkeypatch.setattr(socket, "getaddrinfo", resolver)

    with pytest.raises(BlockedAddress) as caught:
        resolve_vetted("models.internal.example", 443)

    assert caught.value.reason == "private"
    assert "models.internal.example" in str(caught.value)
    assert "10.20.30.40" in str(caught.value)


def test_one_bad_address_among_good_ones_refuses_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resolver, _ = fake_resolver({"mixed.example": ["52.216.0.1", "169.254.169.254"]})
    monkeypatch.setattr(socket, "getaddrinfo", resolver)

    with pytest.raises(BlockedAddress, match="cloud metadata"):
        resolve_vetted("mixed.example", 443)


def test_client_refuses_metadata_before_connecting(monkeypatch: pytest.MonkeyPatch) -> None:
    resolver, calls = fake_resolver({"metadata.example": ["169.254.169.254"]})
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    connects: list[object] = []
    monkeypatch.setattr(socket.socket, "connect", lambda self, addr: connects.append(addr))

    with OutboundClient() as client, pytest.raises(BlockedAddress, match="metadata.example"):
        client.get("https://metadata.example/latest/meta-data/iam/")

    assert calls == ["metadata.example"]
    assert connects == []


@pytest.mark.parametrize(
    "url",
    [
        "https://169.254.169.254/latest/meta-data/",
        "https://[fd00:ec2::254]/latest/meta-data/",
        "https://[::ffff:169.254.169.254]/latest/meta-data/",
        "https://[::ffff:a9fe:a9fe]/",
        "https://2852039166/",
        "https://10.0.0.1/",
        "https://127.0.0.1/",
    ],
)
def test_client_refuses_blocked_ip_literals(url: str) -> None:
    with OutboundClient() as client, pytest.raises(BlockedAddress):
        client.get(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/model.safetensors",
        "ftp://example.com/model.safetensors",
        "file:///etc/passwd",
        "https://user:secret@example.com/x",
        "https:///no-host",
    ],
)
def test_client_refuses_urls_of_the_wrong_form(url: str) -> None:
    with OutboundClient() as client, pytest.raises(BlockedUrl) as caught:
        client.get(url)
    assert "secret" not in str(caught.value)


def test_loopback_is_served_only_with_the_flag() -> None:
    with OriginServer() as origin:
        url = origin.add("/a.bin", b"hello")
        with OutboundClient() as strict, pytest.raises(BlockedUrl):
            strict.get(url)  # plain http, and loopback: refused without the flag
        with OutboundClient() as strict, pytest.raises(BlockedAddress, match="loopback"):
            strict.get(url.replace("http://", "https://"))
        with OutboundClient(allow_loopback=True) as dev:
            assert dev.get(url).content == b"hello"


def test_plain_http_is_loopback_only_even_with_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    resolver, _ = fake_resolver({"public.example": ["52.216.0.1"]})
    monkeypatch.setattr(socket, "getaddrinfo", resolver)

    with OutboundClient(allow_loopback=True) as dev, pytest.raises(BlockedAddress, match="plain"):
        dev.get("http://public.example/model.safetensors")


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://10.0.0.1/",
        "http://internal.example/",
        "http://0xa9fea9fe/",
    ],
)
def test_a_redirect_to_a_blocked_host_is_refused(
    target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolver, _ = fake_resolver({"internal.example": ["192.168.1.10"]})
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    with OriginServer() as origin, OutboundClient(allow_loopback=True) as client:
        url = origin.redirect("/start", target)
        with pytest.raises(BlockedAddress):
            client.get(url)


def test_a_redirect_to_another_scheme_is_refused() -> None:
    with OriginServer() as origin, OutboundClient(allow_loopback=True) as client:
        url = origin.redirect("/start", "file:///etc/passwd")
        with pytest.raises(BlockedUrl, match="scheme"):
            client.get(url)


def test_redirects_are_followed_up_to_the_limit() -> None:
    with OriginServer() as origin, OutboundClient(allow_loopback=True, max_redirects=3) as client:
        origin.add("/end", b"done")
        for hop in range(5):
            origin.redirect(f"/r{hop}", f"/r{hop + 1}")
        origin.redirect("/r5", "/end")
        assert client.get(origin.url("/r3")).content == b"done"  # r3 → r4 → r5 → end
        with pytest.raises(TooManyRedirects):
            client.get(origin.url("/r2"))  # one hop more


def test_credentials_do_not_follow_a_redirect_to_another_host() -> None:
    with OriginServer() as origin, OutboundClient(allow_loopback=True) as client:
        origin.add("/file", b"x")
        url = origin.redirect("/start", origin.url("/file", host="localhost"))
        client.get(url, headers={"Authorization": "Bearer secret"})
        first, second = origin.seen
        assert first.headers.get("Authorization") == "Bearer secret"
        assert "Authorization" not in second.headers


def test_the_host_is_resolved_once_and_the_vetted_address_is_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A rebinding DNS server: loopback for the check, a private address afterwards.
    resolver, calls = fake_resolver({"rebind.example": ["127.0.0.1", "|", "10.0.0.1"]})
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    with OriginServer() as origin, OutboundClient(allow_loopback=True) as client:
        origin.add("/m.bin", b"payload")

        response = client.get(origin.url("/m.bin", host="rebind.example"))

        assert response.content == b"payload"
        assert calls == ["rebind.example"]
        assert origin.seen[0].headers["Host"] == f"rebind.example:{origin.port}"
        with pytest.raises(BlockedAddress, match="10.0.0.1"):
            # A new connection resolves again and meets the private answer.
            client.session.close()
            client.get(origin.url("/m.bin", host="rebind.example"))


def test_https_keeps_sni_and_certificate_checks_on_the_name(
    monkeypatch: pytest.MonkeyPatch, tls_files: tuple[Path, Path]
) -> None:
    cert, key = tls_files
    server_names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def note_server_name(sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        server_names.append(name)

    context.sni_callback = note_server_name
    resolver, _ = fake_resolver({"models.example.test": ["127.0.0.1"]})
    monkeypatch.setattr(socket, "getaddrinfo", resolver)

    with (
        OriginServer(ssl_context=context) as origin,
        OutboundClient(allow_loopback=True, verify=str(cert)) as client,
    ):
        origin.add("/m.bin", b"over tls")
        response = client.get(origin.url("/m.bin", host="models.example.test"))
        assert response.content == b"over tls"
        assert server_names == ["models.example.test"]
        assert origin.seen[0].headers["Host"] == f"models.example.test:{origin.port}"
        with pytest.raises(requests.exceptions.SSLError):
            client.get(origin.url("/m.bin", host="127.0.0.1"))  # the cert names the host


def test_proxies_from_the_environment_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://10.9.9.9:3128")
    monkeypatch.setenv("HTTPS_PROXY", "http://10.9.9.9:3128")
    with OriginServer() as origin, OutboundClient(allow_loopback=True) as client:
        assert client.get(origin.add("/a", b"direct")).content == b"direct"


def test_redacted_urls_carry_no_query_or_credentials() -> None:
    url = "https://user:pw@civitai.com/api/download/models/1?token=SECRET&type=Model#frag"
    redacted = redact_url(url)
    assert "SECRET" not in redacted and "pw" not in redacted
    assert redacted.startswith("https://civitai.com/api/download/models/1")


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A self-signed certificate for models.example.test, and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "models.example.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("models.example.test")]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    yield cert_path, key_path


def test_every_blocked_case_is_a_valid_address() -> None:
    for address, _ in BLOCKED:
        ipaddress.ip_address(address)
