"""`comfyfleet dev --agents 2 --shared-cache`: two agents on one model cache, as the agents of
a multi-GPU instance are. A model one agent fetched for its job is in the other's cache too."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from comfyfleet.client import Client
from comfyfleet.dev.launch import RunningStack, launch_dev_stack
from fakecomfy import placeholder_safetensors
from tests.e2e.conftest import stack_env
from tests.e2e.support import eventually, loader_graph
from tests.origin_server import OriginServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    state = tmp_path_factory.mktemp("shared-cache")
    env = stack_env(COMFYFLEET_HEARTBEAT_SECONDS="1")
    with launch_dev_stack(state, agents=2, env=env, args=["--shared-cache"]) as running:
        yield running


def test_both_agents_hold_a_model_either_of_them_fetched(
    stack: RunningStack, origin: OriginServer
) -> None:
    (cache_dir,) = {agent["cache_dir"] for agent in stack.agents}
    url = origin.add("/models/shared.safetensors", placeholder_safetensors())
    user = Client(stack.api_url, stack.user_key)
    admin = Client(stack.api_url, stack.admin_key)

    job = user.wait(user.submit(loader_graph(url))["job_id"], timeout=30)

    assert job["status"] == "completed", job
    assert len(origin.requests_for("/models/shared.safetensors")) == 1
    eventually(  # each node's heartbeat reports the one cache's model
        lambda: [node["cached_models"] for node in admin.nodes()["nodes"]] == [1, 1]
    )
    assert len(list((Path(cache_dir) / "objects").iterdir())) == 1
