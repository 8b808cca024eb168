"""The authorizer function's logic: an API key on a request → an IAM policy and the caller.

A key comes as ``Authorization: Bearer sk_live_…`` or ``X-API-Key: sk_live_…``. It is checked
for shape before any lookup, then found by its SHA-256 (``KeyStore.find``); a missing,
malformed, unknown or revoked key, or one whose account is gone, fails with the exception
message ``Unauthorized``, which API Gateway answers with 401. An accepted key gets a policy
allowing the whole API — the result is cached per key, so it must not name one route — with
the caller (account, tier, scopes, key id, the account's effective limits) as its context.
Scopes are enforced by the api function, per path (``comfyfleet.api.context``).

See functions/authorizer/README.md for API Gateway's side: identity sources, caching and the
gateway responses that give 401 and 403 this API's error shape.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from comfyfleet.api.context import Caller
from comfyfleet.apikeys import KEY_ID_LENGTH, KEY_PREFIX, looks_like_key
from comfyfleet.errors import AccountNotFound
from comfyfleet.settings import Settings
from comfyfleet.store.ports import AccountStore, KeyStore

logger = logging.getLogger(__name__)

AUTHORIZATION = "authorization"
# How long API Gateway (cdk/comfyfleet_cdk/api.py) and the dev stack's LocalGateway reuse an
# accepted key's answer: a revoked key stops working within this. One value for both.
AUTHORIZER_CACHE_SECONDS = 30
API_KEY_HEADER = "x-api-key"
_BEARER = "bearer"


class Unauthorized(Exception):
    """No valid key; the message is exactly what API Gateway turns into a 401."""

    def __init__(self, reason: str) -> None:
        super().__init__("Unauthorized")
        self.reason = reason


def header(headers: Any, name: str) -> str | None:
    """A header's value, whatever its case (API Gateway passes names as the client sent them)."""
    if not isinstance(headers, Mapping):
        return None
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == name and isinstance(value, str):
            return value
    return None


def presented_key(headers: Any) -> str | None:
    """The key a request carries: a Bearer token, else the X-API-Key header."""
    authorization = (header(headers, AUTHORIZATION) or "").strip()
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == _BEARER and token.strip():
        return token.strip()
    api_key = (header(headers, API_KEY_HEADER) or "").strip()
    return api_key or None


class KeyAuthorizer:
    """Resolves API keys to callers, with the account's effective limits."""

    def __init__(self, keys: KeyStore, accounts: AccountStore, settings: Settings) -> None:
        self.keys = keys
        self.accounts = accounts
        self.settings = settings

    def caller(self, plaintext: str | None) -> Caller:
        """The caller this key stands for; Unauthorized otherwise."""
        if not plaintext:
            raise Unauthorized("missing")
        if not looks_like_key(plaintext):
            raise Unauthorized("malformed")
        key = self.keys.find(plaintext)
        if key is None:
            raise Unauthorized("unknown")
        if not key.active:
            raise Unauthorized("revoked")
        try:
            account = self.accounts.get(key.account_id)
        except AccountNotFound:
            raise Unauthorized("account gone") from None
        return Caller(
            account_id=account.account_id,
            tier=account.tier,
            scopes=key.scopes,
            key_id=key.key_id,
            limits=account.limits(self.settings),
        )

    def authorize(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """A REQUEST authorizer's answer to ``event``; raises Unauthorized."""
        plaintext = presented_key(event.get("headers"))
        try:
            caller = self.caller(plaintext)
        except Unauthorized as refused:
            key_id = plaintext[:KEY_ID_LENGTH] if plaintext and looks_like_key(plaintext) else None
            logger.info("key refused", extra={"reason": refused.reason, "key_id": key_id})
            raise
        return {
            "principalId": caller.account_id,
            "policyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Action": "execute-api:Invoke",
                        "Effect": "Allow",
                        "Resource": whole_api_arn(str(event.get("methodArn") or "")),
                    }
                ],
            },
            "context": caller.to_context(),
        }


# A well-formed key no store holds: priming looks it up, offline, and is refused.
_PRIMING_KEY = KEY_PREFIX + "priming" + "0" * 36


def prime_authorizer(authorizer: KeyAuthorizer) -> None:
    """Resolve a key once with every AWS call answered in the process (SnapStart's init):
    the key lookup's hashing, serialising, signing and parsing are done before the snapshot."""
    from comfyfleet import aws
    from comfyfleet.offline import offline_aws, quiet_logs

    event = {"headers": {"Authorization": f"Bearer {_PRIMING_KEY}"}, "methodArn": ""}
    with offline_aws(aws.clients()), quiet_logs():
        try:
            authorizer.authorize(event)
        except Unauthorized:
            pass  # the key is unknown, as it should be


def whole_api_arn(method_arn: str) -> str:
    """``arn:…:<api>/<stage>/<verb>/<path>`` → ``arn:…:<api>/<stage>/*``: every route.

    The policy is cached per key and reused for other routes, so it must allow them all.
    """
    arn, _, rest = method_arn.partition(":execute-api:")
    parts = rest.split("/")
    if not arn or len(parts) < 2:
        return "*"
    return f"{arn}:execute-api:{parts[0]}/{parts[1]}/*"


def aws_authorizer(
    settings: Settings, *, endpoint_url: str | None = None, region: str | None = None
) -> KeyAuthorizer:
    """The authorizer on DynamoDB (imports only what it needs: it runs on every cache miss)."""
    from comfyfleet.store.dynamo import dynamo_stores

    stores = dynamo_stores(settings, endpoint_url=endpoint_url, region=region)
    return KeyAuthorizer(stores.keys, stores.accounts, settings)
