"""Small builders shared by the workbench tests: run folders on disk and expected values read from the data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.config import RunConfig
from engine.data import SAMPLES_DIR
from engine.events import Event
from engine.files import atomic_write_text
from engine.runs import EventLog, RunDir

if TYPE_CHECKING:
    from tui.app import WorkbenchApp
    from tui.panels.config import FieldEditor


def sample_rows(name: str, split: str) -> list[dict[str, Any]]:
    """The rows of a bundled sample split, read straight from its JSONL file."""
    path = SAMPLES_DIR / name / f"{split}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_run(root: Path, name: str, cfg: RunConfig, events: list[Event], summary: dict[str, Any]) -> RunDir:
    """A finished run folder as the engine writes it: config.yaml, events.jsonl and summary.json."""
    run = RunDir(root / name)
    run.path.mkdir(parents=True)
    atomic_write_text(run.config_path, cfg.to_yaml())
    log = EventLog(run.events_path)
    for event in events:
        log.write(event)
    log.close()
    run.write_summary(summary)
    return run


def summary_for(cfg: RunConfig, *, started: float, best: float, status: str = "finished") -> dict[str, Any]:
    return {
        "status": status,
        "task": cfg.task,
        "engine": cfg.engine,
        "model": cfg.model.name_or_path,
        "started": started,
        "duration_seconds": 95.0,
        "best_metric": "accuracy",
        "best_value": best,
    }


def edit_field(app: WorkbenchApp, path: str, text: str) -> FieldEditor:
    """Move the Config form's editor to the field ``path`` and replace its text, as typing over it would."""
    panel = app.config_panel
    panel.focus_field(path)
    panel.editor.value = text
    return panel.editor
