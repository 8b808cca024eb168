"""What the serverless parts around the GPUs cost per job: ``comfyfleet sim --costs``.

Per job, the AWS requests counted on the dev stack (bench/bench_aws_calls.py: submit to
webhook, idle traffic subtracted) priced at AWS's list prices; per day, what the fleet makes
whether or not jobs run (each node's heartbeats and long polls, the reaper, the api's node
registry snapshot), shared over the day's jobs. Beside it the GPU cost per 1,000 images from
the simulation. The figures are estimates: the request counts are measured, but DynamoDB's
request units per call are estimated from the items' sizes (UNITS_PER_CALL: strongly
consistent reads, the dearer case), Lambda durations are the warm figures of bench/, and a
client that polls instead of taking the webhook adds an API Gateway request, an api
invocation and a GetItem per poll.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# AWS list prices, us-east-1, USD, as published at this date (DynamoDB on demand after its
# 2024-11 price cut; Lambda on arm64, the stack's architecture). Check before relying on them.
PRICES_AS_OF = "2025-06"
PRICES: dict[str, float] = {
    "lambda_request": 0.20 / 1e6,
    "lambda_gb_second_arm": 0.0000133334,
    "api_gateway_rest_request": 3.50 / 1e6,  # first 333 M a month
    "dynamodb_write_unit": 0.625 / 1e6,
    "dynamodb_read_unit": 0.125 / 1e6,
    "sqs_fifo_request": 0.50 / 1e6,  # per 64 KB chunk
    "sns_publish": 0.50 / 1e6,  # delivery to SQS is free
    "s3_put": 0.005 / 1e3,
    "s3_get": 0.0004 / 1e3,
    "cloudfront_request": 0.0100 / 1e4,  # HTTPS
    "cloudfront_gb": 0.085,  # first 10 TB a month
    "logs_ingested_gb": 0.50,  # CloudWatch Logs: function logs and embedded metrics
    "cloudwatch_put_metric_data": 0.01 / 1e3,
    "cloudwatch_metric_month": 0.30,  # first 10,000 metrics
}

# Measured with bench/bench_aws_calls.py on 2026-12-03 (mean of 2 jobs per kind): requests
# per job by service and action, and DynamoDB's units from their sizes.
PER_JOB_CALLS: dict[str, dict[str, float]] = {
    "model-free": {
        "dynamodb.GetItem": 5.0, "dynamodb.Query": 1.9, "dynamodb.Scan": 0.5,
        "dynamodb.BatchGetItem": 0.5, "dynamodb.TransactWriteItems": 3.0,
        "dynamodb.UpdateItem": 4.8, "sqs.SendMessage": 1.0, "sqs.ReceiveMessage": 2.5,
        "sqs.DeleteMessage": 1.0, "sqs.DeleteMessageBatch": 1.0, "s3.PutObject": 1.0,
        "sns.Publish": 1.0,
    },
    "cached model": {
        "dynamodb.GetItem": 4.0, "dynamodb.Query": 1.9, "dynamodb.Scan": 0.5,
        "dynamodb.TransactWriteItems": 3.0, "dynamodb.UpdateItem": 4.8,
        "sqs.SendMessage": 1.0, "sqs.ReceiveMessage": 2.1, "sqs.DeleteMessage": 1.0,
        "sqs.DeleteMessageBatch": 1.0, "s3.PutObject": 1.0, "sns.Publish": 1.0,
    },
    "30 steps, previews": {
        "dynamodb.GetItem": 11.0, "dynamodb.Query": 2.0, "dynamodb.Scan": 0.9,
        "dynamodb.TransactWriteItems": 3.0, "dynamodb.UpdateItem": 11.9,
        "sqs.SendMessage": 1.0, "sqs.ReceiveMessage": 1.1, "sqs.ChangeMessageVisibility": 1.0,
        "sqs.DeleteMessage": 1.0, "sqs.DeleteMessageBatch": 1.0, "s3.PutObject": 6.0,
        "sns.Publish": 1.0,
    },
}  # fmt: skip
# Request units per DynamoDB call of each kind (items of ≤ 1 KB written, ≤ 4 KB read; a
# transaction pays twice; a job item with its workflow is 2-4 KB).
UNITS_PER_CALL: dict[str, tuple[str, float]] = {
    "dynamodb.GetItem": ("read", 1.0),
    "dynamodb.Query": ("read", 1.0),
    "dynamodb.BatchGetItem": ("read", 2.0),
    "dynamodb.Scan": ("read", 1.0),  # per 4 KB of nodes read: sized by the fleet below
    "dynamodb.UpdateItem": ("write", 1.0),
    "dynamodb.PutItem": ("write", 3.0),
    "dynamodb.TransactWriteItems": ("write", 2 * 2 * 2.0),  # 2 items, ~2 KB, ×2
}
NODE_ITEM_KB = 1.0  # a node record: status, heartbeat, cached models
# Warm durations (bench/) and the stack's memory sizes: (GB, seconds) per invocation.
LAMBDA_PER_JOB: dict[str, tuple[float, float, float]] = {
    # function: (invocations per job, GB, seconds)
    "api": (1.0, 1.0, 0.020),
    "authorizer": (1.0, 0.5, 0.015),  # cached 30 s per key (AUTHORIZER_CACHE_SECONDS): 1 at worst
    "webhooks": (1.0, 0.5, 0.100),  # waits on the user's endpoint
}
LOG_BYTES_PER_JOB = 8 * 1024  # three invocations' JSON lines and the submit's metrics
OUTPUT_BYTES = 1.5 * 1024**2  # a 1024² PNG, fetched once through the CDN
WEBP_OUTPUT_BYTES = 150 * 1024  # the same image as WebP (quality 90)
# Each node, all day: a heartbeat (node record, UpdateItem) every 5 s, long polls of its two
# queues (10 s); the reaper each minute; each busy api container's registry snapshot a second.
HEARTBEAT_SECONDS, LONG_POLL_SECONDS = 5.0, 10.0
REAPER_PER_DAY, REAPER_GB, REAPER_SECONDS = 1440, 0.5, 0.5
AGENT_METRIC_FLUSHES_PER_DAY = 1440  # each agent's PutMetricData, once a minute
METRIC_SERIES = 20  # names × reasons × service: no per-node dimension
SNAPSHOTS_PER_DAY_PER_CONTAINER = 86_400


@dataclass(frozen=True)
class Scale:
    """A day of traffic on a fleet."""

    jobs_per_day: float
    nodes: int
    api_containers: int  # busy api containers, each reading the node registry once a second


SCALES = (Scale(1e6, 1_000, 2), Scale(1e7, 10_000, 10))


def per_job_lines(kind: str, output_bytes: float = OUTPUT_BYTES) -> dict[str, float]:
    """USD per job by line, for one job of ``kind`` (its own requests and invocations)."""
    calls = PER_JOB_CALLS[kind]
    lines: dict[str, float] = {"API Gateway": PRICES["api_gateway_rest_request"]}
    for name, (count, gb, seconds) in LAMBDA_PER_JOB.items():
        lines[f"Lambda {name}"] = count * (
            PRICES["lambda_request"] + gb * seconds * PRICES["lambda_gb_second_arm"]
        )
    reads = writes = 0.0
    for call, count in calls.items():
        if call in UNITS_PER_CALL:
            kind_of, units = UNITS_PER_CALL[call]
            if kind_of == "read":
                reads += count * units
            else:
                writes += count * units
    lines["DynamoDB reads"] = reads * PRICES["dynamodb_read_unit"]
    lines["DynamoDB writes"] = writes * PRICES["dynamodb_write_unit"]
    lines["SQS"] = _sum(calls, "sqs.") * PRICES["sqs_fifo_request"]
    lines["SNS"] = _sum(calls, "sns.") * PRICES["sns_publish"]
    lines["S3"] = _sum(calls, "s3.PutObject") * PRICES["s3_put"] + PRICES["s3_get"]
    lines["CloudFront"] = PRICES["cloudfront_request"] + (
        output_bytes / 1024**3 * PRICES["cloudfront_gb"]
    )
    lines["CloudWatch Logs"] = LOG_BYTES_PER_JOB / 1024**3 * PRICES["logs_ingested_gb"]
    return lines


def fleet_lines_per_day(scale: Scale) -> dict[str, float]:
    """USD per day the fleet costs whatever the jobs: heartbeats, long polls, the reaper, the
    api's registry snapshots and the agents' metrics."""
    per_node_day = 86_400
    heartbeats = scale.nodes * per_node_day / HEARTBEAT_SECONDS
    polls = scale.nodes * 2 * per_node_day / LONG_POLL_SECONDS
    scan_units = max(1.0, scale.nodes * NODE_ITEM_KB / 4)
    snapshots = scale.api_containers * SNAPSHOTS_PER_DAY_PER_CONTAINER
    reaper = REAPER_PER_DAY * (
        PRICES["lambda_request"] + REAPER_GB * REAPER_SECONDS * PRICES["lambda_gb_second_arm"]
    )
    return {
        "node heartbeats (DynamoDB writes)": heartbeats * PRICES["dynamodb_write_unit"],
        "node long polls (SQS)": polls * PRICES["sqs_fifo_request"],
        "api registry snapshots (DynamoDB scans)": snapshots
        * scan_units
        * PRICES["dynamodb_read_unit"],
        "reaper (Lambda)": reaper,
        "agent metrics (CloudWatch PutMetricData)": scale.nodes
        * AGENT_METRIC_FLUSHES_PER_DAY
        * PRICES["cloudwatch_put_metric_data"],
        "custom metrics (CloudWatch)": METRIC_SERIES * PRICES["cloudwatch_metric_month"] / 30,
    }


def per_thousand(kind: str, scale: Scale, output_bytes: float = OUTPUT_BYTES) -> dict[str, float]:
    """USD per 1,000 jobs of ``kind`` at ``scale``, by line (the fleet's share included)."""
    lines = {name: usd * 1000 for name, usd in per_job_lines(kind, output_bytes).items()}
    for name, usd in fleet_lines_per_day(scale).items():
        lines[name] = usd / scale.jobs_per_day * 1000
    return lines


def _sum(calls: Mapping[str, float], prefix: str) -> float:
    return sum(count for call, count in calls.items() if call.startswith(prefix))


def report(gpu_per_thousand: float, gpu_source: str) -> str:
    """The cost table of ``comfyfleet sim --costs``: per scale, USD per 1,000 jobs by line
    and kind of job, the total beside the GPU cost, and the largest line."""
    kinds = list(PER_JOB_CALLS)
    out = [f"AWS list prices, us-east-1, as of {PRICES_AS_OF}; GPU: {gpu_source}", ""]
    for scale in SCALES:
        tables = {kind: per_thousand(kind, scale) for kind in kinds}
        names = sorted(tables[kinds[-1]], key=lambda name: -tables[kinds[-1]][name])
        out.append(
            f"{scale.jobs_per_day:,.0f} jobs/day, {scale.nodes:,} nodes, "
            f"{scale.api_containers} busy api containers — USD per 1,000 jobs"
        )
        out.append(f"  {'line':<42}" + "".join(f"{kind:>20}" for kind in kinds))
        for name in names:
            cells = "".join(f"{tables[kind][name]:>20.5f}" for kind in kinds)
            out.append(f"  {name:<42}{cells}")
        totals = {kind: sum(tables[kind].values()) for kind in kinds}
        out.append(f"  {'platform total':<42}" + "".join(f"{totals[k]:>20.4f}" for k in kinds))
        shares = "".join(f"{totals[k] / gpu_per_thousand:>20.2%}" for k in kinds)
        out.append(f"  {'GPU per 1,000 images':<42}{gpu_per_thousand:>20.4f}")
        out.append(f"  {'platform / GPU (goal <= 1 % at 1M/day)':<42}{shares}")
        webp = {k: sum(per_thousand(k, scale, WEBP_OUTPUT_BYTES).values()) for k in kinds}
        shares = "".join(f"{webp[k] / gpu_per_thousand:>20.2%}" for k in kinds)
        out.append(f"  {'... with WebP outputs (150 KB, not 1.5 MB)':<42}{shares}")
        out.append(f"  largest line: {names[0]}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"
