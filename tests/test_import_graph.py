"""The package's imports go one way: no module, and no subpackage, imports itself through others.

Read from the source (``ast``), so the test sees imports inside functions too (a lazy import is
still a dependency) and skips only ``if TYPE_CHECKING:`` blocks. ``from fastdec import name``
depends on the package face (``fastdec/__init__.py``) unless ``name`` is a submodule.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "fastdec"


def _modules() -> dict[str, tuple[Path, bool]]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return mods


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path, is_pkg: bool, mods: dict[str, tuple[Path, bool]]) -> set[str]:
    package = name if is_pkg else name.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                found.add(sub if sub in mods else module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {m for m in found if m in mods and m != name}


def _graph(collapse: bool) -> dict[str, set[str]]:
    mods = _modules()

    def node(m: str) -> str:
        return ".".join(m.split(".")[:2]) if collapse else m

    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in mods.items():
        deps = {node(d) for d in _imports(name, path, is_pkg, mods)} - {node(name)}
        graph.setdefault(node(name), set()).update(deps)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (depth-first search), or ``None``."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def dfs(v: str) -> list[str] | None:
        state[v] = 1
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return [*stack[stack.index(w) :], w]
            if w not in state and (found := dfs(w)) is not None:
                return found
        stack.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (found := dfs(v)) is not None:
            return found
    return None


def test_the_graph_is_read() -> None:
    graph = _graph(collapse=False)
    assert "fastdec.generation.loop" in graph
    assert "fastdec.generation.kv_state" in graph["fastdec.generation.loop"]
    assert "fastdec.smc" in graph["fastdec"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_module_imports_itself_through_others() -> None:
    assert _cycle(_graph(collapse=False)) is None


def test_no_subpackage_imports_itself_through_others() -> None:
    # e.g. generation -> kernels -> generation
    assert _cycle(_graph(collapse=True)) is None
