"""Progress reporting: ``progress_state`` for every node, ``progress`` and previews per step.

The order per sampler step is ComfyUI's: check for interruption, ``progress_state``, the
preview with metadata (clients that sent the feature-flags handshake), ``progress``, then the
plain preview (other clients). ``progress_state`` goes to every socket, as ComfyUI sends it.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from typing import Any, Protocol

from PIL import Image

# Binary WebSocket event types (ComfyUI's ``protocol.BinaryEventTypes``).
PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4
JPEG_FORMAT = 1


class Messenger(Protocol):
    """Where messages go; ``sid`` None means every connected socket."""

    def send(self, event: str, data: Any, sid: str | None) -> None: ...

    def send_bytes(self, payload: bytes, sid: str | None) -> None: ...

    def supports_preview_metadata(self, sid: str | None) -> bool: ...


def preview_frame(jpeg: bytes) -> bytes:
    """Event 1: u32 type, u32 image format (1 = JPEG), the image."""
    return struct.pack(">II", PREVIEW_IMAGE, JPEG_FORMAT) + jpeg


def preview_frame_with_metadata(jpeg: bytes, metadata: dict[str, Any]) -> bytes:
    """Event 4: u32 type, u32 length of the JSON metadata, the metadata, the image."""
    encoded = json.dumps({**metadata, "image_type": "image/jpeg"}).encode("utf-8")
    return struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(encoded)) + encoded + jpeg


def encode_jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def node_identity(node_id: str) -> dict[str, Any]:
    """Display, parent and real ids of a node; fakecomfy has no subgraphs, so all are its own."""
    return {"display_node_id": node_id, "parent_node_id": None, "real_node_id": node_id}


class ProgressRegistry:
    """The progress of every node of one prompt, broadcast on each change."""

    def __init__(self, prompt_id: str, messenger: Messenger) -> None:
        self.prompt_id = prompt_id
        self._messenger = messenger
        self._nodes: dict[str, dict[str, Any]] = {}

    def _entry(self, node_id: str) -> dict[str, Any]:
        # A node finished without starting (served from cache) keeps ComfyUI's int defaults.
        return self._nodes.setdefault(node_id, {"state": "pending", "value": 0, "max": 1})

    def start(self, node_id: str) -> None:
        self._entry(node_id).update(state="running", value=0.0, max=1.0)
        self._broadcast()

    def update(self, node_id: str, value: int, total: int) -> None:
        self._entry(node_id).update(state="running", value=value, max=total)
        self._broadcast()

    def finish(self, node_id: str) -> None:
        entry = self._entry(node_id)
        entry.update(state="finished", value=entry["max"])
        self._broadcast()

    def _broadcast(self) -> None:
        nodes = {
            node_id: {
                "value": entry["value"],
                "max": entry["max"],
                "state": entry["state"],
                "node_id": node_id,
                "prompt_id": self.prompt_id,
                **node_identity(node_id),
            }
            for node_id, entry in self._nodes.items()
            if entry["state"] != "pending"
        }
        self._messenger.send("progress_state", {"prompt_id": self.prompt_id, "nodes": nodes}, None)


class StepReporter:
    """The hook a sampler calls after each step (ComfyUI's ``hijack_progress`` hook)."""

    def __init__(
        self,
        messenger: Messenger,
        registry: ProgressRegistry,
        client_id: str | None,
        check_interrupt: Callable[[], None],
    ) -> None:
        self._messenger = messenger
        self._registry = registry
        self._client_id = client_id
        self._check_interrupt = check_interrupt

    def report(self, node_id: str, value: int, total: int, preview: Image.Image | None) -> None:
        self._check_interrupt()  # ComfyUI's sampler stops here, between two steps
        self._registry.update(node_id, value, total)
        jpeg = encode_jpeg(preview) if preview is not None else None
        with_metadata = self._messenger.supports_preview_metadata(self._client_id)
        if jpeg is not None and with_metadata:
            metadata = {"node_id": node_id, "prompt_id": self._registry.prompt_id}
            metadata.update(node_identity(node_id))
            frame = preview_frame_with_metadata(jpeg, metadata)
            self._messenger.send_bytes(frame, self._client_id)
        progress = {
            "value": value,
            "max": total,
            "prompt_id": self._registry.prompt_id,
            "node": node_id,
        }
        self._messenger.send("progress", progress, self._client_id)
        if jpeg is not None and not with_metadata:
            self._messenger.send_bytes(preview_frame(jpeg), self._client_id)
