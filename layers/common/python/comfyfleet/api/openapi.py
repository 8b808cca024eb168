"""The OpenAPI document: Powertools generates it from the routes' pydantic models; this adds
what Powertools cannot know (the one error shape on each route's error statuses, the two ways
to present a key, the public routes) and removes its 422 default, which this API answers as
400 (see comfyfleet.api.errors)."""

from __future__ import annotations

import re
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.event_handler.openapi.models import (
    OpenAPI,
)

from comfyfleet.api.context import PUBLIC_PATHS
from comfyfleet.api.models import ErrorResponse

ERROR_REF = "#/components/schemas/ErrorResponse"
SECURITY_SCHEMES = ("bearerAuth", "apiKeyAuth")
_POWERTOOLS_SCHEMAS = ("HTTPValidationError", "ValidationError", "ResponseValidationError")
_RULE_PARAM = re.compile(r"<(\w+)>")

ERROR_DESCRIPTIONS = {
    400: "Bad request: invalid_request, malformed_json, invalid_workflow (with each error), "
    "invalid_cursor",
    401: "unauthorized: no valid API key",
    403: "forbidden: the key lacks the scope",
    404: "not_found",
    409: "not_cancellable, idempotency_conflict",
    413: "payload_too_large",
    429: "rate_limit_exceeded or queue_full; see Retry-After",
    500: "internal_error",
    503: "storage_unavailable; see Retry-After",
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer"},
    }
}


def openapi_path(rule: str) -> str:
    """``/v1/jobs/<job_id>`` → ``/v1/jobs/{job_id}``."""
    return _RULE_PARAM.sub(r"{\1}", rule)


class DocumentedResolver(APIGatewayRestResolver):
    """Powertools' REST resolver whose OpenAPI document tells this API's errors."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.route_errors: dict[tuple[str, str], tuple[int, ...]] = {}

    def document_errors(self, method: str, rule: str, statuses: tuple[int, ...]) -> None:
        self.route_errors[(openapi_path(rule), method.lower())] = statuses

    def get_openapi_schema(self, **kwargs: Any) -> OpenAPI:
        spec = super().get_openapi_schema(**kwargs)
        data = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
        for path, operations in data.get("paths", {}).items():
            for method, operation in operations.items():
                if not isinstance(operation, dict) or "responses" not in operation:
                    continue
                self._document(path, method, operation)
        schemas = data.setdefault("components", {}).setdefault("schemas", {})
        for name in _POWERTOOLS_SCHEMAS:
            schemas.pop(name, None)
        error_schema = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(error_schema.pop("$defs", {}))
        schemas["ErrorResponse"] = error_schema
        return OpenAPI.model_validate(data)

    def _document(self, path: str, method: str, operation: dict[str, Any]) -> None:
        responses = operation["responses"]
        responses.pop("422", None)
        if "304" in responses:  # not modified: no body, whatever Powertools assumed
            responses["304"].pop("content", None)
        statuses = self.route_errors.get((path, method), ())
        for status in (*statuses, 500):
            response: dict[str, Any] = {
                "description": ERROR_DESCRIPTIONS[status],
                "content": {"application/json": {"schema": {"$ref": ERROR_REF}}},
            }
            if status in (429, 503):
                response["headers"] = _RETRY_AFTER
            responses[str(status)] = response
        if path in PUBLIC_PATHS:
            operation["security"] = []
