"""The lifecycle function: the fleet's Auto Scaling termination hook (DESIGN §1, §7).

EventBridge delivers "EC2 Instance-terminate Lifecycle Action" (source ``aws.autoscaling``)
with ``detail`` {EC2InstanceId, LifecycleHookName, AutoScalingGroupName,
LifecycleActionToken, LifecycleTransition}. Thin by design: the drain — node draining, its
running job awaited, its queue moved to the shared queue and deleted, the action completed
with CONTINUE — is comfyfleet.lifecycle.TerminationDrain, built on the first invocation.
Returns what it did; an event that is not a termination action is logged and ignored (a
retry would not make it one).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import Logger

from comfyfleet.api.entry import LazyHandler, share_log_config, traced

SERVICE = "comfyfleet-lifecycle"
# Without a Lambda context (a direct call), the time the drain may take.
DEFAULT_REMAINING_SECONDS = 900.0

logger = Logger(service=SERVICE)


def _build_drain() -> Any:
    from comfyfleet.lifecycle import InvalidLifecycleEvent, LifecycleAction
    from comfyfleet.settings import get_settings
    from comfyfleet.upkeep import aws_termination_drain

    drain = aws_termination_drain(get_settings())
    share_log_config(logger)

    def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
        try:
            action = LifecycleAction.from_event(event)
        except InvalidLifecycleEvent as exc:
            logger.warning("not a termination lifecycle action", extra={"reason": str(exc)})
            return {"status": "ignored", "reason": str(exc)}
        logger.append_keys(node_id=action.instance_id)
        outcome = drain.drain(action, lambda: _remaining_seconds(context))
        return {"status": "drained", **outcome.summary()}

    return handle


def _remaining_seconds(context: Any) -> float:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return remaining() / 1000 if callable(remaining) else DEFAULT_REMAINING_SECONDS


_drain = LazyHandler(lambda: traced(_build_drain, SERVICE))


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    result: dict[str, Any] = _drain(event, context)
    return result
