"""docs/ARCHITECTURE.md stays true: every file it names exists, and it names every module and event there is."""

from __future__ import annotations

import re
from pathlib import Path

from engine.events import EVENT_TYPES

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
#: `engine/x.py`, `tui/panels/`, `sample_configs/`, `BENCHMARKS.md`: a path in backticks.
PATHS = re.compile(r"`((?:engine|tui|tests|bench|docs|sample_configs)/[\w./-]*|[\w-]+\.md)`")


def test_every_path_the_architecture_names_exists() -> None:
    named = set(PATHS.findall(DOC))
    assert len(named) > 30
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"docs/ARCHITECTURE.md names files that do not exist: {missing}"


def test_every_module_and_every_event_is_in_the_architecture() -> None:
    modules = [p for pattern in ("engine/*.py", "tui/*.py") for p in ROOT.glob(pattern) if p.name != "__init__.py"]
    unnamed = sorted(str(p.relative_to(ROOT)) for p in modules if f"`{p.relative_to(ROOT)}`" not in DOC)
    assert not unnamed, f"docs/ARCHITECTURE.md does not say what these modules own: {unnamed}"
    for name in EVENT_TYPES:
        assert f"| `{name}` |" in DOC, f"the event table lacks {name}"
