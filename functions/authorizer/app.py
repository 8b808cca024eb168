"""The authorizer function: a REQUEST authorizer resolving API keys to callers.

Thin by design: Logger here, Tracer where tracing is on, no metrics; the logic is
comfyfleet.api.auth.KeyAuthorizer, built on the first request (under SnapStart during init,
and primed: comfyfleet.api.entry). A refused key raises an exception whose message is
``Unauthorized``, which API Gateway answers with 401; see README.md here for the gateway's
side.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import Logger, correlation_paths

from comfyfleet.api.entry import Built, LazyHandler, share_log_config, traced

SERVICE = "comfyfleet-authorizer"

logger = Logger(service=SERVICE)


def _build_authorizer() -> Built:
    from comfyfleet.api.auth import aws_authorizer, prime_authorizer
    from comfyfleet.settings import get_settings

    authorizer = aws_authorizer(get_settings())
    share_log_config(logger)
    return Built(
        lambda event, _context: authorizer.authorize(event),
        prime=lambda: prime_authorizer(authorizer),
    )


# Only boto3's calls are traced: this function makes no other outbound calls.
_authorize = LazyHandler(lambda: traced(_build_authorizer, SERVICE, patch_modules=("botocore",)))


@logger.inject_lambda_context(
    correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True
)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    policy: dict[str, Any] = _authorize(event, context)
    return policy
