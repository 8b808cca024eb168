"""AWS calls answered inside the process: for priming a function before its SnapStart snapshot.

Priming runs the real request paths once so that the lazy work in pydantic, Powertools and
botocore (validators, serialisers, signing, response parsing) is done when the snapshot is
taken. Those paths call DynamoDB, SQS and S3; here every call is built, signed and parsed as
usual, but answered by a botocore ``before-send`` handler: nothing leaves the process, so
priming writes nothing and reads nothing. The answers are the emptiest valid ones — no item,
no object (S3 404 ``NoSuchKey``), a message id for a send — so a primed submit is admitted
against nothing and queued nowhere. What it left in the application's caches must be dropped
before the snapshot (the entry point's ``before_snapshot`` hook does).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from botocore.awsrequest import AWSResponse

# S3 speaks XML; a missing object is how it says "nothing here".
_NO_SUCH_KEY = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code>'
    b"<Message>primed offline</Message></Error>"
)


class _Raw:
    """The body stream botocore reads a response from."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body

    def read(self, *_: Any, **__: Any) -> bytes:
        body, self._body = self._body, b""
        return body


@dataclass
class OfflineCalls:
    """The calls answered offline, as ``service.Operation``."""

    calls: list[str] = field(default_factory=list)


def _answer(service: str, operation: str, url: str) -> AWSResponse:
    if service == "s3":
        headers = {"Content-Type": "application/xml"}
        return AWSResponse(url, 404, headers, _Raw(_NO_SUCH_KEY))
    body: dict[str, Any] = {}
    if operation in ("SendMessage", "Publish"):
        body = {"MessageId": str(uuid.uuid4())}
    elif operation == "SendMessageBatch":
        body = {"Successful": [], "Failed": []}
    headers = {"Content-Type": "application/x-amz-json-1.0"}
    return AWSResponse(url, 200, headers, _Raw(json.dumps(body).encode()))


@contextmanager
def offline_aws(clients: Sequence[Any]) -> Iterator[OfflineCalls]:
    """While open, every call of ``clients`` is answered in the process (see the module)."""
    seen = OfflineCalls()
    handlers = []
    for client in clients:
        service = client.meta.service_model.service_name
        events = client.meta.events

        def answer(request: Any, service: str = service, **kwargs: Any) -> AWSResponse:
            operation = kwargs.get("event_name", "").rsplit(".", 1)[-1]
            seen.calls.append(f"{service}.{operation}")
            return _answer(service, operation, request.url)

        events.register_first("before-send", answer)
        handlers.append((events, answer))
    try:
        yield seen
    finally:
        for events, answer in handlers:
            events.unregister("before-send", answer)


@contextmanager
def quiet_logs() -> Iterator[None]:
    """No log lines below ERROR meanwhile: primed requests are not users' requests."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)
