"""Layers without cycles: meal's packages import each other in one direction only (imports at a module's top
level; those under ``if TYPE_CHECKING:`` are for type hints and excluded), and the bottom layer, meal.core,
imports nothing of meal but meal.errors."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "meal"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str:
    """A module's layer unit: its subpackage (``meal.engine``) or top-level module (``meal.app``)."""
    return ".".join(module.split(".")[:2])


def _top_level_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return {name for name in found if name == "meal" or name.startswith("meal.")}


def _graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        source = _unit(_module_name(path))
        for target in map(_unit, _top_level_imports(path)):
            if target != source:
                edges[source].add(target)
    return edges


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a list of units, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}}) is None


def test_no_import_cycle_between_meals_packages() -> None:
    edges = _graph()
    assert {"meal.engine", "meal.methods", "meal.softlabels", "meal.core"} <= set(edges) | {
        t for targets in edges.values() for t in targets
    }
    assert _cycle(edges) is None, f"import cycle: {' -> '.join(_cycle(edges) or [])}"


def test_the_bottom_layer_imports_only_errors() -> None:
    for path in (PACKAGE / "core").rglob("*.py"):
        outside = {m for m in _top_level_imports(path) if _unit(m) not in ("meal.core", "meal.errors")}
        assert outside == set(), f"{path.name} imports {outside}"


def test_engine_and_methods_do_not_import_each_other() -> None:
    edges = _graph()
    assert "meal.methods" not in edges["meal.engine"]
    assert "meal.engine" not in edges["meal.methods"]
    assert "meal.methods" not in edges["meal.softlabels"]


def test_no_module_imports_another_ones_private_names() -> None:
    private = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("meal"):
                private += [f"{path.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert private == []
