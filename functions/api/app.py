"""The api function: API Gateway REST proxy events → comfyfleet's HTTP API (DESIGN §8).

Thin by design: Powertools Logger (correlation id = API Gateway's request id) and Metrics
are set up here; the application — routes, services, boto3 clients — is built by
comfyfleet.api on the first request, with Tracer around it where tracing is on; under
SnapStart during init instead, primed and with its runtime hooks (comfyfleet.api.entry).
"""

from __future__ import annotations

import warnings
from typing import Any

from aws_lambda_powertools.logging import Logger, correlation_paths
from aws_lambda_powertools.metrics import Metrics

from comfyfleet.api.entry import Built, LazyHandler, share_log_config, traced
from comfyfleet.observability import NAMESPACE

SERVICE = "comfyfleet-api"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
# Most requests (reads) emit no metric; Powertools would warn about each such flush.
warnings.filterwarnings("ignore", message="No application metrics to publish")


def _build_app() -> Built:
    from comfyfleet import aws
    from comfyfleet.api import priming
    from comfyfleet.api.telemetry import PowertoolsSubmitMetrics
    from comfyfleet.api.wiring import aws_api
    from comfyfleet.settings import get_settings

    api = aws_api(get_settings(), metrics=PowertoolsSubmitMetrics(metrics))
    share_log_config(logger)

    return Built(
        api.handle,
        prime=lambda: priming.prime(api, aws.clients()),
        before_snapshot=lambda: priming.forget_cached(api),
        after_restore=lambda: priming.refresh_cached(api),
    )


# Only boto3's calls are traced: this function makes no other outbound calls.
_app = LazyHandler(lambda: traced(_build_app, SERVICE, patch_modules=("botocore",)))


@metrics.log_metrics
@logger.inject_lambda_context(
    correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True
)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    response: dict[str, Any] = _app(event, context)
    return response
