"""Every AWS request a process makes, written down: for counting what one job costs the
platform on the dev stack (bench/bench_aws_calls.py). Dev only.

With ``COMFYFLEET_DEV_AWS_CALLS`` naming a file, each client comfyfleet.aws makes appends a
JSON line per call: the process (``COMFYFLEET_DEV_AWS_ROLE``, else its pid), the call
(``service.Operation``), the request and response body sizes and, for DynamoDB, the items it
names (request units follow from those). Lines are appended whole (O_APPEND), so the
functions and every agent can share one file. Refused inside Lambda: a deployment never
writes its requests anywhere.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

CALLS_ENV = "COMFYFLEET_DEV_AWS_CALLS"
ROLE_ENV = "COMFYFLEET_DEV_AWS_ROLE"
_lock = threading.Lock()
_sink: Any = None


def counting_enabled(environ: Any = os.environ) -> bool:
    return bool(environ.get(CALLS_ENV)) and not environ.get("AWS_LAMBDA_FUNCTION_NAME")


def count_calls(client: Any) -> None:
    """Record ``client``'s calls when the variable names a file (else nothing)."""
    if not counting_enabled():
        return
    service = client.meta.service_model.service_name
    role = os.environ.get(ROLE_ENV) or str(os.getpid())

    def before(params: Any, context: Any, **kwargs: Any) -> None:
        body = params.get("body") if isinstance(params, dict) else None
        context["comfyfleet_request_bytes"] = _size(body)
        context["comfyfleet_items"] = _items(service, body)

    def after(http_response: Any, model: Any, context: Any, **kwargs: Any) -> None:
        line = {
            "role": role,
            "call": f"{service}.{model.name}",
            "request_bytes": context.get("comfyfleet_request_bytes", 0),
            "response_bytes": len(getattr(http_response, "content", b"") or b""),
            "items": context.get("comfyfleet_items", 0),
        }
        _write(json.dumps(line, separators=(",", ":")) + "\n")

    client.meta.events.register("before-call", before)
    client.meta.events.register("after-call", after)


def _size(body: Any) -> int:
    """A request body's bytes: bytes, text, or a file-like object (an upload)."""
    if isinstance(body, bytes | bytearray | str):
        return len(body)
    try:
        here = body.tell()
        end = body.seek(0, os.SEEK_END)
        body.seek(here)
        return int(end - here)
    except (AttributeError, OSError, ValueError):
        return 0


def _items(service: str, body: Any) -> int:
    """The items a DynamoDB batch or transaction names (1 for other calls)."""
    if service != "dynamodb" or not isinstance(body, bytes | str) or not body:
        return 1
    try:
        document = json.loads(body)
    except (ValueError, TypeError):
        return 1
    if "TransactItems" in document:
        return len(document["TransactItems"])
    if "RequestItems" in document:
        return sum(
            len(v["Keys"]) if isinstance(v, dict) else len(v)
            for v in document["RequestItems"].values()
        )
    return 1


def _write(line: str) -> None:
    global _sink
    with _lock:
        if _sink is None:
            _sink = open(os.environ[CALLS_ENV], "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        _sink.write(line)
