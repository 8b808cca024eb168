"""The ``/ws`` endpoint and the ordered delivery of messages to its sockets.

Messages from the worker thread and from HTTP handlers go through one queue on the event
loop, so every socket sees them in the order they were produced. A message for a client id
goes to the socket currently registered under that id, or nowhere: ComfyUI does not buffer
for a disconnected client, and a client that reconnects with the same id gets what follows.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

logger = logging.getLogger(__name__)

MAX_UPLOAD_SIZE = 100 * 1024 * 1024  # ComfyUI's default --max-upload-size (100 MB)
SERVER_FEATURES: dict[str, Any] = {
    "supports_preview_metadata": True,
    "max_upload_size": MAX_UPLOAD_SIZE,
}

_Outgoing = tuple[str | bytes, str | None]  # (text or binary frame, client id or None = all)


class SocketHub:
    """Connected sockets by client id, their feature flags, and the outbox."""

    def __init__(
        self,
        queue_info: Callable[[], dict[str, Any]],
        executing_node: Callable[[str], str | None],
    ) -> None:
        self._queue_info = queue_info
        self._executing_node = executing_node  # the node running for a client, if any
        self._sockets: dict[str, web.WebSocketResponse] = {}
        self._flags: dict[str, dict[str, Any]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outbox: asyncio.Queue[_Outgoing] | None = None
        self._publisher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._outbox = asyncio.Queue()
        self._publisher = asyncio.create_task(self._publish())

    async def close_sockets(self) -> None:
        """Close every socket so their handlers end (the server cannot stop before)."""
        for ws in list(self._sockets.values()):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"Server shutdown")

    async def stop(self) -> None:
        await self.close_sockets()
        if self._publisher is not None:
            self._publisher.cancel()
            try:
                await self._publisher
            except asyncio.CancelledError:
                pass
        self._loop = None

    # -- sending (any thread) -------------------------------------------------------------

    def send(self, event: str, data: Any, sid: str | None) -> None:
        """Queue ``{type: event, data}`` for client ``sid`` (None: every socket)."""
        self._enqueue(json.dumps({"type": event, "data": data}), sid)

    def send_bytes(self, payload: bytes, sid: str | None) -> None:
        """Queue a binary frame (preview) for client ``sid`` (None: every socket)."""
        self._enqueue(payload, sid)

    def supports_preview_metadata(self, sid: str | None) -> bool:
        flags = self._flags.get(sid) if sid is not None else None
        return bool(flags and flags.get("supports_preview_metadata"))

    def _enqueue(self, message: str | bytes, sid: str | None) -> None:
        loop, outbox = self._loop, self._outbox
        if loop is None or outbox is None or loop.is_closed():
            return  # shutting down: nobody is listening any more
        try:
            loop.call_soon_threadsafe(outbox.put_nowait, (message, sid))
        except RuntimeError:  # the loop closed between the check and the call
            logger.debug("message dropped after shutdown", extra={"sid": sid})

    async def _publish(self) -> None:
        assert self._outbox is not None
        while True:
            message, sid = await self._outbox.get()
            if sid is None:
                targets = list(self._sockets.items())
            elif sid in self._sockets:
                targets = [(sid, self._sockets[sid])]
            else:
                continue  # that client is gone: ComfyUI drops the message too
            for target_sid, ws in targets:
                await _deliver(ws, message, target_sid)

    # -- the /ws handler ------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """``GET /ws?clientId=…``: register, greet with ``status``, answer the handshake."""
        ws = web.WebSocketResponse(max_msg_size=MAX_UPLOAD_SIZE)
        await ws.prepare(request)
        sid = request.query.get("clientId", "") or uuid.uuid4().hex
        self._sockets[sid] = ws  # a reconnect replaces the old socket under this id
        self._flags[sid] = {}
        logger.info("websocket connected", extra={"sid": sid})
        try:
            await ws.send_json(
                {"type": "status", "data": {"status": self._queue_info(), "sid": sid}}
            )
            node = self._executing_node(sid)
            if node is not None:  # reconnected mid-run: say where the run is
                await ws.send_json({"type": "executing", "data": {"node": node}})
            first = True
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(message.data)
                except ValueError:
                    logger.warning("invalid JSON from client", extra={"sid": sid})
                    continue
                # Only a client's first message may be the feature-flags handshake.
                if first and isinstance(data, dict) and data.get("type") == "feature_flags":
                    flags = data.get("data")
                    self._flags[sid] = flags if isinstance(flags, dict) else {}
                    await ws.send_json({"type": "feature_flags", "data": SERVER_FEATURES})
                first = False
        finally:
            if self._sockets.get(sid) is ws:
                del self._sockets[sid]
                self._flags.pop(sid, None)
            logger.info("websocket disconnected", extra={"sid": sid})
        return ws


async def _deliver(ws: web.WebSocketResponse, message: str | bytes, sid: str) -> None:
    if ws.closed:
        return
    try:
        if isinstance(message, bytes):
            await ws.send_bytes(message)
        else:
            await ws.send_str(message)
    except (ConnectionError, RuntimeError) as exc:
        logger.warning("websocket send failed", extra={"sid": sid, "error": str(exc)})
