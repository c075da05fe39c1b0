"""``list_runs``: which folders of a runs folder are runs, and in what order they list."""

from __future__ import annotations

import json
import os
from pathlib import Path

from engine.runs import list_runs


def make_run(root: Path, name: str, summary: dict[str, object] | None = None) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("task: classification\n", encoding="utf-8")
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return folder


def test_runs_list_newest_name_first_and_skip_what_is_no_run(tmp_path: Path) -> None:
    make_run(tmp_path, "20240101-100000-a", {"status": "finished", "started": 1.0})
    make_run(tmp_path, "20240103-100000-c", {"status": "stopped", "started": 3.0})
    make_run(tmp_path, "20240102-100000-b", {"status": "failed", "started": 2.0})
    make_run(tmp_path, ".queue", {"status": "finished"})  # hidden: the queue's own folder
    (tmp_path / "notes").mkdir()  # no config.yaml
    (tmp_path / "20240104-100000-file").write_text("not a folder")
    runs = list_runs(tmp_path)
    assert [(r.name, r.status) for r in runs] == [
        ("20240103-100000-c", "stopped"),
        ("20240102-100000-b", "failed"),
        ("20240101-100000-a", "finished"),
    ]
    assert runs[0].path == tmp_path / "20240103-100000-c"


def test_a_summary_without_a_start_dates_the_run_by_its_folder(tmp_path: Path) -> None:
    folder = make_run(tmp_path, "20240101-100000-a", {"status": "finished"})
    os.utime(folder, (1_700_000_000, 1_700_000_000))
    (info,) = list_runs(tmp_path)
    assert info.started == 1_700_000_000


def test_a_missing_runs_folder_or_a_file_lists_nothing(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    assert list_runs(tmp_path / "missing") == [] and list_runs(tmp_path / "file") == []
