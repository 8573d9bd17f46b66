"""The dependency rules of docs/architecture.md, checked on the real import graph of ``src/kdlab``.

Every ``import`` / ``from … import`` statement counts, function-level ones included (they are
where cycles hide). An edge to a package means its ``__init__``; ``from pkg import name`` where
``name`` is a sub-module is an edge to that sub-module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Layers, lowest first: a module may import its own layer and those below, never one above.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("kdlab.version", "kdlab.errors", "kdlab.reading", "kdlab.io", "kdlab.registry", "kdlab.moved")),
    ("config", ("kdlab.config",)),
    ("run folder", ("kdlab.runs", "kdlab.records")),
    ("kd-math", ("kdlab.kd.losses",)),
    ("data-models", ("kdlab.data", "kdlab.models")),
    ("kd", ("kdlab.kd",)),
    ("report", ("kdlab.report",)),
    ("train", ("kdlab.train",)),
    ("lab", ("kdlab.lab",)),
    ("apps", ("kdlab.apps",)),
    ("cli", ("kdlab.cli", "kdlab.__main__")),
]
# The package's public face re-exports the API; nothing inside kdlab imports it.
TOP = "kdlab"


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "kdlab").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str | None] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(_resolve(a.name) for a in node.names if a.name.split(".")[0] == "kdlab")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            if name.split(".")[0] != "kdlab":
                continue
            for alias in node.names:
                full = f"{name}.{alias.name}"
                found.add(full if full in MODULES else _resolve(name))
    found.discard(None)
    found.discard(module)
    return {m for m in found if m is not None}


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _layer(module: str) -> int:
    best, rank = -1, -1
    for i, (_name, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    return rank


def test_every_module_has_a_layer() -> None:
    assert [m for m in MODULES if m != TOP and _layer(m) < 0] == []


def test_no_import_cycles() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert cycles == []


def test_nothing_inside_imports_the_public_face() -> None:
    assert sorted(m for m, deps in GRAPH.items() if TOP in deps and m != TOP) == []


def test_layers_point_down() -> None:
    upward = [
        f"{m} -> {d} ({LAYERS[_layer(m)][0]} -> {LAYERS[_layer(d)][0]})"
        for m, deps in GRAPH.items()
        if m != TOP
        for d in deps
        if d != TOP and _layer(d) > _layer(m)
    ]
    assert upward == []


@pytest.mark.parametrize("low", ["kdlab.data", "kdlab.models", "kdlab.report"])
def test_data_models_report_never_reach_the_loop_lab_or_distiller(low: str) -> None:
    forbidden = ("kdlab.train", "kdlab.lab", "kdlab.apps", "kdlab.cli")
    bad = [
        f"{m} -> {d}"
        for m, deps in GRAPH.items()
        if m == low or m.startswith(low + ".")
        for d in deps
        if d.startswith(forbidden)
    ]
    assert bad == []


def test_losses_import_only_torch_and_the_standard_library() -> None:
    import sys

    tree = ast.parse(MODULES["kdlab.kd.losses"].read_text(encoding="utf-8"))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            roots.add((node.module or "").split(".")[0])
    assert roots - {"torch", "__future__"} <= set(sys.stdlib_module_names)


def test_the_checker_sees_function_level_imports() -> None:
    # A guard on the checker itself: lab.run imports the report's figures inside a function.
    assert any(d.startswith("kdlab.report") for d in GRAPH["kdlab.lab.run"])
