"""The engine stays headless, its modules import in no circle, and the modules on the TUI's path stay light."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import engine

ENGINE_MODULES = sorted(f"engine.{m.name}" for m in pkgutil.iter_modules(engine.__path__))
#: What the workbench imports before its first frame: none of these may pull in torch and friends.
LIGHT_MODULES = [
    "engine.config",
    "engine.events",
    "engine.metrics",
    "engine.splits",
    "engine.control",
    "engine.runs",
    "engine.runner",
    "engine.errors",
    "engine.browse",
    # the Predict panel imports it on the UI thread; the models load in its worker
    "engine.predict",
]


def imported_after(modules: list[str]) -> set[str]:
    code = f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\nprint('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return {name.split(".")[0] for name in out.split()}


def test_engine_imports_no_textual_rich_or_tui() -> None:
    assert ENGINE_MODULES, "no engine modules found"
    loaded = imported_after(ENGINE_MODULES)
    assert not loaded & {"textual", "rich", "tui"}


def test_light_engine_modules_do_not_import_torch_or_transformers() -> None:
    loaded = imported_after(LIGHT_MODULES)
    assert not loaded & {"torch", "transformers", "datasets", "trl", "accelerate"}


def module_name(path: Path, root: Path) -> str:
    """``engine/x/y.py`` -> ``engine.x.y``; a package's ``__init__.py`` -> the package."""
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, module: str, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``module`` imports anywhere in its code (deferred ones too), bar those under
    ``if TYPE_CHECKING:``, which never run."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for stmt in block.body
        for node in ast.walk(stmt)
    }
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from . import x, from ..y import z
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return (found & known) - {module}


def engine_import_graph() -> dict[str, set[str]]:
    """Every module of the engine package -> the engine modules it imports."""
    root = Path(engine.__path__[0])
    files = {module_name(path, root): path for path in root.rglob("*.py")}
    return {module: imports_of(path, module, set(files)) for module, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle in ``graph`` as ``[a, b, ..., a]``, or None."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        for dep in sorted(graph[module]):
            cycle = visit(dep, [*path, module])
            if cycle:
                return cycle
        done.add(module)
        return None

    return next((c for m in sorted(graph) if (c := visit(m, [])) is not None), None)


def test_find_cycle_names_the_circle() -> None:
    graph = {"engine.a": {"engine.b"}, "engine.b": {"engine.c"}, "engine.c": {"engine.a"}, "engine.d": set()}
    assert find_cycle(graph) == ["engine.a", "engine.b", "engine.c", "engine.a"]
    assert find_cycle({"engine.a": {"engine.b"}, "engine.b": set()}) is None


def test_engine_modules_import_in_no_circle() -> None:
    # Deferred imports count: one inside a function only hides a circle until that function runs.
    graph = engine_import_graph()
    assert set(ENGINE_MODULES) <= set(graph) and any(graph.values()), "the import graph missed engine modules"
    cycle = find_cycle(graph)
    assert cycle is None, "engine modules import in a circle: " + " -> ".join(cycle or [])
