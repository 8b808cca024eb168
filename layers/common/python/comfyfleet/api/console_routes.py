"""The web console: one page and its assets, served by the API itself at ``/console`` with
no key — everything the page shows it asks of ``/v1`` with the key its user logs in with.
``/admin`` (the path the system we replace uses) redirects to it.

Every answer carries a Content-Security-Policy that allows scripts, styles and API calls
from this origin only, no inline script, no framing; images and media also from the
outputs' origins (settings.console_media_origins).
"""

from __future__ import annotations

import hashlib
import html
import threading
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any
from urllib.parse import urlsplit

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Header

from comfyfleet.api.errors import ResourceNotFound
from comfyfleet.api.node_classes import etag_matches
from comfyfleet.api.routing import RouteHost
from comfyfleet.settings import Settings

PACKAGE = "comfyfleet.console"
PAGE = "index.html"
CONSOLE_PATH = "/console"
# The page names its assets under this placeholder: the API's own path (a stage, a base path).
BASE_PLACEHOLDER = "%BASE%"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_LOOPBACK_ORIGINS = ("http://127.0.0.1:*", "http://localhost:*")


@dataclass(frozen=True, slots=True)
class Asset:
    body: str
    content_type: str
    etag: str


class ConsoleAssets:
    """The console's files, read from the package once."""

    def __init__(self, package: str = PACKAGE) -> None:
        self.package = package
        self._assets: dict[str, Asset] | None = None
        self._lock = threading.Lock()

    def _load(self) -> dict[str, Asset]:
        with self._lock:
            if self._assets is None:
                found: dict[str, Asset] = {}
                for entry in resources.files(self.package).iterdir():
                    suffix = "." + entry.name.rsplit(".", 1)[-1]
                    if entry.is_file() and suffix in CONTENT_TYPES:
                        body = entry.read_text(encoding="utf-8")
                        etag = f'"{hashlib.sha256(body.encode()).hexdigest()[:20]}"'
                        found[entry.name] = Asset(body, CONTENT_TYPES[suffix], etag)
                self._assets = found
            return self._assets

    def get(self, name: str) -> Asset | None:
        return self._load().get(name)

    def page(self, base_path: str) -> Asset:
        """The page, its asset links under ``base_path`` (the stage, when there is one)."""
        page = self._load()[PAGE]
        body = page.body.replace(BASE_PLACEHOLDER, html.escape(base_path, quote=True))
        etag = f'"{hashlib.sha256(body.encode()).hexdigest()[:20]}"'
        return Asset(body, page.content_type, etag)


def content_security_policy(settings: Settings) -> str:
    media = ["'self'", "data:", "blob:", *settings.console_media_origins]
    if settings.allow_local_urls:
        media += _LOOPBACK_ORIGINS
    sources = " ".join(media)
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {sources}",
            f"media-src {sources}",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


def security_headers(settings: Settings) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(settings),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
    }


def base_path(base_url: str) -> str:
    """The path part of the API's base URL ("/prod" on an execute-api URL, else "")."""
    return urlsplit(base_url).path.rstrip("/")


IfNoneMatch = Annotated[str | None, Header(alias="If-None-Match")]


def register_console_routes(api: RouteHost) -> None:
    assets = ConsoleAssets()
    headers = security_headers(api.settings)
    hidden: dict[str, Any] = {"include_in_schema": False}

    def answer(asset: Asset, tag: str | None) -> Response[Any]:
        sent = {**headers, "ETag": asset.etag, "Cache-Control": "no-cache"}
        if etag_matches(tag, asset.etag):
            return Response(status_code=304, headers=sent)
        return Response(200, asset.content_type, asset.body, sent)

    @api.route("GET", CONSOLE_PATH, **hidden)
    def console_page(tag: IfNoneMatch = None) -> Response[Any]:
        return answer(assets.page(base_path(api.scope.base_url)), tag)

    @api.route("GET", f"{CONSOLE_PATH}/<name>", **hidden)
    def console_asset(name: str, tag: IfNoneMatch = None) -> Response[Any]:
        asset = assets.get(name) if name != PAGE else None
        if asset is None:
            raise ResourceNotFound(f"the console has no file {name[:100]!r}")
        return answer(asset, tag)

    @api.route("GET", "/admin", **hidden)
    def admin_page() -> Response[Any]:
        location = base_path(api.scope.base_url) + CONSOLE_PATH
        return Response(302, "text/plain", "", {**headers, "Location": location})
