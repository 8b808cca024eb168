"""The reaper function: every minute (an EventBridge schedule), one pass of comfyfleet.reaper.

Thin by design: Powertools Logger here and the node counts as a metric; the pass itself —
stale nodes, lost leases, unsent messages, dead letters, stalled backlogs, unpublished
events — is comfyfleet.reaper.Reaper, built on the first invocation. The event (EventBridge's
"Scheduled Event") carries nothing the pass needs. Returns the pass's counts.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import Logger

from comfyfleet.api.entry import LazyHandler, share_log_config, traced
from comfyfleet.observability import NAMESPACE, NODES_BY_STATUS, STATUS

SERVICE = "comfyfleet-reaper"

logger = Logger(service=SERVICE)


def _build_reaper() -> Any:
    from comfyfleet.settings import get_settings
    from comfyfleet.upkeep import aws_reaper

    reaper = aws_reaper(get_settings())
    share_log_config(logger)

    def reap(_event: dict[str, Any], _context: Any) -> dict[str, Any]:
        summary = reaper.run().summary()
        _count_nodes(summary["nodes_by_status"])
        logger.info("reaper pass", extra=summary)
        return summary

    return reap


def _count_nodes(by_status: dict[str, int]) -> None:
    """One Nodes metric per status, zeros included, so the dashboard's lines do not break."""
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    from comfyfleet.domain import NodeStatus

    for status in NodeStatus:
        with single_metric(
            name=NODES_BY_STATUS,
            unit=MetricUnit.Count,
            value=by_status.get(status.value, 0),
            namespace=NAMESPACE,
            default_dimensions={"service": SERVICE},
        ) as metric:
            metric.add_dimension(name=STATUS, value=status.value)


_reap = LazyHandler(lambda: traced(_build_reaper, SERVICE))


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    summary: dict[str, Any] = _reap(event, context)
    return summary
