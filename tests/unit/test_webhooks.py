"""Standard Webhooks signatures: ours against the reference package, the verifier's
refusals (tampered body, wrong secret, stale or future timestamp, missing headers), and
secret rotation (both secrets sign during the grace, only the new one after)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime

import pytest
import standardwebhooks

from comfyfleet.apikeys import new_webhook_secret
from comfyfleet.domain import Account
from comfyfleet.webhooks import (
    WebhookVerificationError,
    rotated,
    sign,
    signature_headers,
    signing_secrets,
    verify,
)

BODY = b'{"id":"evt_01JB","type":"job.completed","job_id":"01JB","status":"completed"}'
EVENT_ID = "evt_01JB"
NOW = 1_800_000_000


def test_a_signature_is_the_spec_hmac_of_id_timestamp_and_body() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()

    signature = sign(secret, EVENT_ID, NOW, BODY)

    expected = hmac.new(b"k" * 32, f"{EVENT_ID}.{NOW}.".encode() + BODY, hashlib.sha256)
    assert signature == "v1," + base64.b64encode(expected.digest()).decode()


def test_the_reference_package_verifies_our_headers_and_we_verify_its_signature() -> None:
    secret = new_webhook_secret()
    now = int(time.time())
    headers = signature_headers([secret], EVENT_ID, BODY, timestamp=now)

    assert standardwebhooks.Webhook(secret).verify(BODY, headers)["id"] == EVENT_ID

    theirs = standardwebhooks.Webhook(secret).sign(
        EVENT_ID, datetime.fromtimestamp(now, UTC), BODY.decode()
    )
    reference_headers = {**headers, "webhook-signature": theirs}
    assert verify(reference_headers, BODY, secret)["job_id"] == "01JB"


def test_verify_returns_the_event_with_header_names_in_any_case() -> None:
    secret = new_webhook_secret()
    headers = signature_headers([secret], EVENT_ID, BODY, timestamp=NOW)
    shouting = {name.upper(): value for name, value in headers.items()}

    event = verify(shouting, BODY.decode(), secret, now=NOW + 10)

    assert event["type"] == "job.completed"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("body", "no signature matches"),
        ("secret", "no signature matches"),
        ("id", "no signature matches"),
        ("stale", "too old"),
        ("future", "too far in the future"),
        ("missing", "missing header"),
        ("timestamp", "not an integer"),
    ],
)
def test_verify_rejects_what_was_not_signed_now_with_this_secret(change: str, message: str) -> None:
    secret = new_webhook_secret()
    headers = signature_headers([secret], EVENT_ID, BODY, timestamp=NOW)
    body, key, now = BODY, secret, float(NOW)
    if change == "body":
        body = BODY.replace(b"completed", b"cancelled")
    elif change == "secret":
        key = new_webhook_secret()
    elif change == "id":
        headers["webhook-id"] = "evt_other"
    elif change == "stale":
        now = NOW + 301
    elif change == "future":
        now = NOW - 301
    elif change == "missing":
        del headers["webhook-signature"]
    elif change == "timestamp":
        headers["webhook-timestamp"] = "soon"

    with pytest.raises(WebhookVerificationError, match=message):
        verify(headers, body, key, now=now)
    if change in ("body", "secret", "id"):
        with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
            standardwebhooks.Webhook(key).verify(body, {**headers, "webhook-timestamp": str(NOW)})


def test_the_tolerance_is_the_callers() -> None:
    secret = new_webhook_secret()
    headers = signature_headers([secret], EVENT_ID, BODY, timestamp=NOW)

    assert verify(headers, BODY, secret, tolerance=3600, now=NOW + 3000)["id"] == EVENT_ID
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(headers, BODY, secret, tolerance=60, now=NOW + 61)


def test_any_of_several_signatures_may_match() -> None:
    old, new = new_webhook_secret(), new_webhook_secret()
    headers = signature_headers([new, old], EVENT_ID, BODY, timestamp=NOW)

    assert len(headers["webhook-signature"].split(" ")) == 2
    assert verify(headers, BODY, old, now=NOW)["id"] == EVENT_ID
    assert verify(headers, BODY, new, now=NOW)["id"] == EVENT_ID
    headers["webhook-signature"] = "v2,abc " + headers["webhook-signature"]
    assert verify(headers, BODY, old, now=NOW)["id"] == EVENT_ID  # unknown versions ignored


def test_a_secret_that_is_not_whsec_base64_is_refused() -> None:
    with pytest.raises(ValueError, match="base64"):
        sign("whsec_not base64!", EVENT_ID, NOW, BODY)


def test_after_a_rotation_both_secrets_sign_until_the_grace_ends() -> None:
    account = Account("acct_1", "free", created_at=0.0, webhook_secret=new_webhook_secret())
    old = account.webhook_secret

    after = rotated(account, now=NOW, grace_seconds=3600)

    assert after.webhook_secret != old and after.webhook_secret.startswith("whsec_")
    assert signing_secrets(after, NOW + 10) == [after.webhook_secret, old]
    assert signing_secrets(after, NOW + 3600) == [after.webhook_secret]
    headers = signature_headers(signing_secrets(after, NOW), EVENT_ID, BODY, timestamp=NOW)
    for secret in (old, after.webhook_secret):
        assert verify(headers, BODY, secret, now=NOW)["id"] == EVENT_ID


def test_rotating_twice_keeps_only_the_last_two_and_no_grace_drops_the_old_at_once() -> None:
    account = Account("acct_1", "free", created_at=0.0, webhook_secret=new_webhook_secret())
    first = account.webhook_secret
    twice = rotated(rotated(account, now=NOW, grace_seconds=60), now=NOW + 1, grace_seconds=60)

    assert first not in signing_secrets(twice, NOW + 2)
    assert len(signing_secrets(twice, NOW + 2)) == 2
    assert signing_secrets(rotated(account, now=NOW, grace_seconds=0), NOW) != [first]
    assert len(signing_secrets(rotated(account, now=NOW, grace_seconds=0), NOW)) == 1
