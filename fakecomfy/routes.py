"""ComfyUI's HTTP routes, each also under ``/api``, and its Origin check.

Handlers parse the request and delegate to the server (``FakeComfy``), which they know only
as ``ComfyServer``: the server builds its app from these routes, never the other way round.
As in ComfyUI, a body that is not JSON where JSON is required is not caught: aiohttp answers
it with its plain-text 500.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import urlparse, urlsplit

from aiohttp import web

from fakecomfy.folders import MODEL_FOLDERS, ComfyFolders
from fakecomfy.hub import SERVER_FEATURES, SocketHub
from fakecomfy.node_types import LiveNodeTypes
from fakecomfy.prompt_queue import PromptQueue

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# What ComfyUI 0.3.64 reported besides its own version (recorded ``/system_stats``).
FRONTEND_VERSIONS = {
    "required_frontend_version": "1.27.10",
    "installed_templates_version": "0.1.95",
    "required_templates_version": "0.1.95",
}


class ComfyServer(Protocol):
    """What the routes need of the server."""

    folders: ComfyFolders
    hub: SocketHub
    queue: PromptQueue
    previews: bool
    version: str

    def queue_info(self) -> dict[str, Any]: ...

    def submit(self, body: Any) -> tuple[int, dict[str, Any]]: ...

    def interrupt(self, prompt_id: Any = None) -> None: ...

    def live_types(self) -> LiveNodeTypes: ...


def _is_loopback(hostname: str | None) -> bool:
    if not hostname:
        return False
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        # ComfyUI resolves other names; fakecomfy never looks names up, so only "localhost".
        return hostname.lower() == "localhost"


def _origin_mismatch(host: str, origin: str) -> bool:
    """ComfyUI's rule: on a loopback Host, the Origin must name the same host (and port)."""
    host_domain: str | None = host.lower()
    parsed_origin = urlparse(origin)
    origin_domain: str | None = parsed_origin.netloc.lower()
    parsed_host = urlsplit("//" + (host_domain or ""))
    try:
        if parsed_origin.port is None:  # compare without ports when the origin has none
            host_domain = parsed_host.hostname
        if parsed_host.port is None:
            origin_domain = parsed_origin.hostname
    except ValueError:  # a port that is not a number cannot match
        return True
    return (
        _is_loopback(parsed_host.hostname)
        and bool(host_domain)
        and bool(origin_domain)
        and host_domain != origin_domain
    )


@web.middleware
async def origin_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """403 for a cross-origin request to a loopback server (a web page posting prompts)."""
    host, origin = request.headers.get("Host"), request.headers.get("Origin")
    if host is not None and origin is not None and _origin_mismatch(host, origin):
        logger.warning("host and origin differ", extra={"host": host, "origin": origin})
        return web.Response(status=403)
    if request.method == "OPTIONS":
        return web.Response()
    return await handler(request)


def add_routes(app: web.Application, fake: ComfyServer) -> None:
    routes = _Routes(fake)
    table: list[tuple[str, str, Handler]] = [
        ("GET", "/ws", fake.hub.handle),
        ("GET", "/prompt", routes.get_prompt),
        ("POST", "/prompt", routes.post_prompt),
        ("GET", "/queue", routes.get_queue),
        ("POST", "/queue", routes.post_queue),
        ("GET", "/history", routes.get_history),
        ("GET", "/history/{prompt_id}", routes.get_history_entry),
        ("POST", "/history", routes.post_history),
        ("POST", "/interrupt", routes.post_interrupt),
        ("POST", "/free", routes.post_free),
        ("GET", "/view", routes.get_view),
        ("POST", "/upload/image", routes.post_upload_image),
        ("GET", "/object_info", routes.get_object_info),
        ("GET", "/object_info/{node_class}", routes.get_object_info_class),
        ("GET", "/system_stats", routes.get_system_stats),
        ("GET", "/features", routes.get_features),
        ("GET", "/models", routes.get_model_folders),
        ("GET", "/models/{folder}", routes.get_models),
        ("GET", "/embeddings", routes.get_embeddings),
        ("GET", "/extensions", routes.get_extensions),
    ]
    for method, path, handler in table:
        app.router.add_route(method, "/api" + path, handler)
        app.router.add_route(method, path, handler)


class _Routes:
    def __init__(self, fake: ComfyServer) -> None:
        self.fake = fake

    # -- prompts and queue ----------------------------------------------------------------

    async def get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response(self.fake.queue_info())

    async def post_prompt(self, request: web.Request) -> web.Response:
        status, body = self.fake.submit(await request.json())
        return web.json_response(body, status=status)

    async def get_queue(self, request: web.Request) -> web.Response:
        return web.json_response(self.fake.queue.snapshot())

    async def post_queue(self, request: web.Request) -> web.Response:
        body = await request.json()
        if "clear" in body and body["clear"]:
            self.fake.queue.clear()
        if "delete" in body:
            for prompt_id in body["delete"]:
                self.fake.queue.delete(prompt_id)
        return web.Response()

    async def post_interrupt(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:  # no body: interrupt whatever runs
            body = {}
        self.fake.interrupt(body.get("prompt_id"))
        return web.Response()

    async def post_free(self, request: web.Request) -> web.Response:
        body = await request.json()
        logger.info(
            "free requested",
            extra={
                "unload_models": body.get("unload_models"),
                "free_memory": body.get("free_memory"),
            },
        )
        return web.Response()  # nothing is loaded: there is nothing to free

    # -- history --------------------------------------------------------------------------

    async def get_history(self, request: web.Request) -> web.Response:
        max_items = request.query.get("max_items")
        offset = request.query.get("offset")
        page = self.fake.queue.history_page(
            int(max_items) if max_items is not None else None,
            int(offset) if offset is not None else -1,
        )
        return web.json_response(page)

    async def get_history_entry(self, request: web.Request) -> web.Response:
        return web.json_response(self.fake.queue.history(request.match_info["prompt_id"]))

    async def post_history(self, request: web.Request) -> web.Response:
        body = await request.json()
        if "clear" in body and body["clear"]:
            self.fake.queue.clear_history()
        if "delete" in body:
            for prompt_id in body["delete"]:
                self.fake.queue.delete_history(prompt_id)
        return web.Response()

    # -- files ----------------------------------------------------------------------------

    async def get_view(self, request: web.Request) -> web.StreamResponse:
        """A file from output, input or temp: 400 for a bad name, 403 for an escaping
        subfolder, 404 when there is no such file."""
        query = request.query
        if "filename" not in query:
            return web.Response(status=404)
        folders = self.fake.folders
        name, base = folders.annotated(query["filename"])
        if not name or name[0] == "/" or ".." in name:
            return web.Response(status=400)
        if base is None:
            base = folders.directory_by_type(query.get("type", "output"))
            if base is None:
                return web.Response(status=400)
        directory = str(base)
        if "subfolder" in query:
            candidate = os.path.join(directory, query["subfolder"])
            if os.path.commonpath((os.path.abspath(candidate), directory)) != directory:
                return web.Response(status=403)
            directory = candidate
        name = os.path.basename(name)
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            return web.Response(status=404)
        return web.FileResponse(path, headers={"Content-Disposition": f'filename="{name}"'})

    async def post_upload_image(self, request: web.Request) -> web.Response:
        """Store an uploaded image; an identical file of the same name is reused, a different
        one gets ``name (1).ext`` unless ``overwrite`` is true."""
        post = await request.post()
        image = post.get("image")
        if not isinstance(image, web.FileField) or not image.filename:
            return web.Response(status=400)
        kind = str(post.get("type") or "input")
        base = self.fake.folders.directory_by_type(kind)
        if base is None:
            return web.Response(status=400)
        subfolder = str(post.get("subfolder", ""))
        folder = os.path.join(base, os.path.normpath(subfolder))
        filename = image.filename
        path = os.path.abspath(os.path.join(folder, filename))
        if os.path.commonpath((str(base), path)) != str(base):
            return web.Response(status=400)
        os.makedirs(folder, exist_ok=True)
        content = image.file.read()
        if str(post.get("overwrite")) not in ("true", "1"):
            stem, extension = os.path.splitext(image.filename)
            attempt = 1
            while os.path.exists(path):
                if _same_content(path, content):
                    return web.json_response(
                        {"name": filename, "subfolder": subfolder, "type": kind}
                    )
                filename = f"{stem} ({attempt}){extension}"
                path = os.path.join(folder, filename)
                attempt += 1
        with open(path, "wb") as stream:
            stream.write(content)
        return web.json_response({"name": filename, "subfolder": subfolder, "type": kind})

    # -- catalogue and models -------------------------------------------------------------

    async def get_object_info(self, request: web.Request) -> web.Response:
        return web.json_response(self.fake.live_types().object_info())

    async def get_object_info_class(self, request: web.Request) -> web.Response:
        name = request.match_info["node_class"]
        types = self.fake.live_types()
        return web.json_response({name: types.class_info(name)} if name in types else {})

    async def get_model_folders(self, request: web.Request) -> web.Response:
        return web.json_response(list(MODEL_FOLDERS))

    async def get_models(self, request: web.Request) -> web.Response:
        folder = request.match_info["folder"]
        if folder not in MODEL_FOLDERS:
            return web.Response(status=404)
        return web.json_response(self.fake.folders.list_models(folder))

    async def get_embeddings(self, request: web.Request) -> web.Response:
        names = self.fake.folders.list_models("embeddings")
        return web.json_response([os.path.splitext(name)[0] for name in names])

    async def get_extensions(self, request: web.Request) -> web.Response:
        return web.json_response([])  # no frontend, so no frontend extensions

    # -- server ---------------------------------------------------------------------------

    async def get_features(self, request: web.Request) -> web.Response:
        return web.json_response(SERVER_FEATURES)

    async def get_system_stats(self, request: web.Request) -> web.Response:
        page = os.sysconf("SC_PAGE_SIZE")
        ram_total = page * os.sysconf("SC_PHYS_PAGES")
        ram_free = page * os.sysconf("SC_AVPHYS_PAGES")
        argv = ["fakecomfy", "--root", str(self.fake.folders.root)]
        if self.fake.previews:
            argv += ["--preview-method", "auto"]
        system: dict[str, Any] = {
            "os": os.name,
            "ram_total": ram_total,
            "ram_free": ram_free,
            "comfyui_version": self.fake.version,
            **FRONTEND_VERSIONS,
            "python_version": sys.version,
            "pytorch_version": "none (fakecomfy)",
            "embedded_python": False,
            "argv": argv,
        }
        device = {
            "name": "cpu",
            "type": "cpu",
            "index": None,
            "vram_total": ram_total,
            "vram_free": ram_free,
            "torch_vram_total": ram_total,
            "torch_vram_free": ram_free,
        }
        return web.json_response({"system": system, "devices": [device]})


def _same_content(path: str, content: bytes) -> bool:
    with open(path, "rb") as stream:
        return stream.read() == content
