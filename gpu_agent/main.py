"""Build an agent from settings and run it until SIGTERM (``comfyfleet agent``)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from comfyfleet.aws import client
from comfyfleet.clock import Clock, SystemClock
from comfyfleet.events import JobEvents, SnsJobEvents
from comfyfleet.netguard import OutboundClient
from comfyfleet.queues import SqsJobQueues
from comfyfleet.resources import MODEL_MIRROR_PREFIX, SHARED_QUEUE
from comfyfleet.scheduling import Dispatcher
from comfyfleet.settings import SettingsError, read_settings
from comfyfleet.store import Stores
from comfyfleet.store.dynamo import dynamo_stores
from comfyfleet.store.ports import ModelRecord
from comfyfleet.workflow import ModelRef, normalise_url
from gpu_agent.agent import Agent
from gpu_agent.cache import ModelCache
from gpu_agent.comfy import ComfyClient, ComfyUnavailable
from gpu_agent.identity import imds_get, per_gpu, spot_interruption_notice
from gpu_agent.identity import node_id as find_node_id
from gpu_agent.lifecycle import wait_in_service
from gpu_agent.metrics import AgentMetrics, CloudWatchMetrics
from gpu_agent.mirror import ModelMirror, mirror_client
from gpu_agent.origin import OriginDownloader
from gpu_agent.outputs import OutputPublisher, link_signer
from gpu_agent.runner import JobRunner, StopSignal
from gpu_agent.scale_in import ScaleInProtection
from gpu_agent.settings import AgentSettings
from gpu_agent.source_protocol import Source
from gpu_agent.sources import ModelSources

logger = logging.getLogger("gpu_agent")


@dataclass
class Parts:
    """Everything an agent is made of, for shutdown."""

    agent: Agent
    sources: ModelSources
    cache: ModelCache
    http: OutboundClient


@dataclass(frozen=True)
class _Wiring:
    """Who the agent is and the AWS side it talks to: stores, queues, S3 and the clock."""

    clock: Clock
    stores: Stores
    queues: Any
    s3: Any
    node: str
    shared_url: str
    node_queue_url: str


def build(
    settings: AgentSettings,
    *,
    stores: Stores | None = None,
    queues: Any = None,
    s3: Any = None,
    clock: Clock | None = None,
    node_queue_url: str | None = None,
    on_ec2: bool = True,
    events: JobEvents | None = None,
) -> Parts:
    """An agent wired to AWS (or to the stores, queues, S3 client and events given)."""
    wiring = _connect(
        settings,
        stores=stores,
        queues=queues,
        s3=s3,
        clock=clock,
        node_queue_url=node_queue_url,
        on_ec2=on_ec2,
    )
    http = OutboundClient(allow_loopback=settings.allow_local_urls)
    sources, cache = _models(settings, wiring, http)
    comfy = ComfyClient(settings.comfy_url, client_id=f"comfyfleet-{wiring.node}")
    agent = _agent(settings, wiring, comfy, cache, events=events, on_ec2=on_ec2)
    return Parts(agent, sources, cache, http)


def _connect(
    settings: AgentSettings,
    *,
    stores: Stores | None,
    queues: Any,
    s3: Any,
    clock: Clock | None,
    node_queue_url: str | None,
    on_ec2: bool,
) -> _Wiring:
    """The clock, stores, queues and S3 client (given or from AWS), the node and its queues."""
    clock = clock or SystemClock()
    stores = stores or dynamo_stores(settings)
    sqs = SqsJobQueues(client("sqs"))
    queues = queues or sqs
    s3 = s3 or client("s3")
    node = agent_node_id(settings, on_ec2=on_ec2)
    shared_url = settings.shared_queue_url or sqs.queue_url(SHARED_QUEUE.name(settings))
    if node_queue_url is None:
        node_queue_url = sqs.create_node_queue(settings, node)
    return _Wiring(clock, stores, queues, s3, node, shared_url, node_queue_url)


def agent_node_id(settings: AgentSettings, *, on_ec2: bool) -> str:
    """The configured id, else the instance's (off EC2 "local"); one per GPU when indexed."""
    if on_ec2:
        return find_node_id(settings.node_id, settings.gpu_index)
    return settings.node_id or per_gpu("local", settings.gpu_index)


def _models(
    settings: AgentSettings, wiring: _Wiring, http: OutboundClient
) -> tuple[ModelSources, ModelCache]:
    """The model sources (mirror, then origin) and the cache in front of them."""
    stores = wiring.stores

    def remember(ref: ModelRef, size: int, sha256: str | None, source: Source) -> None:
        # The catalogue of sizes and hashes: routing's estimates, later nodes' checks.
        mirror_key = f"{MODEL_MIRROR_PREFIX}{ref.key}"
        stores.models.put(
            ModelRecord(ref.key, normalise_url(ref.url), size, sha256, ref.folder, mirror_key)
        )

    sources = ModelSources(
        OriginDownloader(http, max_bytes=settings.max_model_bytes),
        ModelMirror(mirror_client(), settings.model_bucket_name),
        on_fetched=remember,
    )
    cache = ModelCache(
        settings.cache_dir,
        settings.cache_budget_bytes,
        settings.comfy_root,
        sources,
        clock=wiring.clock.now,
        node_id=wiring.node,
    )
    return sources, cache


def _agent(
    settings: AgentSettings,
    wiring: _Wiring,
    comfy: ComfyClient,
    cache: ModelCache,
    *,
    events: JobEvents | None,
    on_ec2: bool,
) -> Agent:
    """The dispatcher, output publisher, metrics and job runner, and the agent around them."""
    events = events or SnsJobEvents(client("sns"), settings)
    dispatcher = Dispatcher(
        wiring.stores,
        wiring.queues,
        settings,
        wiring.clock,
        shared_url=wiring.shared_url,
        events=events,
    )
    outputs = _outputs(settings, wiring.s3, comfy)
    stop = StopSignal()
    metrics = _metrics(settings)
    runner = JobRunner(
        settings,
        dispatcher,
        wiring.queues,
        comfy,
        cache,
        outputs,
        wiring.s3,
        wiring.node,
        wiring.clock,
        stop,
        metrics,
    )
    return Agent(
        settings,
        node_id=wiring.node,
        node_queue_url=wiring.node_queue_url,
        dispatcher=dispatcher,
        queues=wiring.queues,
        comfy=comfy,
        cache=cache,
        runner=runner,
        s3=wiring.s3,
        clock=wiring.clock,
        stop=stop,
        spot_notice=spot_interruption_notice if on_ec2 else None,
        metrics=metrics,
        protection=_protection(settings, wiring.node) if on_ec2 else None,
    )


def _outputs(settings: AgentSettings, s3: Any, comfy: ComfyClient) -> OutputPublisher:
    """Publishes a job's outputs from ComfyUI to the output bucket, with signed links."""
    return OutputPublisher(
        s3,
        settings.output_bucket_name,
        comfy,
        cdn_domain=settings.cdn_domain,
        link_seconds=settings.output_link_seconds,
        signer=link_signer(s3.meta.region_name),
    )


def _protection(settings: AgentSettings, node: str) -> ScaleInProtection | None:
    """Scale-in protection while a job runs, for an instance in the stack's group."""
    instance = imds_get("/latest/meta-data/instance-id") if settings.node_group_name else None
    if not instance:
        return None
    return ScaleInProtection(
        client("autoscaling"),
        group=settings.node_group_name,
        instance_id=instance,
        agent=node,
        busy_dir=settings.busy_dir,
    )


def _metrics(settings: AgentSettings) -> AgentMetrics | None:
    """CloudWatch metrics when enabled, else None."""
    if not settings.metrics_enabled:
        return None
    sink = CloudWatchMetrics(client("cloudwatch"), flush_seconds=settings.metrics_flush_seconds)
    return AgentMetrics(sink)


def install_signal_handlers(agent: Agent) -> None:
    """SIGTERM (or Ctrl-C) once: drain; twice: interrupt and release the job."""
    signal.signal(signal.SIGTERM, lambda *_: agent.request_stop())
    signal.signal(signal.SIGINT, lambda *_: agent.request_stop())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the agent; ``argv`` (``python -m gpu_agent``'s arguments) takes only --help."""
    if argv is not None:
        argparse.ArgumentParser(
            prog="python -m gpu_agent",
            description="Run the comfyfleet GPU agent beside ComfyUI until SIGTERM (once: "
            "drain; twice: interrupt and release). Configured by COMFYFLEET_ environment "
            "variables: see docs/settings.md.",
        ).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = read_settings(AgentSettings)
    except SettingsError as exc:
        print(f"gpu_agent: {exc}", file=sys.stderr)
        return 2
    parts = build(settings, on_ec2=settings.on_ec2)
    install_signal_handlers(parts.agent)
    try:
        if settings.on_ec2 and settings.node_group_name:
            # A warm-pool instance's first boot: it sleeps next, and must take nothing.
            if not wait_in_service(parts.agent.stop.draining):
                logger.info("stopped before the instance went in service")
                return 0
        parts.agent.start()
        parts.agent.run_forever()
    except ComfyUnavailable:
        if not parts.agent.stop.draining.is_set():
            raise  # ComfyUI never came up: a failed start, for systemd to restart
        logger.info("stopped before ComfyUI came up")
    finally:
        parts.agent.shutdown()
        parts.sources.close()
        parts.cache.close()
        parts.http.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
