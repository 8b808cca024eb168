"""The api function under SnapStart: its request paths run once before the snapshot, and
what they and the snapshot leave behind handled by the runtime hooks (api.entry).

Priming sends the application the requests a user would — the OpenAPI document behind
``/doc``, a submit of a small core workflow, a read of that job and a list — with every AWS
call answered inside the process (comfyfleet.offline): pydantic's validators, Powertools'
route and validation machinery, the response models and botocore's serialisers, signing and
parsers all do their first-use work, and nothing is written or read, logged or counted.
The caches it filled (the node registry snapshot, the counters, the catalogues) hold that
empty world, so they are dropped before the snapshot, and after a restore dropped and read
again for real.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

from comfyfleet.api.context import Caller
from comfyfleet.api.http import DOC_PATH, HttpApi
from comfyfleet.api.telemetry import RecordedMetrics
from comfyfleet.domain import Limits, Scope
from comfyfleet.offline import OfflineCalls, offline_aws, quiet_logs

# A caller of no account: its "jobs" exist only in the offline answers.
_CALLER = Caller(
    account_id="acct_primingprimingprimingprim",
    tier="free",
    scopes=frozenset({Scope.JOBS}),
    key_id="sk_live_priming0",
    limits=Limits(requests_per_minute=60, concurrency=1, queue_depth=10, ring_slots=2),
)
# Core classes only, so no model URL and no catalogue is needed to validate it.
_WORKFLOW = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
    },
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "p"}},
}


def priming_event(method: str, path: str, body: Any = None, *, caller: bool = True) -> dict:
    """An API Gateway REST proxy event as the stage sends it (the authorizer's context in)."""
    host = "priming.execute-api.local"
    headers = {"Host": host, "Content-Type": "application/json", "X-Forwarded-Proto": "https"}
    context: dict[str, Any] = {"requestId": str(uuid.uuid4()), "stage": "prime", "path": path}
    if caller:
        context["authorizer"] = {**_CALLER.to_context(), "principalId": _CALLER.account_id}
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "requestContext": {**context, "httpMethod": method, "domainName": host},
        "body": json.dumps(body) if body is not None else None,
        "isBase64Encoded": False,
    }


def prime(api: HttpApi, clients: list[Any]) -> tuple[list[int], OfflineCalls]:
    """Run the request paths once, offline; the statuses answered and the calls made."""
    statuses = []
    # The primed submits count for no one: not a metric, admitted or refused.
    metrics, api.metrics = api.metrics, RecordedMetrics()
    try:
        with offline_aws(clients) as calls, quiet_logs():
            for event in _requests():
                statuses.append(int(api.handle(event)["statusCode"]))
    finally:
        api.metrics = metrics
    forget_cached(api)
    return statuses, calls


def _requests() -> Iterator[dict[str, Any]]:
    yield priming_event("GET", DOC_PATH, caller=False)
    yield priming_event("POST", "/v1/jobs", {"prompt": _WORKFLOW, "metadata": {"primed": True}})
    # A built-in template's graph: model references by URL, the URL rules, the loaders.
    yield priming_event("POST", "/v1/jobs", {"prompt": _template_graph()})
    yield priming_event("GET", "/v1/jobs/01M8PRIMINGPRIMINGPRIMINGP")
    yield priming_event("GET", "/v1/jobs")


def _template_graph() -> dict[str, Any]:
    from comfyfleet.templates import render_template

    return render_template("sdxl", {"prompt": "priming", "seed": 1}).graph


def forget_cached(api: HttpApi) -> None:
    """Drop what the application remembers of the world (it will read it again)."""
    api.jobs.dispatcher.snapshot.invalidate()
    api.jobs.dispatcher.counters.clear()
    api.node_classes.catalogues.clear()


def refresh_cached(api: HttpApi) -> None:
    """Read again what the first request would: the registry snapshot and the catalogues."""
    forget_cached(api)
    api.node_classes.fleet()
