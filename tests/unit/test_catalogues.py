"""The fleet's catalogue: the environments in service, the union of their catalogues, which
of them can run a workflow, and the documents GET /v1/object_info serves."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from comfyfleet.catalogue import NodeCatalogue
from comfyfleet.catalogues import FleetCatalogue, environments_in_service, workflow_classes
from comfyfleet.domain import NodeInfo, NodeStatus
from comfyfleet.resources import CATALOGUE_KEY, catalogue_key

NOW = 1_800_000_000.0
OLD = NodeCatalogue({"SaveImage": {"output_node": True}, "Shared": {"category": "old"}})
NEW = NodeCatalogue(
    {"SaveImage": {"output_node": True}, "Shared": {"category": "new"}, "Fancy": {}}
)


def node(node_id: str, environment: str, **fields: Any) -> NodeInfo:
    base = NodeInfo(node_id, NodeStatus.IDLE, NOW, registered_at=NOW - 100)
    return replace(base, environment_id=environment, **fields)


def test_the_environments_in_service_are_those_of_live_nodes_newest_first() -> None:
    nodes = [
        node("a", "old", registered_at=NOW - 500),
        node("b", "new", registered_at=NOW - 10),
        node("c", "old", registered_at=NOW - 20),
        node("d", "gone", heartbeat_at=NOW - 3600),  # stale
        node("e", "drained", status=NodeStatus.DRAINING),
    ]

    assert environments_in_service(nodes, NOW, 30) == ["new", "old"]
    assert environments_in_service([], NOW, 30) == []


def test_each_environment_has_its_own_catalogue_key() -> None:
    assert catalogue_key("3f2a9c1d") == "catalogue/3f2a9c1d/object_info.json"
    assert catalogue_key("") == CATALOGUE_KEY  # a node that reports none: the fleet-wide one


def test_the_union_has_every_class_and_the_first_environment_describes_a_shared_one() -> None:
    fleet = FleetCatalogue({"new": NEW, "old": OLD})

    assert sorted(fleet.union) == ["Fancy", "SaveImage", "Shared"]
    assert fleet.union.info("Shared") == {"category": "new"}
    assert FleetCatalogue({"old": OLD, "new": NEW}).union.info("Shared") == {"category": "old"}
    assert FleetCatalogue({"old": OLD}).union is OLD


def test_only_the_environments_with_every_class_may_run_a_job() -> None:
    fleet = FleetCatalogue({"new": NEW, "old": OLD})

    assert fleet.environments_for(["SaveImage", "Shared"]) is None  # every one: any node
    assert fleet.environments_for(["SaveImage", "Fancy"]) == frozenset({"new"})
    assert fleet.environments_for(["Unknown"]) == frozenset()


def test_classes_split_across_environments_are_refused_naming_node_and_class() -> None:
    other = NodeCatalogue({"SaveImage": {"output_node": True}, "Rare": {}})
    fleet = FleetCatalogue({"new": NEW, "other": other})
    graph = {
        "1": {"class_type": "Fancy", "inputs": {}},
        "2": {"class_type": "Rare", "inputs": {}},
        "3": {"class_type": "SaveImage", "inputs": {}},
    }

    [error] = fleet.placement_errors(graph)

    assert error.code == "unknown_class_type" and error.node_id == "2"
    assert "Rare" in error.message and "no environment in service has all" in error.message
    assert fleet.placement_errors({"1": {"class_type": "Fancy", "inputs": {}}}) == []
    assert fleet.placement_errors({"1": {"class_type": "Nowhere", "inputs": {}}}) == []


def test_a_workflows_classes_are_read_with_their_node_ids() -> None:
    graph = {
        "1": {"class_type": "A", "inputs": {}},
        "2": {"class_type": "B", "inputs": {}},
        "3": {"class_type": "A", "inputs": {}},
        "4": {"inputs": {}},
        "5": "not a node",
    }

    assert workflow_classes(graph) == {"A": ["1", "3"], "B": ["2"]}
    assert workflow_classes(["not", "a", "graph"]) == {}


def test_the_documents_are_comfyuis_shape_with_an_etag_of_their_body() -> None:
    fleet = FleetCatalogue({"new": NEW, "old": OLD})

    document = fleet.document()
    one = fleet.class_document("Fancy")

    assert json.loads(document.body) == {
        "SaveImage": {"output_node": True},
        "Shared": {"category": "new"},
        "Fancy": {},
    }
    assert document is fleet.document()  # built once
    assert one is not None and json.loads(one.body) == {"Fancy": {}}
    assert document.etag.startswith('"') and document.etag != one.etag
    assert FleetCatalogue({"new": NEW, "old": OLD}).document().etag == document.etag
    assert fleet.class_document("Unknown") is None


def test_a_fleet_catalogue_needs_a_catalogue() -> None:
    with pytest.raises(ValueError):
        FleetCatalogue({})
