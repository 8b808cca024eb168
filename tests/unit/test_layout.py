"""The house rules that keep the tree readable, checked on every run.

Imports run one way (entry points -> services -> domain): no package under the checked roots
may import itself back, directly or through others, whether the import sits at module level,
inside a function or under ``TYPE_CHECKING``. Modules stay under 400 lines, functions under 60.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Import name of each top-level package -> the folder it lives in.
PACKAGES = {
    "comfyfleet": ROOT / "layers" / "common" / "python" / "comfyfleet",
    "gpu_agent": ROOT / "gpu_agent",
    "comfyfleet_cdk": ROOT / "cdk" / "comfyfleet_cdk",
    "fakecomfy": ROOT / "fakecomfy",
}
# Folders whose every .py file obeys the size rules (the Lambda entry points and cdk/app.py too).
CHECKED = [
    ROOT / "layers",
    ROOT / "gpu_agent",
    ROOT / "functions",
    ROOT / "cdk",
    ROOT / "fakecomfy",
]
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _module_name(path: Path) -> str | None:
    for package, folder in PACKAGES.items():
        if path.is_relative_to(folder):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    return None


def _modules() -> dict[str, Path]:
    found = {}
    for folder in PACKAGES.values():
        for path in folder.rglob("*.py"):
            name = _module_name(path)
            if name is not None:
                found[name] = path
    return found


def _imported(name: str, path: Path, known: set[str]) -> set[str]:
    """Every first-party module `name` imports, wherever in the file the import sits."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)
    edges = set()
    for target in targets:
        # `import a.b.c` runs a, a.b and a.b.c; the nearest known module is the edge that matters.
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name and not name.startswith(target + "."):
            edges.add(target)
    return edges


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imported(name, path, known) for name, path in modules.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def _python_files() -> list[Path]:
    return sorted(
        path
        for folder in CHECKED
        for path in folder.rglob("*.py")
        if "cdk.out" not in path.parts and "node_modules" not in path.parts
    )


def test_the_walker_sees_a_circle_through_a_third_module() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_walker_counts_function_level_and_relative_imports(tmp_path: Path) -> None:
    known = {"comfyfleet.api", "comfyfleet.api.http", "comfyfleet.api.routes"}
    source = tmp_path / "http.py"
    source.write_text("def build():\n    from .routes import register\n    return register\n")
    assert _imported("comfyfleet.api.http", source, known) == {"comfyfleet.api.routes"}


def test_the_graph_covers_every_package() -> None:
    graph = import_graph()
    for package in PACKAGES:
        assert package in graph, package
    assert len(graph) > 100


def test_no_import_circles() -> None:
    found = circles(import_graph())
    assert found == [], "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_agent_does_not_import_the_stand_in() -> None:
    graph = import_graph()
    offenders = {
        name: sorted(t for t in targets if t.split(".")[0] == "fakecomfy")
        for name, targets in graph.items()
        if name.split(".")[0] == "gpu_agent"
    }
    assert {k: v for k, v in offenders.items() if v} == {}


@pytest.mark.parametrize("path", _python_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_and_function_sizes(path: Path) -> None:
    lines = path.read_text().splitlines()
    assert len(lines) <= MAX_MODULE_LINES, f"{len(lines)} lines"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse("\n".join(lines), str(path)))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []
