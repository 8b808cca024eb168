"""``FakeComfy``: the server's state, ``POST /prompt`` admission and the prompt worker.

One worker thread takes prompts from the queue in order and executes them, as ComfyUI's
``prompt_worker`` does; HTTP and WebSocket handling stay on the aiohttp event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

from fakecomfy.execution import ExecutionReport, PromptExecutor
from fakecomfy.folders import ComfyFolders
from fakecomfy.hub import MAX_UPLOAD_SIZE, SocketHub
from fakecomfy.node_types import LiveNodeTypes, NodeTypes, core_object_info
from fakecomfy.prompt_queue import PromptQueue, QueueItem
from fakecomfy.routes import add_routes, origin_only
from fakecomfy.validation import prompt_error, validate_prompt

logger = logging.getLogger(__name__)

COMFYUI_VERSION = "0.3.64"


class FakeComfy:
    """A stand-in for a ComfyUI 0.3.64 server over the folders under ``root``.

    ``step_seconds`` is how long one sampler step takes; ``previews`` turns on latent preview
    frames (ComfyUI's ``--preview-method``); ``catalogue`` is an ``/object_info`` document
    (default: ComfyUI's recorded core classes). ``make_app`` gives the aiohttp application;
    its startup starts the worker and its cleanup stops it.
    """

    def __init__(
        self,
        root: Path,
        *,
        step_seconds: float = 0.05,
        previews: bool = False,
        catalogue: dict[str, Any] | None = None,
    ) -> None:
        self.folders = ComfyFolders(Path(root))
        self.folders.ensure()
        self.version = COMFYUI_VERSION
        self.step_seconds = step_seconds
        self.previews = previews
        self.node_types = NodeTypes(catalogue if catalogue is not None else core_object_info())
        self.interrupt_flag = threading.Event()
        self.hub = SocketHub(self.queue_info, self._executing_node)
        self.queue = PromptQueue(self._announce_queue)
        self.executor = PromptExecutor(
            self.hub,
            self.folders,
            self.interrupt_flag,
            step_seconds=step_seconds,
            previews=previews,
        )
        self._number = 0
        self._worker: threading.Thread | None = None

    # -- the application ------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_UPLOAD_SIZE, middlewares=[origin_only])
        add_routes(app, self)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        await self.hub.start()
        self._worker = threading.Thread(target=self._work, name="fakecomfy-worker")
        self._worker.start()

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.hub.close_sockets()

    async def _on_cleanup(self, app: web.Application) -> None:
        # Stop taking prompts and interrupt the running one at its next step or node.
        self.queue.close()
        self.interrupt_flag.set()
        worker = self._worker
        if worker is not None:
            await asyncio.to_thread(worker.join)
        await self.hub.stop()

    # -- state read by handlers -----------------------------------------------------------

    def queue_info(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": self.queue.remaining()}}

    def live_types(self) -> LiveNodeTypes:
        return self.node_types.live(self.folders)

    def _announce_queue(self, remaining: int) -> None:
        self.hub.send("status", {"status": {"exec_info": {"queue_remaining": remaining}}}, None)

    def _executing_node(self, sid: str) -> str | None:
        if self.executor.client_id == sid:
            return self.executor.last_node_id
        return None

    # -- POST /prompt, POST /interrupt ----------------------------------------------------

    def submit(self, body: Any) -> tuple[int, dict[str, Any]]:
        """Admit a ``POST /prompt`` body: (HTTP status, response body).

        Like ComfyUI, every body takes a queue number, even one that is then rejected; a
        malformed body (not an object, a prompt that is not an object) raises, which the
        server answers with a 500.
        """
        if "number" in body:
            number: float = float(body["number"])
        else:
            number = self._number
            if "front" in body and body["front"]:
                number = -number
            self._number += 1
        if "prompt" not in body:
            error = prompt_error("no_prompt", "No prompt provided", "No prompt provided")
            return 400, {"error": error, "node_errors": {}}
        prompt = body["prompt"]
        prompt_id = str(body.get("prompt_id", uuid.uuid4()))
        targets = body.get("partial_execution_targets")
        verdict = validate_prompt(prompt, self.live_types(), self.folders, targets)
        extra_data = body["extra_data"] if "extra_data" in body else {}
        if "client_id" in body:
            extra_data["client_id"] = body["client_id"]
        if not verdict.ok:
            logger.warning("invalid prompt", extra={"error": verdict.error})
            return 400, {"error": verdict.error, "node_errors": verdict.node_errors}
        self.queue.put(QueueItem(number, prompt_id, prompt, extra_data, verdict.outputs))
        logger.info("prompt queued", extra={"prompt_id": prompt_id, "number": number})
        return 200, {"prompt_id": prompt_id, "number": number, "node_errors": verdict.node_errors}

    def interrupt(self, prompt_id: Any = None) -> None:
        """Interrupt the running prompt (only if it is ``prompt_id``, when given)."""
        if prompt_id and not self.queue.is_running(prompt_id):
            logger.info("prompt not running, interrupt skipped", extra={"prompt_id": prompt_id})
            return
        logger.info("interrupt", extra={"prompt_id": prompt_id})
        self.interrupt_flag.set()

    # -- the worker -----------------------------------------------------------------------

    def _work(self) -> None:
        """Take prompts in order and run them until the queue is closed."""
        while (item := self.queue.next()) is not None:
            try:
                report = self.executor.execute(item, self.live_types())
            except Exception:  # a bug of fakecomfy's own: record it, keep serving
                logger.exception("prompt execution crashed", extra={"prompt_id": item.prompt_id})
                status = {"status_str": "error", "completed": False, "messages": []}
                report = ExecutionReport({}, {}, status)
            self.queue.finish(item, report.outputs, report.meta, report.status)
            if item.client_id is not None:
                # Only now, with the history written, is the prompt done for the client.
                done = {"node": None, "prompt_id": item.prompt_id}
                self.hub.send("executing", done, item.client_id)
