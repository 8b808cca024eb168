"""Who is calling, as the authorizer said, and what each path requires of them.

The api function trusts only ``requestContext.authorizer``: API Gateway puts there what the
authorizer function returned, and nothing a client sends can change it. Values there are
strings (API Gateway's rule), so scopes are comma separated and limits are JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from comfyfleet.domain import Counters, Limits, Scope
from comfyfleet.settings import Settings

# Paths anyone may call: the deployment gives them no authorizer (see functions/authorizer).
PUBLIC_PATHS = frozenset({"/v1/health", "/doc", "/console", "/admin"})
# The console's assets are as public as its page: every datum comes from /v1 with a key.
PUBLIC_PREFIXES = ("/console/",)
ADMIN_PREFIX = "/v1/admin"
# Paths any valid key may call, whatever its scopes: what the key itself is.
SELF_PATHS = frozenset({"/v1/me"})
_SCOPES = {scope.value: scope for scope in Scope}


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated API key: its account, tier, scopes and the account's limits."""

    account_id: str
    tier: str
    scopes: frozenset[Scope]
    key_id: str
    limits: Limits

    def to_context(self) -> dict[str, str]:
        """The authorizer's context for this caller (API Gateway allows flat strings only)."""
        return {
            "account_id": self.account_id,
            "tier": self.tier,
            "scopes": ",".join(sorted(scope.value for scope in self.scopes)),
            "key_id": self.key_id,
            "limits": json.dumps(
                {
                    "requests_per_minute": self.limits.requests_per_minute,
                    "concurrency": self.limits.concurrency,
                    "queue_depth": self.limits.queue_depth,
                    "ring_slots": self.limits.ring_slots,
                },
                separators=(",", ":"),
            ),
        }

    @classmethod
    def from_context(cls, context: Any, settings: Settings) -> Caller | None:
        """The caller the authorizer described, or None when there is no usable context."""
        if not isinstance(context, Mapping):
            return None
        account_id, tier, key_id = (context.get(name) for name in ("account_id", "tier", "key_id"))
        if not (isinstance(account_id, str) and account_id and isinstance(tier, str)):
            return None
        scopes_text = context.get("scopes")
        parts = scopes_text.split(",") if isinstance(scopes_text, str) else []
        scopes = frozenset(_SCOPES[part] for part in parts if part in _SCOPES)
        return cls(
            account_id=account_id,
            tier=tier,
            scopes=scopes,
            key_id=key_id if isinstance(key_id, str) else "",
            limits=_limits(context.get("limits"), tier, settings),
        )


def _limits(text: Any, tier: str, settings: Settings) -> Limits:
    """The limits the authorizer sent; the tier's when absent (an older authorizer)."""
    if isinstance(text, str):
        try:
            data = json.loads(text)
            return Limits(
                requests_per_minute=int(data["requests_per_minute"]),
                concurrency=int(data["concurrency"]),
                queue_depth=int(data["queue_depth"]),
                ring_slots=int(data["ring_slots"]),
            )
        except (ValueError, KeyError, TypeError):
            pass
    return Limits.of(settings.tier(tier))


def is_public(path: str) -> bool:
    """Whether anyone may call ``path`` (no key): the deployment gives it no authorizer."""
    trimmed = path.rstrip("/") or "/"
    return trimmed in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def required_scope(path: str) -> frozenset[Scope] | None:
    """The scopes of which a path needs one; None for the public ones."""
    if is_public(path):
        return None
    path = path.rstrip("/") or "/"
    if path in SELF_PATHS:
        return frozenset(Scope)
    if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
        return frozenset({Scope.ADMIN})
    return frozenset({Scope.JOBS})


def rate_headers(limits: Limits, counters: Counters) -> dict[str, str]:
    """The usage headers of every authenticated response (docs/scheduling.md)."""
    return {
        "X-RateLimit-Limit": str(limits.requests_per_minute),
        "X-RateLimit-Remaining": str(max(0, limits.requests_per_minute - counters.window_requests)),
        "X-RateLimit-Reset": str(int(counters.window_reset)),
        "X-Concurrent-Limit": str(limits.concurrency),
        "X-Concurrent-Current": str(counters.running),
        "X-Queue-Limit": str(limits.queue_depth),
        "X-Queue-Current": str(counters.waiting),
    }
