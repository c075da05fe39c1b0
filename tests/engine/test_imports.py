"""The engine stays headless, and the modules on the TUI's start-up path stay light."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import engine

ENGINE_MODULES = sorted(f"engine.{m.name}" for m in pkgutil.iter_modules(engine.__path__))
#: What the workbench imports before its first frame: none of these may pull in torch and friends.
LIGHT_MODULES = [
    "engine.config",
    "engine.events",
    "engine.control",
    "engine.runs",
    "engine.runner",
    "engine.errors",
    "engine.browse",
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
