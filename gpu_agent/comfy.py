"""A client of one ComfyUI server, as its protocol really behaves (docs: COMFYUI facts in
tests/fixtures/comfyui-0.3.64): open the socket before posting, use the job id as the
prompt id, treat ``executing`` with ``node: null`` as done, and always read ``/history``.
"""

from __future__ import annotations

import json
import logging
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests
import websocket

logger = logging.getLogger(__name__)

PREVIEW_IMAGE = 1  # binary frame: u32 type, u32 format (1 JPEG, 2 PNG), image bytes
PREVIEW_IMAGE_WITH_METADATA = 4  # u32 type, u32 JSON length, JSON, image bytes
_FORMATS = {1: "jpeg", 2: "png"}
_RECONNECT_TRIES = 5
TICK_SECONDS = 1.0


class ComfyUnavailable(Exception):
    """ComfyUI does not answer (down, restarting, crashed): not the workflow's fault."""


class ComfyRejected(Exception):
    """ComfyUI refused the prompt (400): ``body`` holds its error and node_errors."""

    def __init__(self, body: dict[str, Any]) -> None:
        error = body.get("error")
        message = error.get("message") if isinstance(error, dict) else None
        super().__init__(str(message or "ComfyUI refused the workflow"))
        self.body = body


@dataclass(frozen=True)
class Preview:
    image: bytes
    extension: str  # "jpeg" or "png"
    node_id: str | None = None


@dataclass
class RunResult:
    """How a prompt ended, read from /history (the source of truth) and the socket."""

    status: str  # "success", "error", "interrupted"
    outputs: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None  # execution_error data
    interrupted: dict[str, Any] | None = None  # execution_interrupted data


class RunListener(Protocol):
    def progress(self, value: float, maximum: float, node: str | None) -> None: ...

    def executing(self, node: str) -> None: ...

    def preview(self, preview: Preview) -> None: ...

    def progress_state(self, nodes: dict[str, Any]) -> None:
        """Every started node's {value, max, state} (ComfyUI's ``progress_state``)."""
        ...

    def tick(self) -> None:
        """Called about once a second while the prompt runs (cancel checks, timeouts)."""
        ...


class ComfyClient:
    def __init__(
        self, base_url: str, *, client_id: str | None = None, timeout: float = 10.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id or f"comfyfleet-{uuid.uuid4().hex}"
        self.timeout = timeout
        self.http = requests.Session()
        # ComfyUI runs beside the agent: no proxy applies, and reading the proxy variables
        # on every request costs more than the request itself on a loaded host.
        self.http.trust_env = False
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        self.ws_url = f"{scheme}://{parts.netloc}{parts.path}/ws?clientId={self.client_id}"
        self._socket: websocket.WebSocket | None = None

    # -- plain HTTP -------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        try:
            # No Origin header: ComfyUI refuses a browser-like request from another origin.
            return self.http.request(method, self.base_url + path, **kwargs)
        except requests.RequestException as exc:
            raise ComfyUnavailable(f"ComfyUI at {self.base_url}: {exc}") from exc

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        if response.status_code >= 500:
            raise ComfyUnavailable(f"ComfyUI answered {response.status_code} to {path}")
        response.raise_for_status()
        return response.json()

    def system_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self._json("GET", "/system_stats")
        return stats

    def wait_ready(
        self, timeout: float, *, poll: float = 1.0, stop: threading.Event | None = None
    ) -> dict[str, Any]:
        """Wait until ComfyUI answers (its port opens only once every node is loaded).

        Raises ComfyUnavailable at the timeout, or as soon as ``stop`` is set.
        """
        deadline = time.monotonic() + timeout
        stop = stop or threading.Event()
        while True:
            try:
                return self.system_stats()
            except ComfyUnavailable:
                if time.monotonic() >= deadline or stop.wait(poll):
                    raise

    def object_info(self) -> bytes:
        response = self._request("GET", "/object_info", timeout=max(self.timeout, 60))
        if response.status_code != 200:
            raise ComfyUnavailable(f"ComfyUI answered {response.status_code} to /object_info")
        return response.content

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The prompt's history entry, or None while it is pending or running."""
        entries = self._json("GET", f"/history/{prompt_id}")
        entry = entries.get(prompt_id) if isinstance(entries, dict) else None
        return entry if isinstance(entry, dict) else None

    def view(self, filename: str, subfolder: str, kind: str) -> bytes:
        response = self._request(
            "GET", "/view", params={"filename": filename, "subfolder": subfolder, "type": kind}
        )
        if response.status_code != 200:
            raise FileNotFoundError(f"/view {kind}/{subfolder}/{filename}: {response.status_code}")
        return response.content

    def is_queued(self, prompt_id: str) -> bool:
        """Whether the prompt is running or waiting in ComfyUI's queue (``GET /queue``)."""
        queue = self._json("GET", "/queue")
        entries = [*queue.get("queue_running", []), *queue.get("queue_pending", [])]
        # Each entry is [number, prompt_id, prompt, extra_data, outputs].
        return any(len(entry) > 1 and entry[1] == prompt_id for entry in entries)

    def interrupt(self, prompt_id: str) -> None:
        """Interrupt the prompt if it runs, and drop it if it still waits in ComfyUI's queue."""
        self._request("POST", "/interrupt", json={"prompt_id": prompt_id})
        self._request("POST", "/queue", json={"delete": [prompt_id]})

    # -- a run ------------------------------------------------------------------------------

    def _connect(self) -> websocket.WebSocket:
        try:
            # UTF-8 validation is pure Python in websocket-client (about a millisecond per
            # frame); json.loads refuses malformed text anyway.
            ws = websocket.create_connection(
                self.ws_url, timeout=self.timeout, skip_utf8_validation=True
            )
        except (OSError, websocket.WebSocketException) as exc:
            raise ComfyUnavailable(f"ComfyUI socket at {self.ws_url}: {exc}") from exc
        # Ask for previews with metadata (type 4 frames name their prompt).
        ws.send(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
        ws.settimeout(TICK_SECONDS)
        return ws

    def run(self, prompt_id: str, graph: dict[str, Any], listener: RunListener) -> RunResult:
        """Run ``graph`` as ``prompt_id`` and follow it to the end.

        Raises ComfyRejected (400: validation) or ComfyUnavailable (ComfyUI gone).
        """
        ws = self._connect()  # before posting: per-prompt messages go to this socket only
        try:
            response = self._request(
                "POST",
                "/prompt",
                json={"prompt": graph, "client_id": self.client_id, "prompt_id": prompt_id},
            )
        except ComfyUnavailable:
            ws.close()
            raise
        if response.status_code != 200:
            ws.close()
            if response.status_code == 400:
                raise ComfyRejected(_json_or_text(response))
            raise ComfyUnavailable(f"ComfyUI answered {response.status_code} to /prompt")
        seen = self._follow(ws, prompt_id, listener)
        entry = self._history_when_written(prompt_id, listener)
        return _result(entry, seen)

    def _follow(
        self, ws: websocket.WebSocket, prompt_id: str, listener: RunListener
    ) -> dict[str, Any]:
        """Read the socket until ``executing`` null for our prompt; reconnect if it drops.
        Closes whichever socket it ends with."""
        try:
            return self._read_until_done(ws, prompt_id, listener)
        finally:
            if self._socket is not None:
                self._socket.close()
                self._socket = None

    def _read_until_done(
        self, ws: websocket.WebSocket, prompt_id: str, listener: RunListener
    ) -> dict[str, Any]:
        self._socket = ws
        seen: dict[str, Any] = {}
        last_tick = time.monotonic()
        while True:
            # A busy socket never times out: tick on the clock, not only on silence.
            if time.monotonic() - last_tick >= TICK_SECONDS:
                last_tick = time.monotonic()
                listener.tick()
            try:
                opcode, data = ws.recv_data()
            except websocket.WebSocketTimeoutException:
                continue
            except (OSError, websocket.WebSocketException):
                opcode, data = websocket.ABNF.OPCODE_CLOSE, b""
            if opcode == websocket.ABNF.OPCODE_CLOSE:  # ComfyUI closed it, or the link broke
                logger.warning("ComfyUI socket dropped; reconnecting", extra={"job_id": prompt_id})
                ws.close()
                ws = self._socket = self._reconnect()
                if self._ended_while_away(prompt_id):
                    return seen  # it finished while we were away: /history has it all
                continue
            if opcode == websocket.ABNF.OPCODE_BINARY:
                preview = _preview(data, prompt_id)
                if preview is not None:
                    listener.preview(preview)
                continue
            if opcode != websocket.ABNF.OPCODE_TEXT:
                continue
            message = json.loads(data)
            kind, body = message.get("type"), message.get("data") or {}
            if body.get("prompt_id") != prompt_id:
                continue
            if kind == "executing":
                if body.get("node") is None:
                    return seen
                listener.executing(str(body["node"]))
            elif kind == "progress":
                listener.progress(
                    float(body.get("value", 0)), float(body.get("max", 0)), body.get("node")
                )
            elif kind == "progress_state" and isinstance(body.get("nodes"), dict):
                listener.progress_state(body["nodes"])
            elif kind in ("execution_error", "execution_interrupted"):
                seen[kind] = body

    def _ended_while_away(self, prompt_id: str) -> bool:
        """After a reconnect: True if the prompt has its history; raises ComfyUnavailable
        if ComfyUI no longer knows it (it restarted: history and queue live in memory), where
        waiting for ``executing`` null would wait for ever."""
        if self.history(prompt_id) is not None:
            return True
        if self.is_queued(prompt_id):
            return False
        if self.history(prompt_id) is not None:  # it ended between the two reads
            return True
        raise ComfyUnavailable(f"ComfyUI lost prompt {prompt_id} (restarted?)")

    def _reconnect(self) -> websocket.WebSocket:
        for attempt in range(_RECONNECT_TRIES):
            try:
                return self._connect()  # the same clientId: later messages reach us again
            except ComfyUnavailable:
                time.sleep(min(2**attempt, 8))
        raise ComfyUnavailable("ComfyUI socket did not come back")

    def _history_when_written(self, prompt_id: str, listener: RunListener) -> dict[str, Any]:
        """History is written before ``executing`` null, but after a reconnect it may lag."""
        for _ in range(600):
            entry = self.history(prompt_id)
            if entry is not None:
                return entry
            listener.tick()
            time.sleep(0.5)
        raise ComfyUnavailable(f"no history for prompt {prompt_id}")


def _json_or_text(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"error": {"type": "invalid_response", "message": response.text[:500]}}
    return body if isinstance(body, dict) else {"error": {"message": str(body)[:500]}}


def _preview(frame: bytes, prompt_id: str) -> Preview | None:
    if len(frame) < 8:
        return None
    (event,) = struct.unpack(">I", frame[:4])
    if event == PREVIEW_IMAGE:
        (kind,) = struct.unpack(">I", frame[4:8])
        return Preview(frame[8:], _FORMATS.get(kind, "jpeg"))
    if event == PREVIEW_IMAGE_WITH_METADATA:
        (length,) = struct.unpack(">I", frame[4:8])
        try:
            metadata = json.loads(frame[8 : 8 + length])
        except ValueError:
            return None
        if metadata.get("prompt_id") not in (None, prompt_id):
            return None
        image_type = str(metadata.get("image_type", "image/jpeg"))
        extension = "png" if image_type.endswith("png") else "jpeg"
        return Preview(frame[8 + length :], extension, metadata.get("node_id"))
    return None


def _result(entry: dict[str, Any], seen: dict[str, Any]) -> RunResult:
    """The outcome: history's status and messages first, what the socket showed second."""
    status = entry.get("status") or {}
    outputs = entry.get("outputs") or {}
    messages = {
        kind: body
        for kind, body in status.get("messages") or []
        if kind in ("execution_error", "execution_interrupted")
    }
    error = messages.get("execution_error") or seen.get("execution_error")
    interrupted = messages.get("execution_interrupted") or seen.get("execution_interrupted")
    if interrupted is not None:
        return RunResult("interrupted", outputs, None, interrupted)
    if error is not None or status.get("status_str") == "error":
        return RunResult("error", outputs, error or {}, None)
    return RunResult("success", outputs)
