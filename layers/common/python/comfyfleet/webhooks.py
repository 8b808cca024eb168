"""Webhook signatures per the Standard Webhooks spec (standardwebhooks.com), both ends.

A delivery carries three headers::

    webhook-id:        the event id (stable across retries and replays)
    webhook-timestamp: integer seconds since the epoch, when this attempt was signed
    webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>"> [v1,<…> …]

The key is the secret's part after ``whsec_``, base64-decoded. After a secret rotation the
header carries one signature per live secret (old and new, for a grace period), so a
receiver holding either verifies. :func:`verify` is the receiving end, shipped in the
client package::

    from comfyfleet.webhooks import verify, WebhookVerificationError
    event = verify(request.headers, request.body, "whsec_…")
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from comfyfleet.apikeys import new_webhook_secret
from comfyfleet.domain import Account

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_SECONDS = 300


class WebhookVerificationError(ValueError):
    """A webhook failed verification; the message says which check failed."""


def _key(secret: str) -> bytes:
    raw = secret[len(SECRET_PREFIX) :] if secret.startswith(SECRET_PREFIX) else secret
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is 'whsec_' followed by base64") from None
    if not key:
        raise ValueError("the webhook secret is empty")
    return key


def _as_bytes(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else body


def sign(secret: str, message_id: str, timestamp: int, body: bytes | str) -> str:
    """One signature, ``v1,<base64>``, of a message with this id, timestamp and body."""
    signed = f"{message_id}.{timestamp}.".encode() + _as_bytes(body)
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def signature_headers(
    secrets: Sequence[str], message_id: str, body: bytes | str, *, timestamp: int
) -> dict[str, str]:
    """The three Standard Webhooks headers, signed with each of ``secrets`` (newest first)."""
    if not secrets:
        raise ValueError("at least one secret signs a webhook")
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(s, message_id, timestamp, body) for s in secrets),
    }


def verify(
    headers: Mapping[str, str],
    body: bytes | str,
    secret: str,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    *,
    now: float | None = None,
) -> Any:
    """Check a received webhook; return its parsed JSON body.

    Raises WebhookVerificationError when a header is missing, the timestamp is further than
    ``tolerance`` seconds from now (a replayed capture), or no ``v1`` signature among the
    space-separated ones matches ``secret``. Header names are case-insensitive.
    """
    lower = {name.lower(): value for name, value in headers.items()}
    message_id = lower.get("webhook-id")
    stamp = lower.get("webhook-timestamp")
    signatures = lower.get("webhook-signature")
    if not message_id or not stamp or not signatures:
        raise WebhookVerificationError(
            "missing header: webhook-id, webhook-timestamp and webhook-signature are required"
        )
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not an integer") from None
    current = time.time() if now is None else now
    if timestamp < current - tolerance:
        raise WebhookVerificationError("webhook-timestamp is too old")
    if timestamp > current + tolerance:
        raise WebhookVerificationError("webhook-timestamp is too far in the future")
    expected = sign(secret, message_id, timestamp, body).split(",", 1)[1].encode()
    for candidate in signatures.split(" "):
        version, _, value = candidate.partition(",")
        if version == SIGNATURE_VERSION and hmac.compare_digest(value.encode(), expected):
            try:
                return json.loads(_as_bytes(body))
            except ValueError:
                raise WebhookVerificationError("the body is not JSON") from None
    raise WebhookVerificationError("no signature matches the secret")


# -- the sending side: which secrets sign, and rotation ------------------------------------------


def signing_secrets(account: Account, now: float) -> list[str]:
    """The secrets that sign the account's webhooks now: its current one, and the previous
    one while its grace period after a rotation lasts."""
    secrets = [account.webhook_secret]
    previous, until = account.previous_webhook_secret, account.previous_secret_expires_at
    if previous and until is not None and now < until and previous != account.webhook_secret:
        secrets.append(previous)
    return secrets


def rotated(account: Account, *, now: float, grace_seconds: int) -> Account:
    """The account with a fresh secret; the old one keeps signing for ``grace_seconds``.

    Rotating again within a grace period drops the oldest secret: at most two sign at once.
    """
    return replace(
        account,
        webhook_secret=new_webhook_secret(),
        previous_webhook_secret=account.webhook_secret if grace_seconds > 0 else None,
        previous_secret_expires_at=now + grace_seconds if grace_seconds > 0 else None,
    )
