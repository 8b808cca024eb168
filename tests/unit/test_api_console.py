"""The web console's routes, and the API calls added for it: the page and its assets with no
key, under the stage's path, with a Content-Security-Policy and ETags; /admin's redirect;
GET /v1/me for any key; every account's jobs for an admin (and who may not ask)."""

from __future__ import annotations

import pytest

from comfyfleet.api.console_routes import ConsoleAssets
from comfyfleet.settings import Settings
from tests.api_support import MemoryApi, error_of, memory_setup, rest_event
from tests.support import basic_graph


@pytest.fixture
def app(settings: Settings) -> MemoryApi:
    return memory_setup(settings)


def test_the_page_and_its_assets_need_no_key_and_carry_the_policy(app: MemoryApi) -> None:
    page = app.anonymous.get("/console")
    script = app.anonymous.get("/console/app.js")
    style = app.anonymous.get("/console/console.css")

    assert page.status == script.status == style.status == 200
    assert page.header("Content-Type") == "text/html; charset=utf-8"
    assert script.header("Content-Type") == "text/javascript; charset=utf-8"
    assert style.header("Content-Type") == "text/css; charset=utf-8"
    policy = page.header("Content-Security-Policy") or ""
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["default-src"] == directives["script-src"] == "'self'"
    assert directives["connect-src"] == "'self'" and directives["frame-ancestors"] == "'none'"
    assert "https://*.amazonaws.com" in directives["img-src"]
    assert "127.0.0.1" not in policy  # loopback media only where local URLs are allowed
    assert page.header("X-Frame-Options") == "DENY"
    assert b'<script type="module" src="/console/app.js"></script>' in page.body
    assert b"<script>" not in page.body  # no inline script: the policy forbids it anyway


def test_the_page_names_its_assets_under_the_stage(app: MemoryApi) -> None:
    response = app.api.handle(rest_event("GET", "/console"))

    assert response["statusCode"] == 200
    assert '<script type="module" src="/prod/console/app.js">' in response["body"]
    redirect = app.api.handle(rest_event("GET", "/admin"))
    assert redirect["statusCode"] == 302
    assert redirect["multiValueHeaders"]["Location"] == ["/prod/console"]


def test_an_unknown_asset_is_404_and_a_current_etag_is_304(app: MemoryApi) -> None:
    first = app.anonymous.get("/console/app.js")

    again = app.anonymous.get(
        "/console/app.js", headers={"If-None-Match": first.header("ETag") or ""}
    )
    missing = app.anonymous.get("/console/secrets.py")
    page_by_name = app.anonymous.get("/console/index.html")

    assert again.status == 304 and again.body == b""
    assert missing.status == 404 and error_of(missing)["code"] == "not_found"
    assert page_by_name.status == 404  # the page is served at /console only (its links filled in)


def test_the_assets_ship_inside_the_package() -> None:
    assets = ConsoleAssets()

    for name in ("app.js", "api.js", "dom.js", "session.js", "console.css", "icon.svg"):
        assert assets.get(name) is not None, name
    assert "%BASE%" not in assets.page("/prod").body


def test_local_urls_add_the_loopback_origins_to_the_media_sources() -> None:
    app = memory_setup(Settings(allow_local_urls=True))

    policy = app.anonymous.get("/console").header("Content-Security-Policy") or ""

    assert "img-src 'self' data: blob:" in policy and "http://127.0.0.1:*" in policy


def test_me_tells_any_key_its_account_tier_and_scopes(app: MemoryApi) -> None:
    account = app.account("pro")

    jobs = app.client(account).get("/v1/me")
    anonymous = app.anonymous.get("/v1/me")

    assert jobs.status == 200
    assert jobs.json()["account_id"] == account.account_id and jobs.json()["tier"] == "pro"
    assert jobs.json()["scopes"] == ["jobs"]
    assert app.client(account, admin=True).get("/v1/me").json()["scopes"] == ["admin"]
    assert anonymous.status == 401 and error_of(anonymous)["code"] == "unauthorized"


def test_an_admin_lists_every_accounts_jobs_newest_first_and_reads_any(app: MemoryApi) -> None:
    first, second = app.account(), app.account()
    older = app.client(first).post("/v1/jobs", {"prompt": basic_graph()}).json()["job_id"]
    app.world.clock.advance(1)
    newer = app.client(second).post("/v1/jobs", {"prompt": basic_graph()}).json()["job_id"]
    admin = app.client(first, admin=True)

    every = admin.get("/v1/admin/jobs").json()
    page = admin.get("/v1/admin/jobs", query="limit=1").json()
    rest = admin.get("/v1/admin/jobs", query=f"limit=1&cursor={page['next_cursor']}").json()
    mine = admin.get("/v1/admin/jobs", query=f"account_id={second.account_id}").json()
    done = admin.get("/v1/admin/jobs", query="status=completed").json()
    one = admin.get(f"/v1/admin/jobs/{older}")

    assert [job["job_id"] for job in every["jobs"]] == [newer, older]
    assert [job["account_id"] for job in every["jobs"]] == [second.account_id, first.account_id]
    assert [job["job_id"] for job in page["jobs"] + rest["jobs"]] == [newer, older]
    assert [job["job_id"] for job in mine["jobs"]] == [newer] and done["jobs"] == []
    assert one.status == 200 and one.json()["account_id"] == first.account_id


@pytest.mark.parametrize(
    ("path", "query", "status", "code"),
    [
        ("/v1/admin/jobs", "account_id=acct_nope", 404, "not_found"),
        ("/v1/admin/jobs", "cursor=%25%25", 400, "invalid_cursor"),
        ("/v1/admin/jobs", "status=lost", 400, "invalid_request"),
        ("/v1/admin/jobs", "limit=0", 400, "invalid_request"),
        ("/v1/admin/jobs/not-a-job", None, 404, "not_found"),
        ("/v1/admin/jobs/01JZZZZZZZZZZZZZZZZZZZZZZZ", None, 404, "not_found"),
    ],
)
def test_bad_admin_job_queries_are_refused(
    app: MemoryApi, path: str, query: str | None, status: int, code: str
) -> None:
    refused = app.client(app.account(), admin=True).get(path, query=query)

    assert refused.status == status and error_of(refused)["code"] == code


def test_a_jobs_key_may_not_list_every_accounts_jobs(app: MemoryApi) -> None:
    refused = app.client(app.account()).get("/v1/admin/jobs")

    assert refused.status == 403 and error_of(refused)["code"] == "forbidden"
