"""fakecomfy: a stand-in ComfyUI 0.3.64 server for the GPU agent's tests and the dev stack.

It speaks ComfyUI's HTTP and WebSocket protocol as recorded from a real server
(tests/fixtures/comfyui-0.3.64): validation errors, message order, history, interrupts,
caching and preview frames. Pixel nodes run for real with Pillow; model nodes check their
files and pass placeholders, and samplers take ``steps × step_seconds``.

    with start_fakecomfy(tmp_path, previews=True) as comfy:
        requests.post(f"{comfy.url}/prompt", json={"prompt": graph, "client_id": cid})
"""

from __future__ import annotations

from fakecomfy.nodes_model import placeholder_safetensors
from fakecomfy.runner import RunningFakeComfy, serve, start_fakecomfy
from fakecomfy.server import COMFYUI_VERSION, FakeComfy

__all__ = [
    "COMFYUI_VERSION",
    "FakeComfy",
    "RunningFakeComfy",
    "placeholder_safetensors",
    "serve",
    "start_fakecomfy",
]
