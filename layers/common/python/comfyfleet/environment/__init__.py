"""Node environments: the pinned ComfyUI, custom nodes and models a fleet node runs.

What other parts of comfyfleet use, importable without git or rich: :func:`load_environment`
(the CDK synth validates the file), :func:`read_lock` (the agent reads the environment id at
start). ``comfyfleet node setup`` (environment.command) makes a ComfyUI folder match a file.
"""

from comfyfleet.environment.lock import (
    LOCK_FILENAME,
    InvalidLock,
    Lock,
    LockedNode,
    lock_path,
    read_lock,
)
from comfyfleet.environment.parse import load_environment, parse_environment
from comfyfleet.environment.spec import CustomNode, Environment, EnvironmentProblems

__all__ = [
    "LOCK_FILENAME",
    "CustomNode",
    "Environment",
    "EnvironmentProblems",
    "InvalidLock",
    "Lock",
    "LockedNode",
    "load_environment",
    "lock_path",
    "parse_environment",
    "read_lock",
]
