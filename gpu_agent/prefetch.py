"""``python -m gpu_agent.prefetch --environment FILE``: the environment's ``[[models]]`` into
this node's model cache before a job asks for them.

The node bootstrap runs it once, as the agents run (their user, their settings), while
ComfyUI starts. It opens the cache the agents share and asks it for each model as an agent
would (gpu_agent.main): the S3 mirror first, the origin on a miss, written through to the
mirror (waited for before exit, so the next node finds the file in S3), each fetch recorded
in the models catalogue. The cache's cross-process locks make it safe beside running agents:
a model they want meanwhile is downloaded once. A model that cannot be fetched is logged and
skipped: an agent fetches it when a job needs it.

Exit codes: 0 every model is in the cache; 1 some could not be fetched; 2 the file or the
settings are not usable.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from comfyfleet.environment import Environment, EnvironmentProblems, load_environment
from comfyfleet.netguard import OutboundClient, redact_url
from comfyfleet.resources import MODEL_MIRROR_PREFIX
from comfyfleet.settings import SettingsError, read_settings
from comfyfleet.store.dynamo import dynamo_stores
from comfyfleet.store.ports import ModelCatalog, ModelRecord
from comfyfleet.workflow import ModelRef, normalise_url
from gpu_agent.cache import CacheError, ModelCache
from gpu_agent.main import agent_node_id
from gpu_agent.mirror import ModelMirror, mirror_client
from gpu_agent.origin import OriginDownloader
from gpu_agent.settings import AgentSettings
from gpu_agent.source_protocol import FetchedHook, ModelSource, Source, SourceError
from gpu_agent.sources import ModelSources

logger = logging.getLogger("gpu_agent.prefetch")

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


class ModelEnsurer(Protocol):
    """What prefetching needs of the cache (ModelCache)."""

    def ensure(self, refs: Iterable[ModelRef], pin: str | None = None) -> dict[str, str]: ...


@dataclass
class PrefetchReport:
    """Which models are now in the cache, and why the others are not."""

    cached: list[str] = field(default_factory=list)  # model keys
    failed: dict[str, str] = field(default_factory=dict)  # model key -> the reason


def prefetch(models: Iterable[ModelRef], cache: ModelEnsurer) -> PrefetchReport:
    """Ask the cache for each model in turn (unpinned: the budget may evict it later);
    a model that fails is recorded and the next one tried."""
    report = PrefetchReport()
    for ref in models:
        fields = {"model_key": ref.key, "url": redact_url(ref.url), "folder": ref.folder}
        try:
            cache.ensure([ref])
        except (SourceError, CacheError, OSError) as exc:
            logger.warning(
                "model prefetch failed",
                extra={**fields, "error": type(exc).__name__, "reason": str(exc)},
            )
            report.failed[ref.key] = f"{type(exc).__name__}: {exc}"
        else:
            logger.info("model prefetched", extra=fields)
            report.cached.append(ref.key)
    return report


def recorder(catalogue: ModelCatalog) -> FetchedHook:
    """Records each fetched model's size and hash, as the agent does: routing's estimates
    and later nodes' checks read them."""

    def remember(ref: ModelRef, size: int, sha256: str | None, source: Source) -> None:
        mirror_key = f"{MODEL_MIRROR_PREFIX}{ref.key}"
        catalogue.put(
            ModelRecord(ref.key, normalise_url(ref.url), size, sha256, ref.folder, mirror_key)
        )

    return remember


def model_sources(settings: AgentSettings, http: OutboundClient) -> ModelSources:
    """The agent's chain: the deployment's mirror, then the origin, written through."""
    return ModelSources(
        OriginDownloader(http, max_bytes=settings.max_model_bytes),
        ModelMirror(mirror_client(), settings.model_bucket_name),
        on_fetched=recorder(dynamo_stores(settings).models),
    )


def prefetch_into_cache(
    settings: AgentSettings,
    models: Sequence[ModelRef],
    source: ModelSource,
    *,
    node_id: str,
    clock: Callable[[], float] = time.time,
) -> PrefetchReport:
    """Open the cache the agents share (settings.cache_dir, linking into comfy_root), fetch
    ``models`` through ``source``, close it again."""
    cache = ModelCache(
        settings.cache_dir,
        settings.cache_budget_bytes,
        settings.comfy_root,
        source,
        clock=clock,
        node_id=node_id,
    )
    try:
        return prefetch(models, cache)
    finally:
        cache.close()


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m gpu_agent.prefetch",
        description="Fetch an environment file's [[models]] into this node's model cache (the "
        "S3 mirror first, then the origin). Configured by the agent's COMFYFLEET_ variables.",
    )
    parser.add_argument("--environment", required=True, metavar="FILE", help="environment TOML")
    return parser.parse_args(argv)


def _environment(path: str, settings: AgentSettings) -> Environment | None:
    """The file, checked against the node's URL rules; None (problems printed) if invalid."""
    try:
        return load_environment(path, allow_local_urls=settings.allow_local_urls, settings=settings)
    except EnvironmentProblems as exc:
        print(f"gpu_agent.prefetch: {path} is not a valid environment:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """Prefetch the file's models; see the module's exit codes."""
    args = _arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = read_settings(AgentSettings)
    except SettingsError as exc:
        print(f"gpu_agent.prefetch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    environment = _environment(args.environment, settings)
    if environment is None:
        return EXIT_USAGE
    if not environment.models:
        print(f"environment {environment.environment_id}: no models to prefetch")
        return EXIT_OK
    http = OutboundClient(allow_loopback=settings.allow_local_urls)
    sources = model_sources(settings, http)
    try:
        node = agent_node_id(settings, on_ec2=settings.on_ec2)
        report = prefetch_into_cache(settings, environment.models, sources, node_id=node)
    finally:
        sources.close()  # waits for the write-through uploads
        http.close()
    print(
        f"environment {environment.environment_id}: {len(report.cached)} of "
        f"{len(environment.models)} models in the cache"
    )
    for key, reason in report.failed.items():
        print(f"  not fetched: {key[:12]}: {reason}", file=sys.stderr)
    return EXIT_SOME_FAILED if report.failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
