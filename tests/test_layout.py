"""The package layout holds: no import cycles among unirt's and the plugins' modules.

Counted on grimp's import graph (the one import-linter checks the layers on), with every import
counted: function-local ones and those under ``TYPE_CHECKING`` too, since a cycle hidden inside a
function is still a cycle for a reader. The package root ``unirt`` is left out: it is the lazy
public API, whose only imports name the modules it hands on (under ``TYPE_CHECKING``).
"""

from __future__ import annotations

import grimp

PACKAGES = ("unirt", "unirt_onnxruntime", "unirt_openvino", "unirt_opencv", "unirt_ncnn",
            "unirt_tensorrt")


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module."""
    modules = sorted(m for m in graph.modules if m != "unirt")
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.find_modules_directly_imported_by(v)):
            if w == "unirt" or w not in graph.modules:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for m in modules:
        if m not in index:
            visit(m)
    return found


def test_no_import_cycles() -> None:
    graph = grimp.build_graph(*PACKAGES)
    assert len(graph.modules) > 100  # the whole tree was read
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for m in ("p.a", "p.b", "p.c"):
        graph.add_module(m)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.c")
    graph.add_import(importer="p.c", imported="p.a")
    assert _cycles(graph) == [["p.a", "p.b", "p.c"]]
