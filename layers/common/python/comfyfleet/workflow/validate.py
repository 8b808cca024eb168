"""Validation of ComfyUI API-format workflows, so a bad job fails at submit, not on a GPU.

Three layers, each reported as structured :class:`WorkflowError` records:

1. shape and bounds: an object of nodes, size, node count, class types, links, cycles;
2. security rules (DESIGN §10): denied classes, model/image URLs, file names;
3. given the fleet's node catalogue, the checks ComfyUI's own validator runs (required
   inputs, conversions, ranges, enums, link types): see :mod:`comfyfleet.workflow.inputs`.

It never raises on any input: every malformed graph gets errors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from comfyfleet.catalogue import NodeCatalogue, core_catalogue
from comfyfleet.settings import Settings, get_settings
from comfyfleet.workflow.errors import ErrorCode, WorkflowError
from comfyfleet.workflow.inputs import Node, check_inputs
from comfyfleet.workflow.refs import (
    LOADER_INPUTS,
    ModelRef,
    file_name_problem,
    parse_manifest,
    ref_for_url,
)
from comfyfleet.workflow.urls import UrlNotAllowed, UrlPolicy, is_url

MAX_REPORTED_ERRORS = 100


@dataclass(slots=True)
class ValidationResult:
    """The errors found, and the files the job needs (valid references only)."""

    errors: list[WorkflowError]
    models: list[ModelRef]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "errors": [error.to_dict() for error in self.errors],
            "models": [ref.to_dict() for ref in self.models],
        }


def validate_workflow(
    graph: Any,
    *,
    settings: Settings | None = None,
    catalogue: NodeCatalogue | None = None,
    manifest: Any = None,
    size_bytes: int | None = None,
) -> ValidationResult:
    """Validate an API-format ``graph`` and find the model files it needs.

    ``manifest`` is the request's ``models`` list; ``size_bytes`` the graph's size as
    received (measured here when not given); without ``catalogue`` the checks of layer 3
    are skipped.
    """
    return _Validation(settings or get_settings(), catalogue).run(graph, manifest, size_bytes)


class _Validation:
    def __init__(self, settings: Settings, catalogue: NodeCatalogue | None) -> None:
        self.settings = settings
        self.catalogue = catalogue
        self.policy = UrlPolicy.from_settings(settings)
        self.denied = frozenset(settings.denied_class_types)
        self.errors: list[WorkflowError] = []

    def add(
        self, code: ErrorCode, message: str, node_id: str | None = None, input: str | None = None
    ) -> None:
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(WorkflowError(code, message, node_id, input))
        elif len(self.errors) == MAX_REPORTED_ERRORS:
            self.errors.append(
                WorkflowError(
                    ErrorCode.TOO_MANY_ERRORS,
                    f"more than {MAX_REPORTED_ERRORS} errors; the rest are not listed",
                )
            )

    def run(self, graph: Any, manifest: Any, size_bytes: int | None) -> ValidationResult:
        if not self._check_document(graph, size_bytes):
            return ValidationResult(self.errors, [])
        manifest_refs, manifest_errors = parse_manifest(manifest, self.policy)
        self.errors.extend(manifest_errors)
        refs: dict[tuple[str, str], ModelRef] = {(r.key, r.folder): r for r in manifest_refs}
        nodes = self._check_nodes(graph, refs)
        self._check_cycles(nodes)
        outputs = self._check_outputs(graph, nodes)
        if self.catalogue is not None:
            named_files = {(ref.folder, ref.filename) for ref in manifest_refs}
            for error in check_inputs(self.catalogue, nodes, outputs, named_files):
                self.add(error.code, error.message, error.node_id, error.input)
        return ValidationResult(self.errors, list(refs.values()))

    # -- layer 1: shape and bounds -------------------------------------------------------

    def _check_document(self, graph: Any, size_bytes: int | None) -> bool:
        if not isinstance(graph, dict):
            self.add(
                ErrorCode.NOT_AN_OBJECT,
                "a workflow is a JSON object of nodes keyed by node id (ComfyUI's API format)",
            )
            return False
        if isinstance(graph.get("nodes"), list):
            self.add(
                ErrorCode.UI_FORMAT_NOT_SUPPORTED,
                "this is a workflow saved in the ComfyUI editor's format (nodes and links "
                "arrays); export it in API format (Workflow → Export (API)) and submit that",
            )
            return False
        size = size_bytes if size_bytes is not None else _json_size(graph)
        if size is None:
            self.add(ErrorCode.NOT_AN_OBJECT, "the workflow cannot be written as JSON")
            return False
        limit = self.settings.max_workflow_bytes
        if size > limit:
            self.add(ErrorCode.TOO_LARGE, f"the workflow is {size} bytes; at most {limit} allowed")
            return False
        limit = self.settings.max_workflow_nodes
        if len(graph) > limit:
            self.add(
                ErrorCode.TOO_MANY_NODES, f"the workflow has {len(graph)} nodes; at most {limit}"
            )
            return False
        return True

    def _check_nodes(
        self, graph: dict[Any, Any], refs: dict[tuple[str, str], ModelRef]
    ) -> dict[str, Node]:
        """Check each node and input once; collect well-formed nodes and the model refs."""
        nodes: dict[str, Node] = {}
        for raw_id, node in graph.items():
            node_id = str(raw_id)
            if not isinstance(node, dict):
                self.add(
                    ErrorCode.NOT_AN_OBJECT, "a node is an object {class_type, inputs}", node_id
                )
                continue
            class_type = node.get("class_type")
            if not isinstance(class_type, str) or not class_type.strip():
                self.add(ErrorCode.MISSING_CLASS_TYPE, "node has no class_type", node_id)
                continue
            inputs = node.get("inputs")
            if not isinstance(inputs, dict):
                self.add(ErrorCode.NOT_AN_OBJECT, "node inputs must be an object", node_id)
                continue
            if class_type in self.denied:
                self.add(
                    ErrorCode.DENIED_CLASS_TYPE,
                    f"node class {class_type} is not allowed on this platform",
                    node_id,
                )
            checked = Node(class_type, inputs)
            loader = LOADER_INPUTS.get(class_type, {})
            for raw_name, value in inputs.items():
                name = str(raw_name)
                if isinstance(value, list):
                    self._check_link(graph, checked, node_id, name, value)
                elif isinstance(value, str):
                    self._check_string(node_id, class_type, name, value, loader.get(name), refs)
            nodes[node_id] = checked
        return nodes

    def _check_link(
        self, graph: dict[Any, Any], node: Node, node_id: str, name: str, value: list[Any]
    ) -> None:
        index = value[1] if len(value) == 2 else None
        if (
            len(value) != 2
            or not isinstance(value[0], str)
            or not isinstance(index, int)
            or isinstance(index, bool)
            or index < 0
        ):
            self.add(
                ErrorCode.BAD_LINK,
                "a link is [source node id (a string), output index (an integer ≥ 0)]",
                node_id,
                name,
            )
            return
        source = value[0]
        if source not in graph:
            self.add(
                ErrorCode.LINK_TO_MISSING_NODE,
                f"links to node {source!r}, which does not exist",
                node_id,
                name,
            )
            return
        node.links[name] = (source, index)

    def _check_string(
        self,
        node_id: str,
        class_type: str,
        name: str,
        value: str,
        folder: str | None,
        refs: dict[tuple[str, str], ModelRef],
    ) -> None:
        # -- layer 2: every URL a node could fetch obeys the policy; loaders' URLs are refs.
        if is_url(value):
            try:
                self.policy.check(value)
            except UrlNotAllowed as exc:
                self.add(ErrorCode.URL_NOT_ALLOWED, str(exc), node_id, name)
                return
            if folder is not None:
                ref = ref_for_url(value, folder)
                refs.setdefault((ref.key, ref.folder), ref)
        elif folder is not None or name == "filename_prefix":
            reason = file_name_problem(class_type, name, value)
            if reason is not None:
                self.add(ErrorCode.UNSAFE_FILENAME, reason, node_id, name)

    def _check_cycles(self, nodes: dict[str, Node]) -> None:
        """Report each cycle of links once (ComfyUI cannot order a cyclic graph)."""
        done: set[str] = set()
        for start in nodes:
            if start in done:
                continue
            path = [start]
            on_path = {start}
            stack = [iter(nodes[start].links.values())]
            while stack:
                step = next(stack[-1], None)
                if step is None:
                    stack.pop()
                    finished = path.pop()
                    on_path.discard(finished)
                    done.add(finished)
                    continue
                source = step[0]
                if source in on_path:
                    loop = path[path.index(source) :]
                    chain = " → ".join(reversed(loop + [source]))
                    self.add(ErrorCode.CYCLE, f"nodes form a cycle: {chain}", source)
                elif source not in done and source in nodes:
                    path.append(source)
                    on_path.add(source)
                    stack.append(iter(nodes[source].links.values()))

    def _check_outputs(self, graph: dict[Any, Any], nodes: dict[str, Node]) -> list[str]:
        """The output nodes; reports a workflow that certainly has none.

        Without the fleet's catalogue only ComfyUI's core classes are known, and a class
        not known might be an output node, so the error is only certain then.
        """
        known = self.catalogue if self.catalogue is not None else core_catalogue()
        outputs: list[str] = []
        all_known = True
        for node_id, node in nodes.items():
            node_class = known.get(node.class_type)
            if node_class is None:
                all_known = False
            elif node_class.output_node:
                outputs.append(node_id)
        if not outputs and all_known and len(nodes) == len(graph):
            self.add(
                ErrorCode.NO_OUTPUT_NODE,
                "the workflow has no output node (such as SaveImage), so nothing would run",
            )
        return outputs


def _json_size(graph: Any) -> int | None:
    try:
        text = json.dumps(graph, separators=(",", ":"), ensure_ascii=False)
        return len(text.encode("utf-8", "surrogatepass"))
    except (TypeError, ValueError, RecursionError):
        return None
