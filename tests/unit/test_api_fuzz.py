"""Property-based fuzz of every route through the local gateway on in-memory stores: random
methods, paths, headers, query strings and bodies (malformed JSON, huge, non-UTF-8, base64)
never yield a 5xx, every error has the one error shape, an unknown route is 404 and a wrong
method 405."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from comfyfleet.api.local import LocalResponse
from comfyfleet.settings import Settings
from tests.api_support import Account, MemoryApi, memory_setup
from tests.support import basic_graph

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
# Every route as (method, rule); <…> is filled by the strategy for that parameter.
ROUTES = (
    ("GET", "/v1/health"),
    ("GET", "/v1/me"),
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs"),
    ("GET", "/v1/jobs/<job_id>"),
    ("DELETE", "/v1/jobs/<job_id>"),
    ("POST", "/v1/jobs/<job_id>/cancel"),
    ("GET", "/v1/jobs/<job_id>/preview"),
    ("GET", "/v1/usage"),
    ("GET", "/v1/workflows"),
    ("POST", "/v1/workflows/sd15"),
    ("POST", "/v1/workflows/sdxl"),
    ("POST", "/v1/workflows/flux"),
    ("POST", "/v1/deployments"),
    ("GET", "/v1/deployments"),
    ("GET", "/v1/deployments/<name>"),
    ("DELETE", "/v1/deployments/<name>"),
    ("POST", "/v1/deployments/<name>/jobs"),
    ("POST", "/v1/admin/accounts"),
    ("POST", "/v1/admin/keys"),
    ("GET", "/v1/admin/keys"),
    ("DELETE", "/v1/admin/keys/<key_id>"),
    ("GET", "/v1/admin/jobs"),
    ("GET", "/v1/admin/jobs/<job_id>"),
    ("GET", "/v1/admin/nodes"),
    ("POST", "/v1/admin/nodes/<node_id>/drain"),
    ("DELETE", "/v1/admin/nodes/<node_id>"),
    ("GET", "/v1/admin/queues"),
    ("GET", "/doc"),
    ("GET", "/console"),
    ("GET", "/console/<name>"),
    ("GET", "/admin"),
)
QUERY_NAMES = ("status", "limit", "cursor", "account_id", "format", "version", "x")
VALUES = ("queued", "running", "completed", "1", "100", "0", "-1", "json", "acct_x", "")
UNKNOWN_PATHS = ("/", "/v1", "/v2/jobs", "/v1/jobz", "/v1/jobs/a/b/c", "/v1/admin/x/y/z/w")

pytestmark = pytest.mark.slow  # ≈ 15 s of CPU in all

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def app() -> MemoryApi:
    return memory_setup(Settings())


@pytest.fixture(scope="module")
def account(app: MemoryApi) -> Account:
    # Limits high enough that submits get past admission and exercise the whole path.
    return app.account("pro", requests_per_minute=10**9, queue_depth=10**9)


@pytest.fixture(scope="module")
def job_id(app: MemoryApi, account: Account) -> str:
    response = app.client(account).post("/v1/jobs", {"prompt": basic_graph()})
    assert response.status == 202
    found: str = response.json()["job_id"]
    return found


# -- strategies --------------------------------------------------------------------------------

text = st.text(max_size=40)
segment = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters="/?#"), min_size=1, max_size=30),
    st.sampled_from(["%00", "%2F", "..", ".", "%20", "i-node1", "acct_x", "sk_live_abcdefgh"]),
    st.just("A" * 3000),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=20,
)


@st.composite
def paths(draw: st.DrawFn, job_id: str) -> str:
    """Mostly a route's path with its parameter drawn (often a real job id); else another."""
    _, rule = draw(st.sampled_from(ROUTES))
    value = draw(st.sampled_from([job_id, job_id, "i-node1"]) | segment)
    path = re.sub(r"<\w+>", lambda _: value, rule)
    variant = st.sampled_from([path + "/", path + "//", path.upper(), path + "/extra"])
    other = st.sampled_from(UNKNOWN_PATHS) | st.builds(lambda s: "/v1/" + s, segment)
    return draw(st.sampled_from([path] * 3) | variant | other)


def bodies(job_id: str) -> st.SearchStrategy[bytes | None]:
    submission = st.fixed_dictionaries(
        {"prompt": st.just(basic_graph()) | json_values},
        optional={
            "webhook_url": st.just("https://hooks.example.com/x") | text | json_values,
            "models": st.just([]) | json_values,
            "metadata": st.dictionaries(text, json_values, max_size=3) | json_values,
        },
    )
    admin = st.fixed_dictionaries(
        {},
        optional={
            "tier": st.sampled_from(["free", "pro", "nope"]) | json_values,
            "account_id": text | json_values,
            "scopes": st.lists(st.sampled_from(["jobs", "admin", "root"])) | json_values,
            "name": text,
        },
    )
    template = st.fixed_dictionaries(
        {},
        optional={
            "prompt": text | json_values,
            "seed": st.integers() | json_values,
            "width": st.integers(),
            "steps": st.integers(),
        },
    )
    deployment = st.fixed_dictionaries(
        {},
        optional={
            "name": st.sampled_from(["fuzzed", "sd15", "Bad Name"]) | json_values,
            "workflow": st.just(basic_graph()) | json_values,
            "inputs": st.dictionaries(
                st.sampled_from(["width", "9x", "prefix"]) | text,
                st.fixed_dictionaries(
                    {
                        "node": st.sampled_from(["1", "3", "9"]) | json_values,
                        "input": st.sampled_from(["width", "filename_prefix"]) | text,
                        "type": st.sampled_from(["integer", "string", "image", "x"]),
                    },
                    optional={"default": json_values, "minimum": json_values, "enum": json_values},
                ),
                max_size=3,
            )
            | json_values,
            "version": st.integers() | json_values,
        },
    )
    return st.one_of(
        st.none(),
        st.just(b""),
        st.builds(
            lambda value: json.dumps(value).encode(), submission | admin | template | deployment
        ),
        st.builds(lambda value: json.dumps(value).encode(), submission),
        st.builds(lambda value: json.dumps(value | {"unexpected": 1}).encode(), submission),
        st.builds(lambda value: json.dumps(value).encode(), json_values),
        st.binary(max_size=200),  # mostly not UTF-8: the gateway sends it base64-encoded
        st.sampled_from(
            [b"{", b'{"prompt": NaN}', b"[" * 3000, b"\xff\xfe{}", b"null", b'"x"', b"1e999"]
        ),
        st.builds(lambda n: b'{"prompt": "' + b"a" * n + b'"}', st.integers(0, 3_000_000)),
        st.just(json.dumps({"job_id": job_id}).encode()),
    )


@st.composite
def headers(draw: st.DrawFn, account: Account) -> list[tuple[str, str]]:
    auth = draw(
        st.sampled_from(
            [
                [],
                *[[("Authorization", f"Bearer {account.key}")]] * 3,
                *[[("X-API-Key", account.admin_key)]] * 2,
                [("Authorization", f"Bearer {account.admin_key}"), ("X-API-Key", account.key)],
                [("Authorization", "Bearer sk_live_" + "A" * 43)],
                [("x-api-key", "garbage")],
            ]
        )
    )
    ascii_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
    extra = draw(
        st.lists(
            st.tuples(
                st.sampled_from(
                    ["Content-Type", "Idempotency-Key", "Accept", "Host", "X-Forwarded-Proto"]
                )
                | st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1),
                ascii_text | text,
            ),
            max_size=3,
        )
    )
    return auth + extra


queries = st.lists(st.tuples(st.sampled_from(QUERY_NAMES) | text, text), max_size=4)


def assert_well_formed(response: LocalResponse, path: str) -> None:
    assert response.status < 500, (response.status, response.body[:300])
    assert response.header("X-Request-Id")
    if response.status >= 400:
        error = response.json()["error"]
        assert isinstance(error["code"], str) and error["code"]
        assert isinstance(error["message"], str)
        assert error["request_id"] == response.header("X-Request-Id")
    elif not path.startswith(("/doc", "/console")):  # pages and scripts, not JSON
        json.loads(response.body or b"null")


# -- properties --------------------------------------------------------------------------------


@FUZZ
@given(data=st.data())
@example(data=None)
def test_no_request_is_answered_with_a_5xx(
    app: MemoryApi, account: Account, job_id: str, data: st.DataObject | None
) -> None:
    if data is None:  # the plainest request, so the property is never vacuous
        method, path, query, header_pairs, body = "GET", "/v1/jobs", [], [], None
    else:
        method = data.draw(st.sampled_from(METHODS) | st.sampled_from([m.lower() for m in METHODS]))
        path = data.draw(paths(job_id))
        query = data.draw(queries)
        header_pairs = data.draw(headers(account))
        body = data.draw(bodies(job_id))

    response = app.gateway.request(method, path, query, header_pairs, body)

    assert_well_formed(response, path)


@FUZZ
@given(data=st.data())
def test_each_route_called_as_documented_with_random_values_never_5xx(
    app: MemoryApi, account: Account, job_id: str, data: st.DataObject
) -> None:
    method, rule = data.draw(st.sampled_from(ROUTES))
    value = data.draw(st.sampled_from([job_id, "i-node1", "sk_live_ZZZZZZZZ", "sd15"]) | segment)
    path = re.sub(r"<\w+>", lambda _: value, rule)
    key = account.admin_key if path.startswith("/v1/admin") else account.key
    query = data.draw(
        st.lists(st.tuples(st.sampled_from(QUERY_NAMES), text | st.sampled_from(VALUES)))
    )
    extra = data.draw(st.lists(st.tuples(st.just("Idempotency-Key"), text), max_size=1))
    body = data.draw(bodies(job_id)) if method in ("POST", "DELETE") else None

    response = app.gateway.request(method, path, query, [("X-API-Key", key), *extra], body)

    assert_well_formed(response, path)
    assert response.status not in (401, 403, 405)


@FUZZ
@given(
    body=bodies("01JZZZZZZZZZZZZZZZZZZZZZZZ"),
    content_type=st.sampled_from(
        ["application/json", "text/plain", "application/x-www-form-urlencoded", ""]
    ),
    route=st.sampled_from([rule for method, rule in ROUTES if method == "POST"]),
)
def test_no_body_breaks_a_submit_or_an_admin_write(
    app: MemoryApi, account: Account, body: bytes | None, content_type: str, route: str
) -> None:
    key = account.admin_key if route.startswith("/v1/admin") else account.key
    path = route.replace("<node_id>", "i-node1").replace("<name>", "sd15")
    request_headers = {"Authorization": f"Bearer {key}", "Content-Type": content_type}

    response = app.gateway.request("POST", path, None, request_headers, body)

    assert_well_formed(response, path)
    if response.status == 400:
        assert response.json()["error"]["code"] in {
            "malformed_json",
            "invalid_request",
            "invalid_workflow",
        }


@FUZZ
@given(path=st.builds(lambda s: "/v1/" + s, segment) | st.sampled_from(UNKNOWN_PATHS))
def test_a_path_no_route_matches_is_404(app: MemoryApi, account: Account, path: str) -> None:
    matched = any(
        re.fullmatch(re.sub(r"<\w+>", "[^/]+", rule) + "/*", path) for _, rule in ROUTES
    )
    key = account.admin_key if path.startswith("/v1/admin") else account.key

    response = app.gateway.request("GET", path, None, {"X-API-Key": key})

    assert_well_formed(response, path)
    if not matched:
        assert response.status == 404 and response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("rule", sorted({rule for _, rule in ROUTES}))
def test_every_route_answers_a_method_it_lacks_with_405(
    app: MemoryApi, account: Account, job_id: str, rule: str
) -> None:
    path = re.sub(r"<\w+>", job_id, rule)
    allowed = {method for method, other in ROUTES if other == rule}
    key = account.admin_key if path.startswith("/v1/admin") else account.key

    for method in sorted(set(METHODS) - allowed - {"HEAD", "OPTIONS"}):
        response = app.gateway.request(method, path, None, {"X-API-Key": key}, None)

        assert response.status == 405, (method, path, response.body[:200])
        assert response.json()["error"]["code"] == "method_not_allowed"
        assert set((response.header("Allow") or "").split(", ")) == allowed
