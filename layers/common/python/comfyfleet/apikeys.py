"""API keys and webhook secrets: how they are made and recognised.

A key is ``sk_live_`` and 43 URL-safe characters (32 random bytes). Only its SHA-256 is
stored; its first 16 characters are its public id, safe to list and log.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

KEY_PREFIX = "sk_live_"
KEY_ID_LENGTH = 16
_KEY_SHAPE = re.compile(r"^sk_live_[A-Za-z0-9_-]{43}$")


def new_api_key() -> tuple[str, str, str]:
    """A fresh key: (plaintext, key id, key hash)."""
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    return plaintext, plaintext[:KEY_ID_LENGTH], hash_key(plaintext)


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def looks_like_key(text: str) -> bool:
    """Whether ``text`` has the shape of a key (checked before any lookup)."""
    return bool(_KEY_SHAPE.match(text))


def new_webhook_secret() -> str:
    """A Standard Webhooks signing secret: ``whsec_`` and base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
