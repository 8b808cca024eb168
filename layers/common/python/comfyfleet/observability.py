"""Metric names and dimensions, defined once: the code emits these, the dashboard plots them.

Powertools' Logger, Metrics and Tracer are created by each process's entry point (they are
heavy to import); this module stays light so any code can name a metric.
"""

from __future__ import annotations

NAMESPACE = "ComfyFleet"

# API
JOBS_SUBMITTED = "JobsSubmitted"
JOBS_REJECTED = "JobsRejected"  # dimension: reason (rate_limit_exceeded, queue_full, …)
SUBMIT_LATENCY = "SubmitLatency"  # milliseconds

# Agents
JOBS_COMPLETED = "JobsCompleted"
JOBS_FAILED = "JobsFailed"  # dimension: reason (error code)
JOBS_CANCELLED = "JobsCancelled"
QUEUE_WAIT = "QueueWait"  # milliseconds from created to started
EXECUTION_TIME = "ExecutionTime"  # milliseconds from started to completed
MODEL_CACHE_HITS = "ModelCacheHits"
MODEL_CACHE_MISSES = "ModelCacheMisses"
MODEL_BYTES_DOWNLOADED = "ModelBytesDownloaded"
MODEL_DOWNLOAD_SECONDS = "ModelDownloadSeconds"

# Delivery and upkeep
WEBHOOK_DELIVERIES = "WebhookDeliveries"  # dimension: result (delivered, retried, failed)
NODES_BY_STATUS = "Nodes"  # dimension: status

REASON = "reason"
RESULT = "result"
STATUS = "status"
