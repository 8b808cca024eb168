"""Checks of request values that pydantic's types do not express.

Identifiers are checked for shape before any lookup: a store given a 3 KB "job id" would
fail with a storage error (a 5xx) where the client deserves a 404.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any
from urllib.parse import urlsplit

from comfyfleet.api.errors import InvalidRequest
from comfyfleet.api.idempotency import MAX_KEY_LENGTH
from comfyfleet.api.models import MAX_METADATA_BYTES

_JOB_ID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
_ACCOUNT_ID = re.compile(r"^acct_[0-9A-HJKMNP-TV-Z]{26}$")
_KEY_ID = re.compile(r"^sk_live_[A-Za-z0-9_-]{8}$")
_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_PRINTABLE = re.compile(r"^[\x21-\x7e][\x20-\x7e]*$")
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
MAX_WEBHOOK_URL_LENGTH = 2048


def is_job_id(value: str) -> bool:
    return bool(_JOB_ID.match(value))


def is_account_id(value: str) -> bool:
    return bool(_ACCOUNT_ID.match(value))


def is_key_id(value: str) -> bool:
    return bool(_KEY_ID.match(value))


def is_node_id(value: str) -> bool:
    return bool(_NODE_ID.match(value))


def check_webhook_url(url: str, *, allow_local: bool) -> None:
    """https with a host name and no user info (loopback http only in development)."""
    problem = _webhook_problem(url, allow_local)
    if problem:
        raise InvalidRequest(
            "webhook_url is not allowed", [{"field": "body.webhook_url", "message": problem}]
        )


def _webhook_problem(url: str, allow_local: bool) -> str | None:
    if len(url) > MAX_WEBHOOK_URL_LENGTH or any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        return "must be a URL of at most 2048 characters without spaces"
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".").lower()
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return "is not a URL"
    if parts.username is not None or parts.password is not None:
        return "must not carry a user name or password"
    if not host:
        return "must name a host"
    if host in _LOOPBACK_HOSTS:
        if allow_local and parts.scheme in ("http", "https"):
            return None
        return "must not name a loopback host"
    if parts.scheme != "https":
        return "must be an https URL"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None  # a host name: resolved (and checked again) when the webhook is sent
    if not address.is_global:
        return "must not name a private, loopback or link-local address"
    return None


def check_metadata(metadata: dict[str, Any] | None) -> None:
    if metadata is None:
        return
    size = len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_METADATA_BYTES:
        raise InvalidRequest(
            "metadata is too large",
            [
                {
                    "field": "body.metadata",
                    "message": f"is {size} bytes as JSON; at most {MAX_METADATA_BYTES}",
                }
            ],
        )


def check_idempotency_key(key: str) -> None:
    if len(key) > MAX_KEY_LENGTH or not _PRINTABLE.match(key):
        raise InvalidRequest(
            "Idempotency-Key is not usable",
            [
                {
                    "field": "header.Idempotency-Key",
                    "message": f"1 to {MAX_KEY_LENGTH} printable ASCII characters",
                }
            ],
        )
