"""The chaos run's counts, from the jobs' final records, the webhook receiver and the output
bucket's object versions (the run turns versioning on, so a second write of a key shows)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import boto3

from comfyfleet.dev.launch import RunningStack

REGION = "us-east-1"
EXHAUSTED = "max_attempts_exceeded"


@dataclass
class Outcome:
    counts: dict[str, Any]
    failures: list[str]  # "job: code: message" of each failed job

    @property
    def ok(self) -> bool:
        c = self.counts
        return (
            c["lost"] == 0
            and c["completed_twice"] == 0
            and c["events_missing"] == 0
            and c["events_extra_ids"] == 0
            and c["unsigned_deliveries"] == 0
        )

    def table(self) -> str:
        lines = [f"{name:<26} {value}" for name, value in self.counts.items()]
        if self.failures:
            lines += ["", "failed jobs (code: message):", *(f"  {f}" for f in self.failures)]
        lines.append("")
        lines.append("goals met" if self.ok else "GOALS MISSED")
        return "\n".join(lines)


def enable_versioning(stack: RunningStack) -> str:
    """The output bucket, with versioning on (in moto) from now on."""
    s3 = _s3(stack)
    bucket = _output_bucket(s3)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return bucket


def _s3(stack: RunningStack) -> Any:
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    ).client("s3", endpoint_url=stack.info["moto_url"])


def _output_bucket(s3: Any) -> str:
    return next(b["Name"] for b in s3.list_buckets()["Buckets"] if b["Name"].endswith("-outputs"))


def outputs_written(
    stack: RunningStack, ends: dict[str, dict[str, Any]]
) -> dict[str, Counter[str]]:
    """Per ended job: how many times each of its output objects was written. One listing
    of every version under ``outputs/<account>/<job>/<file>`` (resources.output_key)."""
    s3 = _s3(stack)
    written: dict[str, Counter[str]] = {job_id: Counter() for job_id in ends}
    pages = s3.get_paginator("list_object_versions").paginate(
        Bucket=_output_bucket(s3), Prefix="outputs/"
    )
    for page in pages:
        for version in page.get("Versions", []):
            parts = version["Key"].split("/", 3)
            if len(parts) == 4 and parts[2] in written:
                written[parts[2]][parts[3]] += 1
    return written


def _seconds(record: dict[str, Any], start: str, end: str) -> float | None:
    try:
        return (
            datetime.fromisoformat(str(record[end]).replace("Z", "+00:00"))
            - datetime.fromisoformat(str(record[start]).replace("Z", "+00:00"))
        ).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None


def _p95(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def collect(
    *,
    plan: Any,
    submitted: list[Any],
    ends: dict[str, dict[str, Any]],
    receiver: Any,
    written: dict[str, Counter[str]],
    chaos: dict[str, int],
    drain_seconds: float,
    run_seconds: float,
) -> Outcome:
    states = Counter(record["status"] for record in ends.values())
    failed = {job_id: r for job_id, r in ends.items() if r["status"] == "failed"}
    twice, stray = set(), 0
    for job_id, record in ends.items():
        if len(receiver.events[job_id].endings) > 1:
            twice.add(job_id)  # two different endings delivered
        listed = {f.get("filename") for f in (record.get("outputs") or {}).get("files", [])}
        for name, times in written.get(job_id, Counter()).items():
            if name in listed and times > 1:
                twice.add(job_id)  # one of its outputs written by two runs
            elif name not in listed:
                stray += 1
    waits = [
        s
        for r in ends.values()
        if r["status"] == "completed"
        and (s := _seconds(r, "created_at", "completed_at")) is not None
    ]
    events = {job_id: len(receiver.events[job_id].ids) for job_id in ends}
    counts: dict[str, Any] = {
        "submitted": len(submitted),
        "completed": states["completed"],
        "failed": states["failed"],
        "failed_by_code": dict(
            Counter(str((r.get("error") or {}).get("code")) for r in failed.values())
        ),
        # A job whose runs were all killed (max_attempts) failed as designed, reason shown;
        # any other failure is one that retries should have absorbed.
        "failed_not_exhausted": sum(
            1 for r in failed.values() if (r.get("error") or {}).get("code") != EXHAUSTED
        ),
        "cancelled": states["cancelled"],
        "lost": len(submitted) - len(ends),
        "completed_twice": len(twice),
        "events_one_id": sum(1 for n in events.values() if n == 1),
        "events_missing": sum(1 for n in events.values() if n == 0),
        "events_extra_ids": sum(1 for n in events.values() if n > 1),
        "webhook_deliveries": sum(receiver.events[j].deliveries for j in ends),
        "webhook_refused_on_purpose": receiver.refused,
        "unsigned_deliveries": receiver.unsigned,
        "stray_outputs": stray,
        "drain_seconds": round(drain_seconds, 1),
        "p95_submit_to_completed_s": round(_p95(waits), 1),
        "run_seconds": round(run_seconds, 1),
        "fault_share": plan.fault_share,
        **chaos,
    }
    failures = [
        f"{job_id}: {(r.get('error') or {}).get('code')}: {(r.get('error') or {}).get('message')}"
        for job_id, r in failed.items()
    ]
    return Outcome(counts, failures)
