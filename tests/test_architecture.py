"""The house rules of edgekd/, read from the code with ``ast``: no import circle, imports only run from a
higher layer to a lower one, and no file over 500 lines.

Imports inside ``if TYPE_CHECKING:`` are left out: they never run, they only name a type.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edgekd"

# Bottom to top. A room may import rooms of its own layer's lower neighbours only (any lower layer).
LAYERS: list[set[str]] = [
    {"errors"},  # the exception types: imported by everything, importing nothing (io raises StorageError)
    {"edgekd", "io", "console", "host", "schema"},  # "edgekd": the package root (__version__)
    {"data", "models"},
    {"distill"},
    {"quant", "runtimes"},
    {"targets"},
    {"export", "nas"},
    {"bench", "package"},
    {"config"},
    {"tasks"},
    {"rundir"},
    {"stage"},
    {"stages"},
    {"report"},
    {"pipeline"},
    {"cli"},
    {"__main__"},
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        if "templates" in path.parts:  # shipped in bundles, run by the device's Python: not edgekd code
            continue
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[str]:
    """Every ``edgekd...`` name imported in ``tree`` (module level and inside functions)."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend(a.name for a in node.names if a.name.startswith("edgekd"))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("edgekd"):
            found.extend(f"{node.module}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = {resolve(n) for n in _imports(ast.parse(path.read_text()))}
        edges[name] = {t for t in targets if t and t != name and t != "edgekd"}
    return edges


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "edgekd"


def test_no_import_circle(graph):
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
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

    for v in graph:
        if v not in index:
            strongconnect(v)
    assert not cycles, f"import circles: {cycles}"


def test_imports_run_downwards_only(graph):
    layer_of = {room: i for i, rooms in enumerate(LAYERS) for room in rooms}
    rooms = {_room(m) for m in graph}
    assert rooms <= set(layer_of), f"rooms with no layer: {sorted(rooms - set(layer_of))} (add them to LAYERS)"
    upward = sorted(
        f"{m} -> {t}"
        for m, targets in graph.items()
        for t in targets
        if _room(m) != _room(t) and layer_of[_room(t)] >= layer_of[_room(m)]
    )
    assert not upward, "imports from a lower (or the same) layer to a higher one:\n" + "\n".join(upward)


def test_no_file_over_500_lines():
    long = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 500
    }
    assert not long, f"files over 500 lines: {long}"
