"""Fault injection for the dev stack: a share of AWS calls fail as AWS fails them.

``COMFYFLEET_DEV_FAULTS="dynamodb=0.05,sqs=0.05,s3=0.05,sns=0.05"`` makes that share of each
service's requests answer with one of its real throttling or 5xx errors (DynamoDB's
``ThrottlingException`` and ``InternalServerError``, S3's ``SlowDown``, …), built in the
service's own wire protocol and handed to botocore at ``before-send``: the request never
leaves, and botocore parses, retries and raises exactly as it would for AWS's answer. So the
functions' and agents' retries and error handling run for real (``python -m bench.chaos``).

Dev only: ``comfyfleet dev`` marks itself and the processes it starts (``COMFYFLEET_DEV_STACK``),
and a process with the faults variable but without the mark (or inside Lambda) is refused at
its first client, loudly. ``COMFYFLEET_DEV_FAULTS_SEED`` makes the choice repeatable.
"""

from __future__ import annotations

import json
import os
import random
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.awsrequest import AWSResponse

FAULTS_ENV = "COMFYFLEET_DEV_FAULTS"
SEED_ENV = "COMFYFLEET_DEV_FAULTS_SEED"
STACK_ENV = "COMFYFLEET_DEV_STACK"


class FaultsRefused(RuntimeError):
    """The faults variable is set in a process the dev stack did not start."""


@dataclass(frozen=True)
class Fault:
    status: int
    code: str
    message: str


# Per service: the throttling error, then the server error, as AWS answers them.
FAULTS: dict[str, tuple[Fault, ...]] = {
    "dynamodb": (
        Fault(400, "ThrottlingException", "Rate of requests exceeds the allowed throughput."),
        Fault(500, "InternalServerError", "Internal server error"),
    ),
    "sqs": (
        Fault(400, "ThrottlingException", "Rate exceeded"),
        Fault(500, "InternalError", "We encountered an internal error. Please try again."),
    ),
    "s3": (
        Fault(503, "SlowDown", "Please reduce your request rate."),
        Fault(500, "InternalError", "We encountered an internal error. Please try again."),
    ),
    "sns": (
        Fault(400, "Throttling", "Rate exceeded"),
        Fault(500, "InternalError", "Request could not be completed"),
    ),
}


def parse_faults(text: str) -> dict[str, float]:
    """``service=share,…`` → {service: share}; ValueError naming what is wrong."""
    shares: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        service, sep, value = part.partition("=")
        service = service.strip()
        if not sep or service not in FAULTS:
            raise ValueError(
                f"{FAULTS_ENV}: {part!r} is not service=share (services: {', '.join(FAULTS)})"
            )
        try:
            share = float(value)
        except ValueError:
            raise ValueError(f"{FAULTS_ENV}: {service} share {value!r} is not a number") from None
        if not 0 <= share <= 1:
            raise ValueError(f"{FAULTS_ENV}: {service} share {share} is not between 0 and 1")
        shares[service] = share
    return shares


def check_allowed(environ: Mapping[str, str] = os.environ) -> None:
    """Refuse faults outside the dev stack (FaultsRefused), and a bad spec (ValueError)."""
    if not environ.get(FAULTS_ENV):
        return
    if not environ.get(STACK_ENV) or environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        raise FaultsRefused(
            f"{FAULTS_ENV} is set, but this process was not started by `comfyfleet dev`: "
            "faults are injected on the dev stack only, never in a deployment"
        )
    parse_faults(environ[FAULTS_ENV])


class _Body:
    """The raw stream botocore reads an answer's body from."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


def error_response(protocol: str, fault: Fault, url: str, target_prefix: str = "") -> AWSResponse:
    """``fault`` as the service's protocol writes it on the wire."""
    headers = {"x-amzn-RequestId": "comfyfleet-dev-fault"}
    if protocol == "json":
        namespace = {"DynamoDB_20120810": "com.amazonaws.dynamodb.v20120810"}.get(
            target_prefix, "com.amazonaws.sqs"
        )
        body = json.dumps({"__type": f"{namespace}#{fault.code}", "message": fault.message})
        headers["Content-Type"] = "application/x-amz-json-1.0"
        # SQS's JSON protocol carries its query-era code here (awsQueryCompatible).
        headers["x-amzn-query-error"] = (
            f"{fault.code};{'Sender' if fault.status < 500 else 'Receiver'}"
        )
    elif protocol == "rest-xml":
        body = f"<Error><Code>{fault.code}</Code><Message>{fault.message}</Message></Error>"
        headers["Content-Type"] = "application/xml"
    else:  # query
        kind = "Sender" if fault.status < 500 else "Receiver"
        body = (
            f"<ErrorResponse><Error><Type>{kind}</Type><Code>{fault.code}</Code>"
            f"<Message>{fault.message}</Message></Error><RequestId>comfyfleet-dev-fault"
            "</RequestId></ErrorResponse>"
        )
        headers["Content-Type"] = "text/xml"
    return AWSResponse(url, fault.status, headers, _Body(body.encode()))


class FaultInjector:
    """Fails a share of one client's requests at ``before-send``. The share is read from
    the environment at each call, so the stack can arm its own clients once it is up."""

    def __init__(self, client: Any, rng: random.Random) -> None:
        model = client.meta.service_model
        self.service = model.service_name
        self.protocol = model.protocol
        self.target_prefix = model.metadata.get("targetPrefix", "")
        self.rng = rng
        self._lock = threading.Lock()
        self._parsed: tuple[str, dict[str, float]] = ("", {})
        self.injected = 0

    def share(self) -> float:
        text = os.environ.get(FAULTS_ENV, "")
        if text != self._parsed[0]:
            self._parsed = (text, parse_faults(text))
        return self._parsed[1].get(self.service, 0.0)

    def before_send(self, request: Any, **_: Any) -> AWSResponse | None:
        share = self.share()
        if share <= 0:
            return None
        with self._lock:
            if self.rng.random() >= share:
                return None
            fault = self.rng.choice(FAULTS[self.service])
            self.injected += 1
        return error_response(self.protocol, fault, request.url, self.target_prefix)


_seeds = random.Random(os.environ.get(SEED_ENV) or None)


def install(client: Any) -> FaultInjector | None:
    """Inject faults into ``client``'s calls where the dev stack asked for them (always
    hooked there, armed by the variable); refused outside it."""
    check_allowed()
    if not os.environ.get(STACK_ENV) or client.meta.service_model.service_name not in FAULTS:
        return None
    injector = FaultInjector(client, random.Random(_seeds.random()))
    # First: before anything else that might answer (moto's in-process stubber).
    client.meta.events.register_first("before-send", injector.before_send)
    return injector
