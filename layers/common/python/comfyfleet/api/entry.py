"""What the Lambda entry points share: build the application, put Tracer around it where
tracing is on, and under SnapStart do all of it before the snapshot.

Kept light on purpose (no pydantic, no boto3): the handler modules import it at start-up,
and every millisecond of import is a millisecond of cold start. The heavy work — settings,
boto3 clients, Powertools' resolver and the routes' models, the X-Ray SDK — is the builder's
the entry point passes. Where it runs:

- *without SnapStart* (the dev stack, tests, a function with it off): on the first request,
  so an init that does not serve pays nothing;
- *under SnapStart* (Lambda's ``AWS_LAMBDA_INITIALIZATION_TYPE`` is ``snap-start``): during
  init, followed by the builder's ``prime`` (the request paths run once, offline, so their
  lazy work is in the snapshot), with runtime hooks registered: before the snapshot, drop
  what a restored copy must not share (pooled connections, caches filled by priming); after
  each restore, drop it again, reseed what is random and refresh the caches.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

Handler = Callable[[Any, Any], Any]
Hook = Callable[[], object]  # what a hook returns is not used

# Lambda's value of AWS_LAMBDA_INITIALIZATION_TYPE for an init that ends in a snapshot.
SNAPSTART_INIT = "snap-start"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Built:
    """A built handler and what SnapStart needs of it (each hook optional)."""

    handler: Handler
    prime: Hook | None = None  # run the request paths once, without side effects
    before_snapshot: Hook | None = None  # drop what priming left in caches
    after_restore: Hook | None = None  # drop stale state, refresh caches


def under_snapstart(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this init ends in a SnapStart snapshot."""
    return environ.get("AWS_LAMBDA_INITIALIZATION_TYPE", "") == SNAPSTART_INIT


class LazyHandler:
    """A handler built on first use (a failed build is retried on the next request), or at
    once under SnapStart (see the module)."""

    def __init__(
        self,
        build: Callable[[], Handler | Built],
        *,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        self._build = build
        self._handler: Handler | None = None
        self._lock = threading.Lock()
        self.built: Built | None = None
        if under_snapstart(environ):
            self.prepare_snapshot()

    def __call__(self, event: Any, context: Any) -> Any:
        handler = self._handler
        if handler is None:
            handler = self._ensure_built().handler
        return handler(event, context)

    def _ensure_built(self) -> Built:
        with self._lock:
            if self.built is None:
                made = self._build()
                self.built = made if isinstance(made, Built) else Built(made)
                self._handler = self.built.handler
            return self.built

    def prepare_snapshot(self) -> None:
        """Build, prime, and register the runtime hooks: the init phase of SnapStart."""
        built = self._ensure_built()
        if built.prime is not None:
            built.prime()
        register_runtime_hooks(self.before_snapshot, self.after_restore)

    def before_snapshot(self) -> None:
        """Lambda's before-snapshot hook: the builder's, then the pooled connections."""
        built = self._ensure_built()
        if built.before_snapshot is not None:
            built.before_snapshot()
        _forget_process_state()

    def after_restore(self) -> None:
        """Lambda's after-restore hook: what the snapshot shares is dropped and reseeded,
        then the builder's refresh (a failure is logged: the first request reads anyway)."""
        _forget_process_state()
        _reseed()
        built = self._ensure_built()
        if built.after_restore is not None:
            try:
                built.after_restore()
            except Exception:
                logger.warning("refresh after restore failed", exc_info=True)


def _forget_process_state() -> None:
    """What every function shares with its restored copies: sockets and id state."""
    from comfyfleet import aws, ids

    aws.close_connections()
    ids.reset()


def _reseed() -> None:
    """A restored copy starts from the snapshot's random state: draw a fresh one."""
    import random

    random.seed()


def register_runtime_hooks(before: Hook, after: Hook) -> None:
    """Register with Lambda's runtime hooks library (snapshot_restore_py, in the managed
    Python runtimes). Without it (not in Lambda) nothing would ever call them: say so."""
    try:
        from snapshot_restore_py import register_after_restore, register_before_snapshot
    except ImportError:
        logger.warning("snapshot_restore_py is not installed: SnapStart hooks not registered")
        return
    register_before_snapshot(before)
    register_after_restore(after)


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
    build: Callable[[], Handler | Built],
    service: str,
    *,
    patch_modules: Sequence[str] | None = None,
) -> Handler | Built:
    """Build the handler, inside Tracer's capture_lambda_handler where tracing is on.

    ``patch_modules``: the libraries whose calls become X-Ray subsegments (Powertools'
    default, None, patches every one it knows, ≈ 50 ms more of cold start than botocore's).
    """
    if not tracing_enabled():
        return build()
    from aws_lambda_powertools.tracing import Tracer

    # Created before the handler's boto3 clients, so that its patching covers them.
    tracer = Tracer(service=service, patch_modules=patch_modules)
    made = build()
    if isinstance(made, Built):
        return replace(made, handler=tracer.capture_lambda_handler(made.handler))
    wrapped: Handler = tracer.capture_lambda_handler(made)
    return wrapped


def share_log_config(logger: Any) -> None:
    """Send the comfyfleet package's log records through the entry point's Powertools
    Logger: JSON, with its correlation id (the request id) and Lambda context."""
    import logging

    from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

    logging.getLogger("comfyfleet")
    copy_config_to_registered_loggers(source_logger=logger, include={"comfyfleet"})
