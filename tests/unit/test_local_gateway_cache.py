"""The local gateway's authorizer cache: API Gateway's result TTL, keyed on the key headers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from comfyfleet.api.auth import AUTHORIZER_CACHE_SECONDS
from comfyfleet.api.local import LocalGateway
from comfyfleet.api.wiring import memory_api
from comfyfleet.dev.stack import AUTHORIZER_TTL_SECONDS
from comfyfleet.domain import Scope
from comfyfleet.settings import Settings


@dataclass
class Setup:
    gateway: LocalGateway
    calls: list[Any]
    now: list[float]
    key: str
    key_id: str
    world: Any = field(repr=False)

    def usage(self, key: str | None = None, header: str = "Authorization") -> int:
        value = f"Bearer {key or self.key}" if header == "Authorization" else (key or self.key)
        return self.gateway.request("GET", "/v1/usage", headers={header: value}).status


def setup(settings: Settings, ttl: float) -> Setup:
    api, authorizer, world = memory_api(settings)
    calls: list[Any] = []
    now = [1000.0]

    def counting(event: Any, context: Any) -> Any:
        calls.append(event)
        return authorizer.authorize(event)

    gateway = LocalGateway(api.handle, counting, authorizer_ttl=ttl, monotonic=lambda: now[0])
    account = world.stores.accounts.create(tier="free", name="t", now=world.clock.now())
    key, plaintext = world.stores.keys.create(
        account.account_id, {Scope.JOBS}, name="k", now=world.clock.now()
    )
    return Setup(gateway, calls, now, plaintext, key.key_id, world)


def test_an_answer_is_reused_for_the_same_key_within_the_ttl(settings: Settings) -> None:
    s = setup(settings, ttl=5)

    statuses = [s.usage(), s.usage(), s.usage()]

    assert statuses == [200, 200, 200]
    assert len(s.calls) == 1


def test_a_revoked_key_works_until_its_answer_expires_then_is_refused(settings: Settings) -> None:
    s = setup(settings, ttl=5)
    assert s.usage() == 200
    s.world.stores.keys.revoke(s.key_id, now=s.world.clock.now())

    within = s.usage()
    s.now[0] += 5.01
    after = s.usage()

    assert (within, after) == (200, 401)
    assert len(s.calls) == 2


def test_answers_are_kept_per_key_header(settings: Settings) -> None:
    s = setup(settings, ttl=5)

    s.usage(header="Authorization")
    s.usage(header="X-API-Key")
    s.usage(header="x-api-key")

    assert len(s.calls) == 2  # header names are case-insensitive, values are the key


@pytest.mark.parametrize("ttl", [5.0, 0.0])
def test_refusals_are_never_cached(settings: Settings, ttl: float) -> None:
    s = setup(settings, ttl=ttl)
    unknown = "sk_live_" + "A" * 43

    assert [s.usage(unknown), s.usage(unknown)] == [401, 401]
    assert len(s.calls) == 2


def test_without_a_ttl_every_request_asks_the_authorizer(settings: Settings) -> None:
    s = setup(settings, ttl=0)

    s.usage()
    s.usage()

    assert len(s.calls) == 2


def test_the_dev_stack_caches_answers_as_long_as_the_deployment_at_most_30_s() -> None:
    # One value (comfyfleet.api.auth) for API Gateway's result TTL and the dev gateway's.
    assert AUTHORIZER_TTL_SECONDS == AUTHORIZER_CACHE_SECONDS <= 30


def test_a_revoked_key_stops_working_within_the_deployments_ttl(settings: Settings) -> None:
    s = setup(settings, ttl=AUTHORIZER_TTL_SECONDS)
    assert s.usage() == 200  # its answer is cached from now
    s.now[0] += 1
    s.world.stores.keys.revoke(s.key_id, now=s.world.clock.now())

    statuses = []  # one request a second after the revocation
    for _ in range(AUTHORIZER_CACHE_SECONDS + 5):
        s.now[0] += 1
        statuses.append(s.usage())

    # Refused once the answer cached before the revocation expires, and from then on.
    refused_after = statuses.index(401) + 1
    assert refused_after <= AUTHORIZER_CACHE_SECONDS <= 30
    assert set(statuses[refused_after - 1 :]) == {401}
