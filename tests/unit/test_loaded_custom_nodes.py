"""Which custom nodes of a lock a running ComfyUI loaded, from its /object_info."""

from __future__ import annotations

from typing import Any

from comfyfleet.environment import Lock, LockedNode
from comfyfleet.environment.loaded import loaded_custom_nodes, unloaded_custom_nodes

REV = "0123456789abcdef0123456789abcdef01234567"


def lock(*names: str) -> Lock:
    nodes = tuple(LockedNode(name, f"https://example.com/{name}", REV) for name in names)
    return Lock("0123456789ab", "v0.3.64", None, "/venv/bin/python", "0" * 64, nodes, ())


def info(**modules: str | None) -> dict[str, Any]:
    """An /object_info: class name -> its python_module (None: the key is absent)."""
    return {
        name: {"category": "x", **({"python_module": module} if module else {})}
        for name, module in modules.items()
    }


def test_classes_name_the_custom_node_folder_they_came_from() -> None:
    served = info(
        SaveImage="nodes",
        KSamplerAdvanced="comfy_extras.nodes_custom_sampler",
        CM_IntBinaryOperation="custom_nodes.ComfyMath",
        VHS_LoadVideo="custom_nodes.ComfyUI-VideoHelperSuite.videohelpersuite",
    )
    assert loaded_custom_nodes(served) == {"ComfyMath", "ComfyUI-VideoHelperSuite"}
    assert unloaded_custom_nodes(
        lock("ComfyMath", "Absent", "ComfyUI-VideoHelperSuite"), served
    ) == ["Absent"]


def test_a_server_that_names_no_modules_cannot_say() -> None:
    old_release = info(SaveImage=None, CM_IntBinaryOperation=None)
    assert loaded_custom_nodes(old_release) is None
    assert unloaded_custom_nodes(lock("ComfyMath"), old_release) == []


def test_only_core_classes_means_every_custom_node_is_missing() -> None:
    core = info(SaveImage="nodes", EmptyImage="nodes")
    assert unloaded_custom_nodes(lock("B", "A"), core) == ["B", "A"]
    assert unloaded_custom_nodes(lock(), core) == []
    assert loaded_custom_nodes({"odd": "not a mapping", **core}) == set()
