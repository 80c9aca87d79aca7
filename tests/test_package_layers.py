"""The subpackages of shardkit form layers: no package imports, directly or through
others, a package that imports it back (a cycle makes import order matter and
hides which layer owns what)."""

import ast
import pathlib

import shardkit

ROOT = pathlib.Path(shardkit.__file__).parent
PACKAGES = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}


def imported_packages(source: str) -> set[str]:
    """Subpackages of shardkit named by the imports of ``source``, lazy ones included."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[0] == "shardkit" and len(parts) > 1:
                found.add(parts[1])
            elif node.module == "shardkit":
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "shardkit" and len(parts) > 1:
                    found.add(parts[1])
    return found & PACKAGES


def package_graph() -> dict[str, set[str]]:
    graph = {name: set() for name in PACKAGES}
    for name in PACKAGES:
        for path in (ROOT / name).rglob("*.py"):
            graph[name] |= imported_packages(path.read_text()) - {name}
    return graph


def find_cycle(graph):
    """One cycle as a list of packages, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
            if nxt not in state:
                cycle = visit(nxt, path + [nxt])
                if cycle:
                    return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start, [start])
            if cycle:
                return cycle
    return None


def test_finder_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_cycle_between_subpackages():
    graph = package_graph()
    assert "checkpointing" in graph and "memory" in graph
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"
