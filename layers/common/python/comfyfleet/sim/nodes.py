"""A simulated GPU node: its own queue, its disk cache of models and what its GPU holds.

The cache evicts with ``cache_policy.lru_evictions``, as gpu_agent.cache calls it. The
engine (comfyfleet.sim.engine) owns time and the queues' traffic; this module only says what
a node is and what making a job's models ready costs it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from comfyfleet.cache_policy import lru_evictions
from comfyfleet.domain import NodeInfo, NodeStatus
from comfyfleet.router import ModelNeed
from comfyfleet.sim.fifo import FifoMessage, FifoQueue
from comfyfleet.sim.workload import GiB, MiB, Scenario

if TYPE_CHECKING:
    from comfyfleet.sim.routing import FleetView


@dataclass(slots=True)
class SimNode:
    index: int
    info: NodeInfo
    cache: OrderedDict[str, int]  # least recently used first; info.cached is this
    bandwidth: float
    budget: int
    queue: FifoQueue[int] = field(default_factory=FifoQueue)
    used: int = 0
    up: bool = True
    idle: bool = False
    job: int = -1
    message: FifoMessage[int] | None = None
    from_shared: bool = False
    vram: frozenset[str] = frozenset()
    sampling: tuple[float, float] = (0.0, 0.0)  # the current job's sampling span
    generation: int = 0
    up_since: float = 0.0


def new_node(index: int, s: Scenario) -> SimNode:
    """A fresh instance in slot ``index``: empty cache, the slot's bandwidth class."""
    bandwidth = s.bandwidths_mib[index % len(s.bandwidths_mib)] * MiB
    cache: OrderedDict[str, int] = OrderedDict()
    info = NodeInfo(
        node_id=str(index),
        status=NodeStatus.IDLE,
        heartbeat_at=0.0,
        queue_url=f"sim://node-{index}",
        cached=cache,
        bandwidth_bytes_per_second=bandwidth,
    )
    return SimNode(index, info, cache, bandwidth, int(s.cache_gib * GiB))


def sync_models(
    node: SimNode, needs: tuple[ModelNeed, ...], view: FleetView, vram_load_gib_s: float
) -> tuple[int, float, float]:
    """Download what the node lacks (evicting LRU first), then load into GPU memory.

    Returns the bytes downloaded and the seconds spent downloading and loading; ``view``
    hears of every eviction and addition, so routing sees the cache as it is.
    """
    cache = node.cache
    pinned = {need.key for need in needs}
    missing = 0
    for need in needs:
        size = need.size or 0
        if need.key in cache:
            cache.move_to_end(need.key)
            continue
        for victim in lru_evictions(
            cache.items(), pinned, used=node.used, budget=node.budget, reserve=size
        ):
            node.used -= cache.pop(victim)
            view.evicted(node.info.node_id, victim)
        cache[need.key] = size
        node.used += size
        view.cached(node.info.node_id, need.key)
        missing += size
    loading = sum(need.size or 0 for need in needs if need.key not in node.vram)
    node.vram = frozenset(pinned)
    return missing, missing / node.bandwidth, loading / (vram_load_gib_s * GiB)
