"""The fleet's node catalogue as the API uses it: the union of the catalogues of the
environments in service (comfyfleet.catalogues), to validate workflows and to serve
``GET /v1/object_info`` in ComfyUI's own shape.

Which environments are in service comes from the node registry snapshot the router reads
(at most once a second per process), and each environment's catalogue from S3 (at most once
a minute, comfyfleet.api.objects.CatalogueCache): neither costs the submit path a call in the
steady state.
"""

from __future__ import annotations

from comfyfleet.api.errors import ResourceNotFound
from comfyfleet.api.objects import CatalogueCache
from comfyfleet.catalogues import CatalogueDocument, FleetCatalogue, environments_in_service
from comfyfleet.clock import Clock
from comfyfleet.router import NodeSnapshot
from comfyfleet.settings import Settings

# What GET /v1/object_info serves before any node has published its catalogue.
EMPTY_CATALOGUE = CatalogueDocument.of({})
CACHE_CONTROL = "private, no-cache"  # keep it, but ask again (If-None-Match) before use


class NodeClasses:
    def __init__(
        self,
        *,
        catalogues: CatalogueCache,
        snapshot: NodeSnapshot,
        settings: Settings,
        clock: Clock,
    ) -> None:
        self.catalogues = catalogues
        self.snapshot = snapshot
        self.settings = settings
        self.clock = clock

    def fleet(self) -> FleetCatalogue | None:
        """The catalogues of the environments in service (with none in service, the one the
        last node to start published); None while no catalogue is published."""
        nodes, _ = self.snapshot.get()
        now = self.clock.now()
        in_service = environments_in_service(nodes, now, self.settings.node_stale_seconds)
        return self.catalogues.fleet(in_service)

    def object_info(self) -> CatalogueDocument:
        """Every class of the fleet, as ComfyUI's ``GET /object_info`` lists its own."""
        fleet = self.fleet()
        return fleet.document() if fleet is not None else EMPTY_CATALOGUE

    def node_class(self, class_type: str) -> CatalogueDocument:
        """One class, as ComfyUI's ``GET /object_info/{class}``; 404 if no node has it."""
        fleet = self.fleet()
        document = fleet.class_document(class_type) if fleet is not None else None
        if document is None:
            raise ResourceNotFound(f"node class {class_type[:200]!r} is not installed on the fleet")
        return document


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (weak comparison, as RFC 9110 asks
    of If-None-Match; ``*`` names any)."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False
