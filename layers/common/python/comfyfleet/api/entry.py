"""What the Lambda entry points share: build the application on the first request, and put
Tracer around it where tracing is on.

Kept light on purpose (no pydantic, no boto3): the handler modules import it at start-up,
and every millisecond of import is a millisecond of cold start. The heavy work — settings,
boto3 clients, Powertools' resolver and the routes' models, the X-Ray SDK — happens once,
on the first request, in the builder the entry point passes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Handler = Callable[[Any, Any], Any]


class LazyHandler:
    """A handler built on first use; a failed build is retried on the next request."""

    def __init__(self, build: Callable[[], Handler]) -> None:
        self._build = build
        self._handler: Handler | None = None
        self._lock = threading.Lock()

    def __call__(self, event: Any, context: Any) -> Any:
        handler = self._handler
        if handler is None:
            with self._lock:
                if self._handler is None:
                    self._handler = self._build()
                handler = self._handler
        return handler(event, context)


def tracing_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether Powertools' Tracer would trace here: in Lambda, unless turned off.

    Asked before creating a Tracer because creating one imports the X-Ray SDK (≈ 200 ms),
    which is wasted where tracing is off (tests, the dev stack). These are Powertools' own
    variables, read as it reads them.
    """
    disabled = environ.get("POWERTOOLS_TRACE_DISABLED", "false").strip().lower()
    in_lambda = bool(environ.get("LAMBDA_TASK_ROOT")) and not environ.get("AWS_SAM_LOCAL")
    return in_lambda and disabled not in ("1", "true", "yes", "on")


def traced(
    build: Callable[[], Handler], service: str, *, patch_modules: Sequence[str] | None = None
) -> Handler:
    """Build the handler, inside Tracer's capture_lambda_handler where tracing is on.

    ``patch_modules``: the libraries whose calls become X-Ray subsegments (Powertools'
    default, None, patches every one it knows, ≈ 50 ms more of cold start than botocore's).
    """
    if not tracing_enabled():
        return build()
    from aws_lambda_powertools.tracing import Tracer

    # Created before the handler's boto3 clients, so that its patching covers them.
    tracer = Tracer(service=service, patch_modules=patch_modules)
    wrapped: Handler = tracer.capture_lambda_handler(build())
    return wrapped


def share_log_config(logger: Any) -> None:
    """Send the comfyfleet package's log records through the entry point's Powertools
    Logger: JSON, with its correlation id (the request id) and Lambda context."""
    import logging

    from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

    logging.getLogger("comfyfleet")
    copy_config_to_registered_loggers(source_logger=logger, include={"comfyfleet"})
