"""The package reads from its leaves to its root: no import cycle among its modules.

Every ``import`` statement of every module is read with ``ast``, at module level and inside functions and classes
alike (an import written inside a function to dodge a cycle is still a dependency), ``TYPE_CHECKING`` blocks excepted
(they never run). An edge goes from a module to the package module it names (``from a.b import c`` names ``a.b.c``
when that is a module, else ``a.b``), and to every package above that one that Python initialises first
(``lightning_mm.callbacks`` for ``lightning_mm.callbacks.placement``), except the packages the importer itself lives in
(they are already being initialised) and the root package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "lightning_mm"


def _module_names() -> dict[str, Path]:
    names = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found = []
    stack = [tree]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                stack.extend(child.orelse)
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                found.append(child)
            stack.append(child)
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _initialised_parents(target: str, importer: str) -> list[str]:
    """Packages above ``target`` that importing it initialises, short of the importer's own and the root."""
    parts = target.split(".")
    parents = [".".join(parts[:i]) for i in range(2, len(parts))]
    return [p for p in parents if not (importer == p or importer.startswith(p + "."))]


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (module-level and function-level imports alike)."""
    modules = _module_names()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        edges = set()
        for node in _imports(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                resolved = _resolve(target, modules)
                if resolved is None:
                    continue
                edges.update(p for p in [resolved, *_initialised_parents(resolved, name)] if p != name)
        graph[name] = edges
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_the_graph_sees_module_and_function_level_imports():
    graph = import_graph()
    assert "lightning_mm.module" in graph["lightning_mm.factory"]  # module level
    assert "lightning_mm.models.vlm" in graph["lightning_mm.models"]  # a package's __init__
    assert "lightning_mm.models" in graph["lightning_mm.evaluation"]  # the package a submodule import initialises
    assert "lightning_mm.models" not in graph["lightning_mm.models.vlm"]  # ... but not the importer's own


def test_a_cycle_is_found():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_function_level_imports_count(tmp_path):
    tree = ast.parse("import x\ndef f():\n    from y import z\nif TYPE_CHECKING:\n    import w\n")
    assert sorted(n.names[0].name if isinstance(n, ast.Import) else n.module for n in _imports(tree)) == ["x", "y"]


def test_the_package_has_no_import_cycle():
    cycles = find_cycles(import_graph())
    if cycles:
        pytest.fail(
            "Import cycles (each line: the modules of one cycle):\n" + "\n".join(" <-> ".join(c) for c in cycles)
        )
