"""The package's shape (docs/architecture.md), checked on the source: stages do not import each
other, no import cycles, short functions. Read with ast: nothing is imported or run."""
from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import REPO

LIB = REPO / "lib"
MAX_FUNCTION_LINES = 60
# Longer functions allowed, and why.
LONG_FUNCTIONS = {
    # declarative: the reject-reason table (reason/detail per rule) and the ingest table's
    # column list; the data half's module (outside the model-half refactoring of issue 11)
    "starscale.ingest.classify_tsv",
}


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted((LIB / "starscale").rglob("*.py")):
        name = ".".join(path.relative_to(LIB).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = ast.parse(path.read_text(), str(path))
    return out


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.Module, known: set[str]) -> set[str]:
    """starscale modules a module imports, at module level or inside functions (imports under
    `if TYPE_CHECKING:` are for type checkers only and never run)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _is_type_checking(node):
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module in known:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names
                         if f"{node.module}.{a.name}" in known)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(tree, known) - {name} for name, tree in modules.items()}


def test_no_stage_imports_another_stage():
    offenders = {name: sorted(d for d in deps if d.startswith("starscale.stages."))
                 for name, deps in _graph().items() if name.startswith("starscale.stages.")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_import_cycles():
    graph = _graph()
    cycles, state = [], {}

    def walk(node: str, stack: list[str]) -> None:
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                walk(dep, stack)
        stack.pop()
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            walk(name, [])
    assert cycles == []


def test_functions_are_short():
    long = {}
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES and f"{name}.{node.name}" not in LONG_FUNCTIONS:
                    long[f"{name}.{node.name}"] = lines
    assert long == {}
