"""The package imports only from below: no import cycle between modules of src/eeve, nor between its sub-packages.

The graph is read from the source (every ``import`` and ``from ... import``, those inside functions included), so
an import hidden in a function still counts. A sub-package is the first path component under eeve/ (``model``,
``training``, ...); a top-level module (``config``, ``layout``, ...) is a node of its own.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_files(src: Path = SRC, package: str = "eeve") -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``package`` under ``src`` (a package by its __init__)."""
    out = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every dotted name an import statement anywhere in ``tree`` may load (relative imports resolved)."""
    here = module.split(".") if is_package else module.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def import_graph(src: Path = SRC, package: str = "eeve") -> dict[str, set[str]]:
    """Module -> the package's modules it imports. ``from eeve.model import split`` imports the module
    ``eeve.model.split``; ``from eeve.model.split import f`` imports ``eeve.model.split`` (not ``eeve.model``)."""
    files = module_files(src, package)
    graph = {}
    for module, path in files.items():
        names = imported_names(ast.parse(path.read_text(encoding="utf-8")), module, path.name == "__init__.py")
        # a name that is a module wins over the package it sits in: `from a.b import c` -> a.b.c or else a.b
        targets = {n for n in names if n in files}
        targets -= {n for n in targets if any(t.startswith(n + ".") for t in targets)}
        graph[module] = targets - {module}
    return graph


def subpackage_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph collapsed to sub-packages (``eeve.model.split`` -> ``model``; ``eeve.config`` ->
    ``config``); an import inside one sub-package is no edge."""

    def node(module: str) -> str:
        parts = module.split(".")
        return parts[1] if len(parts) > 1 else parts[0]

    out: dict[str, set[str]] = {}
    for a, targets in graph.items():
        out.setdefault(node(a), set()).update(node(b) for b in targets if node(b) != node(a))
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (or a self-loop), each sorted; Tarjan's
    algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    nodes = sorted(set(graph) | {b for t in graph.values() for b in t})
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1 or v in graph.get(v, ()):
                    found.append(sorted(comp))
    return sorted(found)


def describe(graph: dict[str, set[str]], comp: list[str]) -> str:
    """A cycle's nodes and the edges between them, for the failure message."""
    edges = [f"{a} -> {b}" for a in comp for b in sorted(graph.get(a, ())) if b in comp]
    return f"{{{', '.join(comp)}}}: {'; '.join(edges)}"


def test_cycle_finder_on_a_synthetic_graph():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}, "f": {"d"}}
    assert cycles(graph) == [["a", "b", "c"], ["e"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert subpackage_graph({"p.x.a": {"p.y.b", "p.x.c"}, "p.y.b": {"p.top"}, "p.x.c": set(), "p.top": set()}) == {
        "x": {"y"},
        "y": {"top"},
        "top": set(),
    }


def test_graph_reader_sees_imports_inside_functions(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "top.py").write_text("def f():\n    from pkg.sub import leaf\n")
    (pkg / "sub" / "leaf.py").write_text("from ..top import f\nfrom . import other\n")
    (pkg / "sub" / "other.py").write_text("import pkg.top\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.top"] == {"pkg.sub.leaf"}
    assert graph["pkg.sub.leaf"] == {"pkg.top", "pkg.sub.other"}
    assert cycles(graph) == [["pkg.sub.leaf", "pkg.sub.other", "pkg.top"]]
    assert cycles(subpackage_graph(graph)) == [["sub", "top"]]


def test_no_import_cycle_between_modules():
    graph = import_graph()
    assert len(graph) > 40 and graph["eeve.training.stages"], "the graph reader found too little: check SRC"
    found = cycles(graph)
    assert not found, "import cycles between modules: " + " | ".join(describe(graph, c) for c in found)


def test_no_import_cycle_between_subpackages():
    graph = subpackage_graph(import_graph())
    found = cycles(graph)
    assert not found, "import cycles between sub-packages: " + " | ".join(describe(graph, c) for c in found)
