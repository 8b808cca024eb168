"""The fleet's node catalogue: one ``/object_info`` per environment in service (DESIGN §13).

Every agent reports its environment (node setup's lock file) on its node record and publishes
its ComfyUI's ``/object_info`` under that environment (comfyfleet.resources.catalogue_key).
The API validates a workflow against the union of the catalogues of the environments in
service and serves that union as ``GET /v1/object_info``. While more than one environment is
in service (a rollout), a job is noted with those of them that have every class it uses: the
router sends it to their nodes only (comfyfleet.router), and a node that still lacks a class
hands the job back instead of failing it (comfyfleet.handback).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from comfyfleet.catalogue import NodeCatalogue
from comfyfleet.domain import NodeInfo
from comfyfleet.workflow.errors import ErrorCode, WorkflowError


def environments_in_service(nodes: Iterable[NodeInfo], now: float, stale_after: float) -> list[str]:
    """The environments of the live nodes, newest first (by their last node's registration):
    where two describe one class differently, the newer one's description is served."""
    newest: dict[str, float] = {}
    for node in nodes:
        if node.live(now, stale_after):
            registered = newest.get(node.environment_id, float("-inf"))
            newest[node.environment_id] = max(registered, node.registered_at)
    return sorted(newest, key=lambda environment: (-newest[environment], environment))


def workflow_classes(graph: Any) -> dict[str, list[str]]:
    """The node classes an API-format workflow uses, each with the ids of its nodes."""
    classes: dict[str, list[str]] = {}
    if not isinstance(graph, dict):
        return classes
    for node_id, node in graph.items():
        class_type = node.get("class_type") if isinstance(node, dict) else None
        if isinstance(class_type, str):
            classes.setdefault(class_type, []).append(str(node_id))
    return classes


@dataclass(frozen=True, slots=True)
class CatalogueDocument:
    """A catalogue document as served: its JSON body and the ETag of that body."""

    body: str
    etag: str

    @classmethod
    def of(cls, data: Any) -> CatalogueDocument:
        body = json.dumps(data, separators=(",", ":"))
        return cls(body, f'"{hashlib.sha256(body.encode()).hexdigest()[:32]}"')


class FleetCatalogue:
    """The catalogues of the environments in service, by environment id, in precedence order
    (a class several describe is described as the first does), and their union."""

    def __init__(self, catalogues: Mapping[str, NodeCatalogue]) -> None:
        if not catalogues:
            raise ValueError("a fleet catalogue needs at least one environment's catalogue")
        self.catalogues = dict(catalogues)
        self.environments = tuple(self.catalogues)
        values = list(self.catalogues.values())
        self.union = values[0] if len(values) == 1 else NodeCatalogue.union(values)
        self._document: CatalogueDocument | None = None

    def environments_for(self, class_types: Collection[str]) -> frozenset[str] | None:
        """The environments that have every one of ``class_types`` (perhaps none); None
        when every environment in service has them, so that any node may run the job."""
        having = [
            environment
            for environment, catalogue in self.catalogues.items()
            if all(class_type in catalogue for class_type in class_types)
        ]
        return None if len(having) == len(self.catalogues) else frozenset(having)

    def placement_errors(self, graph: Any) -> list[WorkflowError]:
        """A workflow whose every class some environment has, but no environment all of
        them, can run nowhere: the nodes whose class the closest environment lacks."""
        classes = workflow_classes(graph)
        known = {name: ids for name, ids in classes.items() if name in self.union}
        if self.environments_for(list(known)) != frozenset():
            return []
        closest = max(
            self.catalogues.values(), key=lambda catalogue: sum(name in catalogue for name in known)
        )
        return [
            WorkflowError(
                ErrorCode.UNKNOWN_CLASS_TYPE,
                f"node class {name} is not installed together with the workflow's other "
                "classes: no environment in service has all of them",
                node_id,
            )
            for name, ids in known.items()
            if name not in closest
            for node_id in ids
        ]

    def document(self) -> CatalogueDocument:
        """The union in ComfyUI's ``/object_info`` shape (built once)."""
        if self._document is None:
            self._document = CatalogueDocument.of(
                {name: self.union.info(name) for name in self.union}
            )
        return self._document

    def class_document(self, class_type: str) -> CatalogueDocument | None:
        """``{class_type: info}``, as ComfyUI's ``/object_info/{class}``; None if unknown."""
        if class_type not in self.union:
            return None
        return CatalogueDocument.of({class_type: self.union.info(class_type)})
