"""A run cloned from another records its parent (output.parent) in config.yaml and summary.json; the runs list
and ``lineage`` follow the chain."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from engine.runner import Runner
from engine.runs import RunInfo, lineage, list_runs


def test_a_run_records_its_parent_in_its_config_and_summary(make_config: Callable[..., Any]) -> None:
    cfg = make_config({"output.parent": "20240101-100000-classification-tiny", "train.num_train_epochs": 1})
    result = Runner(cfg).run()
    assert result.status == "finished" and result.run_dir is not None
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["output"]["parent"] == "20240101-100000-classification-tiny"
    assert json.loads((result.run_dir / "summary.json").read_text())["parent"] == saved["output"]["parent"]
    (info,) = list_runs(result.run_dir.parent)
    assert info.parent == saved["output"]["parent"] and info.sweep is None


def test_a_run_without_a_summary_lists_its_parent_and_sweep_from_its_config(tmp_path: Path) -> None:
    run = tmp_path / "20240102-100000-killed"
    run.mkdir()
    (run / "config.yaml").write_text("output:\n  parent: 20240101-100000-a\n  sweep: s1\n", encoding="utf-8")
    (info,) = list_runs(tmp_path)
    assert (info.status, info.parent, info.sweep) == ("killed", "20240101-100000-a", "s1")


def test_lineage_follows_parents_and_stops_at_a_loop_or_a_run_not_listed() -> None:
    def info(name: str, parent: str | None) -> RunInfo:
        return RunInfo(Path(name), name, "finished", "", "", 0.0, None, None, None, parent=parent)

    runs = [info("c", "b"), info("b", "a"), info("a", None), info("x", "y"), info("y", "x"), info("d", "gone")]
    assert lineage("c", runs) == ["c", "b", "a"]
    assert lineage("x", runs) == ["x", "y"]
    assert lineage("d", runs) == ["d", "gone"]
