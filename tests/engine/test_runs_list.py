"""``list_runs``: which folders of a runs folder are runs, and in what order they list."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from engine import cli
from engine.events import FIRST_STAGE, RunFinished, Status, StepLogged
from engine.runs import EventLog, RunDir, RunsCache, default_run_name, list_runs
from tests.conftest import run_started


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


def test_a_run_without_a_start_is_dated_by_its_name_else_its_config_not_its_folder(tmp_path: Path) -> None:
    """A live run has no summary yet, and each checkpoint it writes changes its folder's time."""
    import time

    stamped = make_run(tmp_path, "20240101-100000-a", {"status": "finished"})
    named = make_run(tmp_path, "my-run", {"status": "finished"})
    os.utime(named / "config.yaml", (1_700_000_000, 1_700_000_000))
    for folder in (stamped, named):
        (folder / "checkpoints").mkdir()  # the folder's time is now
    started = {info.name: info.started for info in list_runs(tmp_path)}
    assert started == {"20240101-100000-a": time.mktime((2024, 1, 1, 10, 0, 0, 0, 0, -1)), "my-run": 1_700_000_000}


def test_a_run_whose_summary_is_damaged_lists_as_its_events_say_it_ended(tmp_path: Path) -> None:
    """A torn summary.json is no sign of a kill: the end of events.jsonl says how the run's last session ended."""
    step = StepLogged(1, 2, 0.5, 0.7, 1e-4, 10.0, 1.0, 1.0)
    histories = {
        "20240101-100000-finished": [run_started(), step, RunFinished("finished", 2, 3.0, "model")],
        "20240102-100000-resumed-then-killed": [
            run_started(),
            RunFinished("stopped", 1, 1.0, "model"),
            run_started(start_step=1),
            step,
        ],
        "20240103-100000-killed-loading-its-resume": [
            run_started(),
            RunFinished("stopped", 1, 1.0, "model"),
            Status(FIRST_STAGE, "minilm"),
        ],
    }
    for name, events in histories.items():
        folder = make_run(tmp_path, name)
        (folder / "summary.json").write_text('{"status": "fini', encoding="utf-8")
        log = EventLog(folder / "events.jsonl")
        for event in events:
            log.write(event)
        log.close()
    statuses = {info.name: info.status for info in list_runs(tmp_path)}
    assert statuses == {
        "20240101-100000-finished": "finished",
        "20240102-100000-resumed-then-killed": "killed",
        "20240103-100000-killed-loading-its-resume": "killed",
    }


def test_a_runs_folder_under_home_lists_as_written(
    tmp_path: Path, monkeypatch: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """output.runs_dir: ~/runs writes runs to the home folder; the list (the Runs panel, tunebench runs) reads
    them there, not from a folder named "~"."""
    monkeypatch.setenv("HOME", str(tmp_path))
    make_run(tmp_path / "runs", "20240101-100000-a", {"status": "finished", "started": 1.0})
    assert [r.name for r in list_runs("~/runs")] == ["20240101-100000-a"]
    assert cli.main(["runs", "--runs-dir", "~/runs"]) == 0  # quoted, the shell leaves the ~
    assert "20240101-100000-a" in capsys.readouterr().out


def test_a_missing_runs_folder_or_a_file_lists_nothing(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    assert list_runs(tmp_path / "missing") == [] and list_runs(tmp_path / "file") == []


def test_a_cache_reads_again_only_the_summaries_that_changed(tmp_path: Path, monkeypatch: Any) -> None:
    from engine import runs as runs_module

    for day in (1, 2, 3):
        make_run(tmp_path, f"2024010{day}-100000-r", {"status": "finished", "started": float(day)})
    read: list[str] = []
    real = runs_module._read_summary
    monkeypatch.setattr(runs_module, "_read_summary", lambda path: read.append(Path(path).parent.name) or real(path))
    cache = RunsCache()
    assert len(list_runs(tmp_path, cache)) == 3 and len(read) == 3
    read.clear()
    RunDir(tmp_path / "20240102-100000-r").write_summary({"status": "stopped", "started": 2.0})
    shutil.rmtree(tmp_path / "20240103-100000-r")
    listed = list_runs(tmp_path, cache)
    assert read == ["20240102-100000-r"]
    assert [(r.name, r.status) for r in listed] == [("20240102-100000-r", "stopped"), ("20240101-100000-r", "finished")]
    assert sorted(cache.runs) == sorted(str(r.path / "summary.json") for r in listed)  # the removed run's gone


def test_a_killed_run_lists_its_last_known_best_score_and_time(tmp_path: Path) -> None:
    """A run killed before it wrote a summary (a resumed run's is gone while it trains) keeps what its live.json
    last said: its best score so far and its seconds, not "-"."""
    folder = make_run(tmp_path, "20240101-100000-killed")
    log = EventLog(folder / "events.jsonl")
    log.write(run_started())
    log.close()
    record = {"pid": 1, "state": "running", "heartbeat": 0.0, "best": ["accuracy", 0.7292], "seconds": 28.5}
    (folder / "live.json").write_text(json.dumps(record), encoding="utf-8")
    (folder / "config.yaml").write_text("task: classification\nmodel:\n  name_or_path: minilm\n", encoding="utf-8")
    [info] = list_runs(tmp_path)
    assert (info.status, info.best_text, info.duration_seconds) == ("killed", "acc 0.7292", 28.5)
    assert (info.task, info.model) == ("classification", "minilm")  # from its config: it has no summary


def test_a_run_started_from_a_runs_model_is_named_after_the_model_not_the_folder() -> None:
    from engine.config import from_dict

    def named(model: str) -> str:
        return default_run_name(from_dict({"model": {"name_or_path": model}}))

    assert named("minilm") == "classification-minilm"
    assert named("runs/20261207-130342-classification-minilm") == "classification-minilm"
    assert named("org/some-model/") == "classification-some-model"
