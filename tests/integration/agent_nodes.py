"""Agents on fakecomfy against moto, for the integration tests: ``Node`` (an agent built by
gpu_agent.main.build, stepped by hand) and ``start_node``, which the tests' ``make_node``
fixtures call. One place for how a test node is wired."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfyfleet.aws import client
from comfyfleet.clock import SystemClock
from comfyfleet.environment.lock import write_lock
from comfyfleet.events import JobEvents
from comfyfleet.queues import SqsJobQueues
from comfyfleet.resources import Provisioned
from comfyfleet.scheduling import Dispatcher
from comfyfleet.settings import Settings
from comfyfleet.store import Stores
from fakecomfy import RunningFakeComfy, start_fakecomfy
from gpu_agent.main import Parts, build
from gpu_agent.runner import Ending
from gpu_agent.settings import AgentSettings
from tests.integration.conftest import REGION
from tests.support import environment_lock


@dataclass
class Node:
    parts: Parts
    comfy: RunningFakeComfy
    settings: AgentSettings

    @property
    def agent(self) -> Any:
        return self.parts.agent

    def work(
        self, jobs: int = 1, timeout: float = 30, until: Ending | None = None
    ) -> list[Ending | None]:
        """Receive and handle messages until ``jobs`` were handled, or one ended ``until``
        (or time runs out)."""
        endings: list[Ending | None] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if until is None and len(endings) >= jobs or until is not None and until in endings:
                break
            received = self.agent._receive()
            if received is not None:
                endings.append(self.agent.handle(received))
        return endings

    def stop(self) -> None:
        self.agent.shutdown()
        self.parts.sources.close()
        self.parts.cache.close()
        self.comfy.stop()


def start_node(
    name: str,
    *,
    aws: Provisioned,
    dynamo: Stores,
    tmp_path: Path,
    environment: str | None = None,
    catalogue: dict[str, Any] | None = None,
    previews: bool = False,
    events: JobEvents | None = None,
    **overrides: Any,
) -> Node:
    """An agent named ``name`` on its own fakecomfy, started (registered, beating)."""
    root = tmp_path / f"comfy-{name}"
    root.mkdir(exist_ok=True)
    if environment is not None:
        write_lock(root, environment_lock(environment))
    comfy = start_fakecomfy(
        root,
        step_seconds=overrides.pop("step_seconds", 0.01),
        previews=previews,
        catalogue=catalogue,
    )
    settings = AgentSettings(
        comfy_url=comfy.url,
        comfy_root=root,
        cache_dir=tmp_path / f"cache-{name}",
        cache_budget_bytes=10**9,
        node_id=name,
        allow_local_urls=True,
        shared_queue_url=aws.queue_urls["shared"],
        receive_wait_seconds=overrides.pop("receive_wait_seconds", 0),
        heartbeat_seconds=0.2,
        lease_seconds=overrides.pop("lease_seconds", 30),
        **overrides,
    )
    sqs = SqsJobQueues(client("sqs", region=REGION))
    parts = build(
        settings,
        stores=dynamo,
        queues=sqs,
        s3=client("s3", region=REGION),
        node_queue_url=sqs.create_node_queue(settings, name),
        on_ec2=False,
        events=events,
    )
    parts.agent.start()
    return Node(parts, comfy, settings)


def sqs_dispatcher(
    dynamo: Stores, aws: Provisioned, settings: Settings, events: JobEvents
) -> Dispatcher:
    """The services' dispatcher on moto's SQS and the shared queue."""
    return Dispatcher(
        dynamo,
        SqsJobQueues(client("sqs", region=REGION)),
        settings,
        SystemClock(),
        shared_url=aws.queue_urls["shared"],
        events=events,
    )
