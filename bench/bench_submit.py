"""The submit path against moto in-process: AWS calls per submit and latency vs one PutItem.

moto copies every table for each TransactWriteItems (to roll back), so its transactions
slow down as tables fill; submits are measured in batches on fresh tables to time the
submit path rather than that copy.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from bench.common import Figure, Timing, use_dummy_aws_credentials
from comfyfleet.aws import client, reset_clients
from comfyfleet.clock import SystemClock
from comfyfleet.domain import Limits
from comfyfleet.events import MemoryJobEvents
from comfyfleet.queues import SqsJobQueues
from comfyfleet.resources import JOBS, provision
from comfyfleet.scheduling import Dispatcher, JobRequest
from comfyfleet.settings import Settings
from comfyfleet.store.dynamo import dynamo_stores
from comfyfleet.store.dynamo.codec import pack_workflow
from comfyfleet.templates import render_template

REGION = "us-east-1"
HOT_PATH = {"TransactWriteItems", "SendMessage"}
LIMITS = Limits(requests_per_minute=100_000, concurrency=10, queue_depth=100_000, ring_slots=3)
BATCH = 40
ACCOUNTS = 4


def run(quick: bool = False) -> list[Figure]:
    from moto import mock_aws

    use_dummy_aws_credentials()
    settings = Settings()
    workflow = render_template("sdxl", {"prompt": "a lighthouse", "seed": 1}).graph
    calls: Counter[str] = Counter()
    submit_samples: list[float] = []
    put_samples: list[float] = []
    raw_samples: list[float] = []
    elapsed = 0.0
    for _ in range(3 if quick else 10):
        with mock_aws():
            reset_clients()
            submits, seconds = _batch(settings, workflow, calls)
            submit_samples.extend(submits)
            elapsed += seconds
            put_samples.extend(put_item_samples(settings, workflow, BATCH))
            raw_samples.extend(_raw_transactions(settings, workflow, BATCH))
        reset_clients()
    submit, put = Timing.of(submit_samples), Timing.of(put_samples)
    raw = Timing.of(raw_samples)
    count = len(submit_samples)
    hot = sum(n for name, n in calls.items() if name in HOT_PATH) / count
    reads = {name: n for name, n in calls.items() if name not in HOT_PATH}
    return [
        Figure(
            name="AWS calls per submit (hot path)",
            value=hot,
            unit="calls",
            goal="<= 2",
            ok=hot <= 2,
            baseline=f"+{sum(reads.values()) / count:.2f} reads/submit at "
            f"{count / elapsed:.0f} submits/s ("
            + ", ".join(f"{k} {v}" for k, v in sorted(reads.items()))
            + ")",
            noise=f"{count} submits, {ACCOUNTS} accounts per batch",
        ),
        Figure(
            name="submit latency p50 (moto in-process)",
            value=submit.median * 1000,
            unit="ms",
            goal="report",
            ok=True,
            baseline=f"one PutItem {put.median * 1000:.2f} ms (x{submit.median / put.median:.1f}"
            f"); p95 {submit.p95 * 1000:.2f} ms (x{submit.p95 / put.p95:.1f} PutItem p95); "
            f"the bare admission transaction {raw.median * 1000:.2f} ms "
            f"(x{submit.median / raw.median:.2f})",
            noise=f"spread {submit.noise:.0%}, n={submit.runs}",
        ),
    ]


def _batch(
    settings: Settings, workflow: dict[str, Any], calls: Counter[str]
) -> tuple[list[float], float]:
    """Submit BATCH jobs on fresh tables; latencies and wall time, AWS calls counted."""
    provisioned = provision(settings, endpoint_url=None, region=REGION)
    stores = dynamo_stores(settings, region=REGION)
    dispatcher = Dispatcher(
        stores,
        SqsJobQueues(client("sqs", region=REGION)),
        settings,
        SystemClock(),
        shared_url=provisioned.queue_urls["shared"],
        events=MemoryJobEvents(),
    )
    accounts = [
        stores.accounts.create(tier="pro", name="", now=time.time()).account_id
        for _ in range(ACCOUNTS)
    ]
    request = JobRequest(workflow, [])

    def count(model: Any, **_: Any) -> None:
        calls.update([model.name])

    for service in ("dynamodb", "sqs"):
        client(service, region=REGION).meta.events.register("before-call", count)
    samples = []
    started = time.perf_counter()
    for i in range(BATCH):
        t0 = time.perf_counter()
        dispatcher.submit(accounts[i % ACCOUNTS], "pro", LIMITS, request)
        samples.append(time.perf_counter() - t0)
    seconds = time.perf_counter() - started
    for service in ("dynamodb", "sqs"):
        client(service, region=REGION).meta.events.unregister("before-call", count)
    return samples, seconds


def put_item_samples(settings: Settings, workflow: dict[str, Any], runs: int) -> list[float]:
    """PutItem of a job-sized item on the same moto: the floor of any submit."""
    db = client("dynamodb", region=REGION)
    blob = pack_workflow(workflow)
    samples = []
    for i in range(runs):
        t0 = time.perf_counter()
        db.put_item(
            TableName=JOBS.name(settings),
            Item={
                "job_id": {"S": f"bench-{i}"},
                "workflow": {"B": blob},
                "account_id": {"S": "acct"},
                "state": {"S": "queued"},
            },
        )
        samples.append(time.perf_counter() - t0)
    return samples


def _raw_transactions(settings: Settings, workflow: dict[str, Any], runs: int) -> list[float]:
    """The admission transaction's items written directly: moto's own cost of a submit."""
    from comfyfleet.domain import Job, JobState
    from comfyfleet.ids import new_job_id
    from comfyfleet.resources import LIMITS as LIMITS_TABLE
    from comfyfleet.store.dynamo import counters as c
    from comfyfleet.store.dynamo.codec import job_to_item

    db = client("dynamodb", region=REGION)
    account = (
        dynamo_stores(settings, region=REGION)
        .accounts.create(tier="pro", name="", now=time.time())
        .account_id
    )
    table = LIMITS_TABLE.name(settings)
    samples = []
    for _ in range(runs):
        now = time.time()
        job = Job(new_job_id(now), account, JobState.QUEUED, now, workflow)
        items = [
            c.count_request(table, account, now=now, limit=10**9),
            c.move_counters(table, account, c.ADMIT_TO_BACKLOG),
            {"Put": {"TableName": JOBS.name(settings), "Item": job_to_item(job)}},
        ]
        t0 = time.perf_counter()
        db.transact_write_items(TransactItems=items)
        samples.append(time.perf_counter() - t0)
    return samples
