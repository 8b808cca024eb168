"""The end-to-end tier: the dev stack (`comfyfleet dev`) in a child process, used over HTTP only.

One stack per module (starting one costs a few seconds of CPU), on ephemeral ports, with a
small "tiny" tier for the rate-limit tests. A loopback HTTP server stands in for the model
hosts (the stack runs with --allow-local-urls).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from comfyfleet.client import Client
from comfyfleet.dev.launch import RunningStack, launch_dev_stack
from fakecomfy import placeholder_safetensors
from tests.origin_server import OriginServer

pytestmark = pytest.mark.slow

TINY_TIER = {"requests_per_minute": 3, "concurrency": 1, "queue_depth": 10, "weight": 1.0}


def stack_env(**extra: str) -> dict[str, str]:
    """The stack's environment: none of the developer's COMFYFLEET_* or AWS_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMFYFLEET_", "AWS_"))}
    env["COMFYFLEET_TIERS"] = json.dumps({"tiny": TINY_TIER})
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def origin() -> Iterator[OriginServer]:
    """A model host on loopback: placeholder checkpoints ComfyUI's loaders (fakecomfy) accept."""
    with OriginServer() as server:
        server.add("/models/dream.safetensors", placeholder_safetensors())
        yield server


@pytest.fixture(scope="session")
def checkpoint_url(origin: OriginServer) -> str:
    return origin.url("/models/dream.safetensors")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """A dev stack with one agent."""
    state = tmp_path_factory.mktemp("stack")
    with launch_dev_stack(state, agents=1, env=stack_env()) as running:
        yield running


@pytest.fixture
def user(stack: RunningStack) -> Iterator[Client]:
    with Client(stack.api_url, stack.user_key) as client:
        yield client


@pytest.fixture
def admin(stack: RunningStack) -> Iterator[Client]:
    with Client(stack.api_url, stack.admin_key) as client:
        yield client


def new_user(
    admin: Client, tier: str = "free", *, max_retries: int = 3
) -> tuple[Client, dict[str, Any]]:
    """A fresh account with a jobs key: its client, and the account (webhook secret included)."""
    account = admin.create_account(tier=tier, name="e2e")
    key = admin.create_key(account["account_id"], scopes=("jobs",), name="e2e")["api_key"]
    return Client(admin.api_url, key, max_retries=max_retries), account


def node_home(stack: RunningStack, index: int = 0) -> Path:
    return Path(stack.agents[index]["comfy_root"])
