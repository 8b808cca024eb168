"""``POST /v1/jobs`` through the api function's application against moto in-process: p50
and p95 of the whole request (proxy event → JSON, models, workflow validation, admission
transaction, SQS send → 202), against one PutItem of a job-sized item in the same run.

The application is the one the Lambda function builds (``aws_api``), minus the entry
point's Powertools decorators (their metrics would print to this table). Like
bench_submit.py, submits go in batches on fresh tables: moto copies every table for each
TransactWriteItems, which would otherwise time moto rather than the API.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from bench.bench_submit import put_item_samples
from bench.common import Figure, Timing, use_dummy_aws_credentials
from comfyfleet.api.context import Caller
from comfyfleet.api.telemetry import RecordedMetrics
from comfyfleet.aws import reset_clients
from comfyfleet.domain import Limits, Scope
from comfyfleet.resources import provision
from comfyfleet.settings import Settings
from comfyfleet.store.dynamo import dynamo_stores
from comfyfleet.templates import render_template

REGION = "us-east-1"
BATCH = 40
ACCOUNTS = 4
LIMITS = Limits(requests_per_minute=10**6, concurrency=10, queue_depth=10**6, ring_slots=3)
HOST = "abc123.execute-api.us-east-1.amazonaws.com"


def submit_event(caller: Caller, body: str) -> dict[str, Any]:
    """The REST proxy event (v1) API Gateway sends for a submit, the authorizer's context in."""
    request_id = str(uuid.uuid4())
    headers = {"Host": HOST, "Content-Type": "application/json", "X-Forwarded-Proto": "https"}
    return {
        "resource": "/{proxy+}",
        "path": "/v1/jobs",
        "httpMethod": "POST",
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": "v1/jobs"},
        "stageVariables": None,
        "requestContext": {
            "requestId": request_id,
            "stage": "prod",
            "path": "/prod/v1/jobs",
            "httpMethod": "POST",
            "domainName": HOST,
            "apiId": "abc123",
            "authorizer": {**caller.to_context(), "principalId": caller.account_id},
        },
        "body": body,
        "isBase64Encoded": False,
    }


def run(quick: bool = False) -> list[Figure]:
    from moto import mock_aws

    use_dummy_aws_credentials()
    settings = Settings()
    workflow = render_template("sdxl", {"prompt": "a lighthouse", "seed": 1}).graph
    body = json.dumps({"prompt": workflow, "metadata": {"bench": True}})
    submits: list[float] = []
    puts: list[float] = []
    for _ in range(3 if quick else 10):
        with mock_aws():
            reset_clients()
            submits.extend(_batch(settings, body))
            puts.extend(put_item_samples(settings, workflow, BATCH))
        reset_clients()
    submit, put = Timing.of(submits), Timing.of(puts)
    return [
        Figure(
            name="POST /v1/jobs p50 (api, moto in-process)",
            value=submit.median * 1000,
            unit="ms",
            goal="report",
            ok=True,
            baseline=f"one PutItem p50 {put.median * 1000:.2f} ms "
            f"(x{submit.median / put.median:.1f})",
            noise=f"spread {submit.noise:.0%}, n={submit.runs}",
        ),
        Figure(
            name="POST /v1/jobs p95 (api, moto in-process)",
            value=submit.p95 * 1000,
            unit="ms",
            goal="report",
            ok=True,
            baseline=f"one PutItem p95 {put.p95 * 1000:.2f} ms (x{submit.p95 / put.p95:.1f})",
            noise=f"n={submit.runs}, {ACCOUNTS} accounts per batch of {BATCH}",
        ),
    ]


def _batch(settings: Settings, body: str) -> list[float]:
    """BATCH submits through the application on fresh tables; seconds per request."""
    from comfyfleet.api.wiring import aws_api

    provision(settings, endpoint_url=None, region=REGION)
    stores = dynamo_stores(settings, region=REGION)
    api = aws_api(settings, metrics=RecordedMetrics())
    callers = [
        Caller(
            account_id=stores.accounts.create(tier="pro", name="", now=time.time()).account_id,
            tier="pro",
            scopes=frozenset({Scope.JOBS}),
            key_id="sk_live_benchbenc",
            limits=LIMITS,
        )
        for _ in range(ACCOUNTS)
    ]
    api.handle(submit_event(callers[0], body))  # the first request reads the catalogue etc.
    samples = []
    for i in range(BATCH):
        event = submit_event(callers[i % ACCOUNTS], body)
        started = time.perf_counter()
        response = api.handle(event)
        samples.append(time.perf_counter() - started)
        if response["statusCode"] != 202:
            raise RuntimeError(f"submit refused: {response['body'][:300]}")
    return samples
