"""``comfyfleet dev --comfy URL@ROOT --environment FILE``: node setup on each ComfyUI folder
before its agent starts, as a fleet node's bootstrap runs it before its agents.

The ComfyUI servers are the developer's own processes: dev cannot restart them. ComfyUI loads
custom nodes only at start, so a server already running when setup changed its folder lacks
them until restarted; dev says so, naming the nodes, from the server's ``/object_info``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import requests

from comfyfleet.cli_common import EXIT_OK, EXIT_USAGE, CliError
from comfyfleet.environment.command import apply_environment, read_environment, setup_options
from comfyfleet.environment.loaded import unloaded_custom_nodes
from comfyfleet.environment.lock import read_lock

# How long to ask a ComfyUI for /object_info (several MB with many custom nodes).
OBJECT_INFO_TIMEOUT_SECONDS = 30.0


def prepare_comfy_roots(path: str, targets: Sequence[Any], *, allow_local_urls: bool) -> int:
    """Node setup on every distinct folder of ``targets`` (dev.stack.ComfyTarget); an exit
    code: 0 all in place, 2 the file is not valid, 1 setup failed on a folder."""
    env = read_environment(path, allow_local_urls=allow_local_urls)
    if env is None:
        return EXIT_USAGE
    done = set()
    for target in targets:
        if target.root in done:
            continue
        done.add(target.root)
        try:
            options = setup_options(target.root)
        except CliError as exc:
            raise CliError(f"--comfy {target.url}@{target.root}: {exc}") from None
        code = apply_environment(env, options)
        if code != EXIT_OK:
            print(f"comfyfleet: no agent starts on {target.root}", file=sys.stderr)
            return code
    for target in targets:
        warn_if_stale(target.url, target.root)
    return EXIT_OK


def warn_if_stale(url: str, root: Any) -> None:
    """Tell the developer to restart a running ComfyUI that lacks custom nodes of the lock;
    a server not answering yet is fine: its agent waits for it."""
    lock = read_lock(root)
    if lock is None or not lock.custom_nodes:
        return
    try:
        response = requests.get(f"{url}/object_info", timeout=OBJECT_INFO_TIMEOUT_SECONDS)
        object_info = response.json() if response.status_code == 200 else None
    except (requests.RequestException, json.JSONDecodeError):
        object_info = None
    if not isinstance(object_info, dict):
        print(f"ComfyUI at {url} is not answering yet; its agent waits for it", file=sys.stderr)
        return
    missing = unloaded_custom_nodes(lock, object_info)
    if missing:
        print(
            f"comfyfleet: ComfyUI at {url} has not loaded {', '.join(missing)}: restart it "
            "(it loads custom nodes only at start), or see its log for an import error",
            file=sys.stderr,
        )
