"""Driving fakecomfy as a ComfyUI client does, and comparing with the 0.3.64 recordings.

A client opens ``/ws?clientId=…`` first, posts the prompt, follows the socket until
``executing`` with ``node: null`` for its prompt id, then reads ``/history``.
"""

from __future__ import annotations

import ast
import json
import struct
import time
import uuid
from dataclasses import dataclass
from typing import Any

import requests
import websocket

from fakecomfy import RunningFakeComfy
from tests.support import load_fixture

Message = dict[str, Any]
HANDSHAKE = {"type": "feature_flags", "data": {"supports_preview_metadata": True}}


def recording(scenario: str) -> dict[str, Any]:
    """One scenario of transcripts.json (recorded from a real ComfyUI 0.3.64)."""
    scenarios: dict[str, Any] = load_fixture("transcripts.json")
    return dict(scenarios[scenario])


def sd15_recording() -> list[dict[str, Any]]:
    """The two runs of transcript_sd15_sampler.json (without, then with the handshake)."""
    runs: list[dict[str, Any]] = load_fixture("transcript_sd15_sampler.json")["runs"]
    return runs


def parse_frame(frame: str | bytes) -> Message:
    """A text frame as ``{type, data}``; a binary one as ``{type: "binary", event, …}``."""
    if isinstance(frame, str):
        parsed: Message = json.loads(frame)
        return parsed
    event = struct.unpack(">I", frame[:4])[0]
    (word,) = struct.unpack(">I", frame[4:8])
    if event == 4:
        metadata = json.loads(frame[8 : 8 + word])
        return {"type": "binary", "event": 4, "metadata": metadata, "image": frame[8 + word :]}
    return {"type": "binary", "event": event, "format": word, "image": frame[8:]}


class ComfySocket:
    """A client's ``/ws`` connection, with every message it received kept in order."""

    def __init__(
        self, comfy: RunningFakeComfy, client_id: str | None = None, *, handshake: bool = False
    ) -> None:
        self.client_id = client_id or str(uuid.uuid4())
        self._ws = websocket.create_connection(
            f"{comfy.ws_url}?clientId={self.client_id}", timeout=10
        )
        self.received: list[Message] = [self.recv()]  # the greeting: status with sid
        if handshake:
            self._ws.send(json.dumps(HANDSHAKE))
            self.received.append(self.recv())  # feature_flags, before anything is posted

    def recv(self, timeout: float = 10.0) -> Message:
        self._ws.settimeout(timeout)
        return parse_frame(self._ws.recv())

    def next_message(self, timeout: float = 10.0) -> Message:
        message = self.recv(timeout)
        self.received.append(message)
        return message

    def follow(self, prompt_id: str, timeout: float = 10.0) -> list[Message]:
        """Receive until ``executing`` with ``node: null`` for ``prompt_id``; all received."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.next_message(max(deadline - time.monotonic(), 0.01))
            data = message.get("data") or {}
            if (
                message["type"] == "executing"
                and data["node"] is None
                and data.get("prompt_id") == prompt_id
            ):
                return self.received

    def wait_for(self, kind: str, timeout: float = 10.0, **fields: Any) -> Message:
        """Receive until a message of ``kind`` whose data has ``fields``."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.next_message(max(deadline - time.monotonic(), 0.01))
            data = message.get("data") or {}
            if message["type"] == kind and all(data.get(k) == v for k, v in fields.items()):
                return message

    def close(self) -> None:
        self._ws.close()


def post_prompt(
    comfy: RunningFakeComfy, graph: Any, client_id: str, **extra: Any
) -> requests.Response:
    return requests.post(
        f"{comfy.url}/prompt", json={"prompt": graph, "client_id": client_id, **extra}, timeout=10
    )


def wait_for_history(comfy: RunningFakeComfy, prompt_id: str, timeout: float = 10.0) -> Any:
    """Poll ``/history/{id}`` until the prompt has finished; its history entry."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = requests.get(f"{comfy.url}/history/{prompt_id}", timeout=10).json()
        if entry:
            return entry[prompt_id]
        time.sleep(0.01)
    raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout} s")


@dataclass
class Run:
    """One prompt run end to end: the POST answer, the socket's messages, the history."""

    client_id: str
    response: dict[str, Any]
    messages: list[Message]
    history: dict[str, Any]

    @property
    def prompt_id(self) -> str:
        return str(self.response["prompt_id"])

    def types(self) -> list[str]:
        return [m["type"] for m in self.messages]

    def ids(self) -> dict[str, str]:
        """This run's ids → placeholders, for comparing with a recording via ``normalized``."""
        return {self.prompt_id: "<prompt_id>", self.client_id: "<client_id>"}


def recorded_ids(scenario: dict[str, Any]) -> dict[str, str]:
    """A recorded run's ids → the placeholders ``Run.ids`` uses."""
    prompt_id = scenario["post_response"]["prompt_id"]
    return {prompt_id: "<prompt_id>", scenario["client_id"]: "<client_id>"}


def without_time(messages: list[Message]) -> list[Message]:
    """Recorded messages without their ``t`` (seconds since the socket opened)."""
    return [{k: v for k, v in m.items() if k != "t"} for m in messages]


def run_prompt(comfy: RunningFakeComfy, graph: Any, *, handshake: bool = False) -> Run:
    """Connect, post ``graph``, follow it to the end and read its history."""
    socket = ComfySocket(comfy, handshake=handshake)
    try:
        answer = post_prompt(comfy, graph, socket.client_id)
        assert answer.status_code == 200, answer.text
        prompt_id = answer.json()["prompt_id"]
        messages = socket.follow(prompt_id)
    finally:
        socket.close()
    history = requests.get(f"{comfy.url}/history/{prompt_id}", timeout=10).json()
    return Run(socket.client_id, answer.json(), messages, history)


def normalized(value: Any, ids: dict[str, str]) -> Any:
    """``value`` with run-specific parts replaced: the given ids, timestamps, numbers."""
    if isinstance(value, dict):
        return {
            ids.get(key, key): "<timestamp>" if key == "timestamp" else normalized(item, ids)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [normalized(item, ids) for item in value]
    if isinstance(value, str):
        return ids.get(value, value)
    return value


def summarize(messages: list[Message]) -> list[str]:
    """The compact sequence the sd15 recording keeps ("status x3", "progress 1/3", "BIN4")."""
    labels = []
    for message in messages:
        data = message.get("data") or {}
        kind = message["type"]
        if kind == "binary":
            labels.append(f"BIN{message['event']}")
        elif kind == "execution_cached":
            labels.append(f"execution_cached nodes={sorted(data['nodes'])}")
        elif kind in ("executing", "executed"):
            labels.append(f"{kind} node={data['node']}")
        elif kind == "progress":
            labels.append(f"progress {data['value']}/{data['max']}")
        else:
            labels.append(kind)
    grouped: list[str] = []
    counts: list[int] = []
    for label in labels:
        if grouped and grouped[-1] == label:
            counts[-1] += 1
        else:
            grouped.append(label)
            counts.append(1)
    return [label if n == 1 else f"{label} x{n}" for label, n in zip(grouped, counts, strict=True)]


def with_sorted_cached_nodes(label: str) -> str:
    """A summary label with its ``execution_cached`` node list sorted (ComfyUI's is a set)."""
    prefix = "execution_cached nodes="
    if not label.startswith(prefix):
        return label
    return prefix + str(sorted(ast.literal_eval(label[len(prefix) :])))


def sd15_graph(ckpt_name: str, seed: int, prefix: str, steps: int = 3) -> dict[str, Any]:
    """The recorded text-to-image graph (node ids 3–9, KSampler inputs in declared order)."""
    return {
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["4", 0],
                "seed": seed,
                "steps": steps,
                "cfg": 7.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
                "denoise": 1.0,
            },
        },
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "5": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": 128, "height": 128, "batch_size": 1},
        },
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": prefix}},
    }


def blur_chain(size: int, blurs: int, prefix: str = "probe_long") -> dict[str, Any]:
    """The recorded interrupt graph: EmptyImage → ImageBlur × n → SaveImage (node "9")."""
    graph: dict[str, Any] = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": size, "height": size, "batch_size": 1, "color": 8421504},
        }
    }
    for node in range(2, blurs + 2):
        graph[str(node)] = {
            "class_type": "ImageBlur",
            "inputs": {"image": [str(node - 1), 0], "blur_radius": 31, "sigma": 10.0},
        }
    graph["9"] = {
        "class_type": "SaveImage",
        "inputs": {"images": [str(blurs + 1), 0], "filename_prefix": prefix},
    }
    return graph
