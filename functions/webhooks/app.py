"""The webhooks function: SQS records of job events → signed POSTs to users' URLs (DESIGN §9).

Thin by design: Powertools Logger here and one metric per outcome; the logic is
comfyfleet.delivery.WebhookDelivery, built on the first invocation. The event source
mapping must report batch item failures: the records returned here stay on the queue and
come back when the visibility the delivery set for them runs out (or go to the DLQ).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import Logger

from comfyfleet.api.entry import LazyHandler, share_log_config, traced
from comfyfleet.observability import NAMESPACE, RESULT, WEBHOOK_DELIVERIES

SERVICE = "comfyfleet-webhooks"

logger = Logger(service=SERVICE)


def _build_delivery() -> Any:
    from comfyfleet.delivery import aws_delivery
    from comfyfleet.settings import get_settings

    delivery = aws_delivery(get_settings())
    share_log_config(logger)

    def deliver(event: dict[str, Any], _context: Any) -> dict[str, Any]:
        result = delivery.handle_batch(event.get("Records") or [])
        _count(result.outcomes)
        return result.response()

    return deliver


def _count(outcomes: Any) -> None:
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    for outcome, count in outcomes.items():
        with single_metric(
            name=WEBHOOK_DELIVERIES,
            unit=MetricUnit.Count,
            value=count,
            namespace=NAMESPACE,
            default_dimensions={"service": SERVICE},
        ) as metric:
            metric.add_dimension(name=RESULT, value=outcome.value)


_deliver = LazyHandler(lambda: traced(_build_delivery, SERVICE))


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    response: dict[str, Any] = _deliver(event, context)
    return response
