"""The instance's place in its Auto Scaling group: wait for InService before taking jobs, and
complete the launch lifecycle hook when a boot is done.

``python -m gpu_agent.lifecycle ready`` is what the node bootstrap runs at the end of every
boot (userdata/node.sh): the first one (before the instance goes in service, or into the warm
pool's stop) and each later one (a warm-pool instance waking up). A hook that is not waiting
(none configured, already completed, timed out) is not an error: the boot is done either way.

``python -m gpu_agent.lifecycle warming`` says whether this boot ends in the warm pool: the
bootstrap then prefetches the environment's models before the hook lets the instance stop.

Exit codes (ready): 0 completed or nothing to complete; 1 the call failed; 2 the settings are
not usable. (warming): 0 the boot ends in the warm pool, 1 it ends in service.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from comfyfleet.aws import client
from comfyfleet.settings import SettingsError, read_settings
from gpu_agent.identity import imds_get
from gpu_agent.settings import AgentSettings

logger = logging.getLogger(__name__)

TARGET_STATE = "/latest/meta-data/autoscaling/target-lifecycle-state"
INSTANCE_ID = "/latest/meta-data/instance-id"
IN_SERVICE = "InService"
POLL_SECONDS = 5.0

Metadata = Callable[[str], str | None]


def wait_in_service(
    stop: threading.Event, *, metadata: Metadata = imds_get, poll_seconds: float = POLL_SECONDS
) -> bool:
    """Block until the instance's target lifecycle state is InService; True then, False when
    ``stop`` is set first. No answer (not in a group, no metadata): True at once. A warm-pool
    instance's first boot reads Warmed:Stopped: it is about to sleep, not to take jobs."""
    said = ""
    while not stop.is_set():
        state = metadata(TARGET_STATE)
        if state is None or state.strip() == IN_SERVICE:
            return True
        if state != said:
            logger.info("waiting for InService (target lifecycle state %s)", state.strip())
            said = state
        stop.wait(poll_seconds)
    return False


def warming(metadata: Metadata = imds_get) -> bool:
    """Whether this boot ends in the warm pool: the instance is stopped when it is done."""
    state = metadata(TARGET_STATE)
    return state is not None and state.strip().startswith("Warmed:")


def complete_launch(
    autoscaling: Any, *, group: str, hook: str, metadata: Metadata = imds_get
) -> bool:
    """CONTINUE this instance's launch hook; True when one was waiting and is now done."""
    instance = metadata(INSTANCE_ID)
    if not (group and hook and instance):
        logger.info("no group, hook or instance id: no launch hook to complete")
        return False
    try:
        autoscaling.complete_lifecycle_action(
            AutoScalingGroupName=group,
            LifecycleHookName=hook,
            InstanceId=instance,
            LifecycleActionResult="CONTINUE",
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ValidationError":
            # "No active Lifecycle Action found": a reboot, or the hook already timed out.
            logger.info("no launch hook waiting for %s", instance)
            return False
        raise
    logger.info("launch hook %s completed for %s", hook, instance)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gpu_agent.lifecycle",
        description="Complete this instance's launch lifecycle hook (the bootstrap, per boot).",
    )
    parser.add_argument(
        "command",
        choices=["ready", "warming"],
        help="ready: complete the launch hook; warming: exit 0 when this boot ends in the "
        "warm pool (stopped), 1 when it ends in service",
    )
    command = parser.parse_args(argv).command
    if command == "warming":
        return 0 if warming() else 1
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    try:
        settings = read_settings(AgentSettings)
    except SettingsError as exc:
        print(f"gpu_agent.lifecycle: {exc}", file=sys.stderr)
        return 2
    try:
        complete_launch(
            client("autoscaling"),
            group=settings.node_group_name,
            hook=settings.launch_hook_name,
        )
    except (BotoCoreError, ClientError) as exc:
        logger.error("launch hook not completed: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
