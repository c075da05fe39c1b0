"""`engine.compare` and `tunebench compare`: config diff, evaluations side by side, legends, ranking, output."""

from __future__ import annotations

import io
import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from engine import cli
from engine.compare import ComparedRun, Comparison, compare, load_compared_run, render, sparkline
from engine.config import RunConfig
from engine.events import Evaluated, Event, StepLogged
from engine.runs import EventLog, RunDir
from tests.conftest import run_started, tiny_config


def config(runs: Path, overrides: dict[str, Any] | None = None, **sections: Any) -> RunConfig:
    cfg: RunConfig = tiny_config(Path("models/tiny"), Path("data/reviews.jsonl"), runs, overrides, **sections)
    return cfg


def steps(n: int, every: int = 1, start: float = 1.0, end: float = 0.2) -> list[Event]:
    """StepLogged events at steps every..n, the loss falling from ``start`` to ``end``."""
    out: list[Event] = []
    for step in range(every, n + 1, every):
        loss = start + (end - start) * step / n
        out.append(StepLogged(step, n, step / n, loss, 1e-3, 10.0, step * 0.1, (n - step) * 0.1))
    return out


def evaluated(epoch: float, step: int, loss: float, accuracy: float | None = None, **more: Any) -> Evaluated:
    return Evaluated(epoch=epoch, step=step, eval_loss=loss, accuracy=accuracy, **more)


def write_run(
    runs: Path,
    name: str,
    cfg: RunConfig | str,
    events: Sequence[Event] = (),
    status: str | None = "finished",
) -> RunDir:
    """A run folder written by hand: config.yaml (a RunConfig, or YAML text), events.jsonl and summary.json."""
    path = runs / name
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(cfg if isinstance(cfg, str) else cfg.to_yaml(), encoding="utf-8")
    log = EventLog(path / "events.jsonl")
    for event in events:
        log.write(event)
    log.close()
    run = RunDir(path)
    if status is not None:
        run.write_summary({"status": status})
    return run


def loaded(*runs: RunDir) -> Comparison:
    return compare([load_compared_run(run) for run in runs])


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    return tmp_path / "runs"


# ---------------------------------------------------------------------------------------------------------
# the config diff


def test_config_diff_lists_only_differing_keys_with_defaults_resolved(runs: Path) -> None:
    # a: a bare config (every other key a default); b: two defaults spelled out, two settings changed
    a = write_run(
        runs,
        "20250101-100000-a",
        "train:\n  learning_rate: 3.0e-5\noutput:\n  report_to: [tensorboard]\n  parent: x\n  sweep: s1\n",
    )
    b = write_run(
        runs,
        "20250101-110000-b",
        "train:\n  learning_rate: 5.0e-5\n  num_train_epochs: 3\n  weight_decay: 0.01\n"
        "  seed: 42\noutput:\n  runs_dir: elsewhere\n",
    )
    c = loaded(a, b)
    assert [(row.key, row.values) for row in c.diff] == [
        ("train.learning_rate", [3e-5, 5e-5]),
        ("train.weight_decay", [0.0, 0.01]),
        ("output.report_to", [["tensorboard"], []]),  # lists compare as lists
    ]
    # lineage is left out of the diff but kept with each run
    assert [r.parent for r in c.runs] == ["x", None] and [r.sweep for r in c.runs] == ["s1", None]
    assert c.runs[0].config["train.per_device_train_batch_size"] == 16  # a default, resolved


def test_identical_configs_have_no_diff_and_legends_fall_back_to_folder_names(runs: Path) -> None:
    a = write_run(runs, "20250101-100000-first", config(runs))
    b = write_run(runs, "20250101-110000-second", config(runs, output={"parent": "20250101-100000-first"}))
    c = loaded(a, b)
    assert c.diff == []
    assert c.legends == ["first", "second"]


# ---------------------------------------------------------------------------------------------------------
# evaluations side by side


def test_runs_of_different_length_line_up_by_epoch(runs: Path) -> None:
    # batch 8 and batch 16 evaluate at different steps but the same epochs; b is live and one epoch in
    a = write_run(
        runs,
        "20250101-100000-a",
        config(runs, train={"per_device_train_batch_size": 8}),
        [run_started(), *steps(30), evaluated(1, 10, 0.6), evaluated(2, 20, 0.5), evaluated(3, 30, 0.45)],
    )
    b = write_run(
        runs,
        "20250101-110000-b",
        config(runs, train={"per_device_train_batch_size": 16}),
        [run_started(), *steps(5), evaluated(1, 5, 0.55)],
        status=None,
    )
    c = loaded(a, b)
    assert c.eval_key == "epoch"
    assert [row.label for row in c.eval_rows] == ["1", "2", "3"]
    assert [[row.value("eval_loss", i) for i in (0, 1)] for row in c.eval_rows] == [
        [0.6, 0.55],
        [0.5, None],
        [0.45, None],
    ]
    assert c.runs[1].status == "killed"  # events and no summary, and no process holds it


def test_a_live_run_compares_with_its_events_so_far(runs: Path) -> None:
    a = write_run(runs, "20250101-100000-a", config(runs), [run_started(), *steps(20), evaluated(1, 10, 0.5)])
    live = write_run(
        runs, "20250101-110000-live", config(runs, train={"learning_rate": 2e-2}), [run_started(), *steps(6)], None
    )
    with open(live.events_path, "a", encoding="utf-8") as fh:
        fh.write('{"type": "StepLogged", "step": 7, "total_')  # a line still being written
    with live.lock():  # what the process that trains it holds
        c = loaded(a, live)
    assert c.runs[1].status == "running"
    assert [step for step, _ in c.runs[1].step_losses] == [1, 2, 3, 4, 5, 6]
    assert [r.run for r in c.ranking] == [0, 1]


def test_a_resumed_run_counts_the_latest_evaluation_and_loss_of_each_step(runs: Path) -> None:
    events = [
        run_started(),
        *steps(10),
        evaluated(1, 10, 0.9),
        run_started(start_step=5),  # resumed from step 5: steps 6..10 and their evaluation again
        *steps(10)[5:],
        evaluated(1, 10, 0.7),
    ]
    run = load_compared_run(write_run(runs, "20250101-100000-resumed", config(runs), events))
    assert [(e.step, e.metrics["eval_loss"]) for e in run.evaluations] == [(10, 0.7)]
    assert [step for step, _ in run.step_losses] == list(range(1, 11))


def test_evaluations_closer_than_an_epoch_shows_line_up_by_step(runs: Path) -> None:
    close = [evaluated(0.001, 10, 0.9), evaluated(0.002, 20, 0.8)]  # both "0.00" at two decimals
    a = write_run(runs, "20250101-100000-a", config(runs, train={"learning_rate": 1e-3}), close)
    b = write_run(runs, "20250101-110000-b", config(runs), [evaluated(0.002, 20, 0.85)])
    c = loaded(a, b)
    assert c.eval_key == "step"
    assert [(row.step, row.value("eval_loss", 1)) for row in c.eval_rows] == [(10, None), (20, 0.85)]


def test_the_best_of_each_metric_follows_its_direction(runs: Path) -> None:
    a = write_run(
        runs,
        "20250101-100000-a",
        config(runs, train={"learning_rate": 3e-5}),
        [evaluated(1, 10, 0.40, 0.70, macro_f1=0.60), evaluated(2, 20, 0.45, 0.75, macro_f1=0.70)],
    )
    b = write_run(
        runs,
        "20250101-110000-b",
        config(runs, train={"learning_rate": 5e-5}),
        [evaluated(1, 10, 0.50, 0.80, macro_f1=0.65), evaluated(2, 20, float("nan"), 0.78, macro_f1=0.66)],
    )
    c = loaded(a, b)
    assert c.metrics == ["eval_loss", "accuracy", "macro_f1"]
    assert c.best == {"eval_loss": 0.40, "accuracy": 0.80, "macro_f1": 0.70}  # a NaN loss is never the best
    assert c.is_best("accuracy", 0.80) and not c.is_best("accuracy", 0.78)


def test_lower_perplexity_is_best(runs: Path) -> None:
    lm = {"task": "masked-lm", "data": {"label_field": None}}
    a = write_run(runs, "20250101-100000-a", config(runs, **lm), [evaluated(1, 10, 2.0, perplexity=7.4)])
    b = write_run(
        runs,
        "20250101-110000-b",
        config(runs, **lm, train={"learning_rate": 2e-2}),
        [evaluated(1, 10, 1.9, perplexity=6.7)],
    )
    c = loaded(a, b)
    assert c.best["perplexity"] == 6.7 and c.best["eval_loss"] == 1.9


# ---------------------------------------------------------------------------------------------------------
# legends


def test_legends_name_what_differs_with_short_aliases(runs: Path) -> None:
    a = write_run(runs, "20250101-100000-a", config(runs, train={"learning_rate": 3e-5}))
    b = write_run(runs, "20250101-110000-b", config(runs, train={"learning_rate": 5e-5}))
    assert loaded(a, b).legends == ["lr=3e-5", "lr=5e-5"]
    c = write_run(
        runs, "20250101-120000-c", config(runs, train={"learning_rate": 3e-5, "per_device_train_batch_size": 16})
    )
    assert loaded(a, b, c).legends == ["lr=3e-5 batch=8", "lr=5e-5 batch=8", "lr=3e-5 batch=16"]


def test_lora_against_full_fine_tuning_reads_lora_r_8_against_off(runs: Path) -> None:
    full = write_run(runs, "20250101-100000-full", config(runs))
    lora = write_run(runs, "20250101-110000-lora", config(runs, model={"lora": {"r": 8}}))
    c = loaded(full, lora)
    assert c.legends[0].startswith("lora.r=off ") and c.legends[1].startswith("lora.r=8 ")
    assert (c.diff[0].key, c.diff[0].values) == ("model.lora.r", ["off", 8])
    assert "model.lora" not in [row.key for row in c.diff]


def test_equal_legends_get_the_folder_name_and_long_ones_are_cut(runs: Path) -> None:
    a = write_run(runs, "20250101-100000-a", config(runs, train={"learning_rate": 3e-5}))
    b = write_run(runs, "20250101-110000-b", config(runs, train={"learning_rate": 3e-5}))
    c = write_run(runs, "20250101-120000-c", config(runs, train={"learning_rate": 5e-5}))
    assert loaded(a, b, c).legends == ["lr=3e-5 a", "lr=3e-5 b", "lr=5e-5"]
    many = {"learning_rate": 1e-4, "weight_decay": 0.1, "warmup_ratio": 0.06, "num_train_epochs": 5}
    d = write_run(runs, "20250101-130000-d", config(runs, train=many, data={"max_length": 64}))
    legends = loaded(a, d).legends
    assert all(len(legend) <= 30 for legend in legends)
    assert legends == ["lr=3e-5 epochs=2 wd=0 …", "lr=1e-4 epochs=5 wd=0.1 …"]  # whole settings, cut


def test_legends_too_long_for_every_setting_name_the_settings_that_tell_the_runs_apart(runs: Path) -> None:
    """Four runs of one model and data, unnamed: whole settings cut to the same text made the legends fall back
    to their folders' names ("lr=1e-4 … …ication-minilm #2"), which differ only in their time."""
    settings = [(1e-4, 3, 64, 32), (1e-4, 2, 256, None), (1e-4, 2, 64, 32), (3e-4, 2, 64, 32)]
    folders = [
        write_run(
            runs,
            f"20250101-1{i}0000-classification-minilm",
            config(
                runs, train={"learning_rate": lr, "num_train_epochs": epochs}, data={"train_size": n, "eval_size": m}
            ),
        )
        for i, (lr, epochs, n, m) in enumerate(settings)
    ]
    assert loaded(*folders).legends == [
        "lr=1e-4 epochs=3 n_train=64 …",
        "lr=1e-4 epochs=2 n_train=256 …",
        "lr=1e-4 epochs=2 n_train=64 …",
        "lr=3e-4 epochs=2 n_train=64 …",
    ]


def test_a_setting_whose_shown_text_is_the_same_does_not_tell_runs_apart(runs: Path) -> None:
    """Two data files of one name in two folders read the same in a legend (its last part): the legend names the
    runs by what tells them apart as shown, and says that more differs."""
    many = {"weight_decay": 0.1, "warmup_ratio": 0.06, "num_train_epochs": 5}
    a = write_run(
        runs,
        "20250101-100000-a",
        config(runs, train={"learning_rate": 3e-5, **many}, data={"source": "data/v1/train.jsonl"}),
    )
    b = write_run(
        runs, "20250101-110000-b", config(runs, train={"learning_rate": 1e-4}, data={"source": "data/v2/train.jsonl"})
    )
    legends = loaded(a, b).legends
    assert legends[0].startswith("lr=3e-5 ") and legends[1].startswith("lr=1e-4 ")
    assert all("data=" not in legend and legend.endswith(" …") and len(legend) <= 30 for legend in legends)


# ---------------------------------------------------------------------------------------------------------
# ranking and warnings


def test_ranking_puts_the_best_run_first_and_a_run_without_evaluations_last(runs: Path) -> None:
    acc = {"metric_for_best_model": "accuracy"}
    none = write_run(runs, "20250101-090000-none", config(runs, train={**acc, "learning_rate": 1e-4}), [run_started()])
    low = write_run(
        runs,
        "20250101-100000-low",
        config(runs, train={**acc, "learning_rate": 3e-5}),
        [evaluated(1, 10, 0.5, 0.70), evaluated(2, 20, 0.6, 0.72)],
    )
    high = write_run(
        runs,
        "20250101-110000-high",
        config(runs, train={**acc, "learning_rate": 5e-5}),
        [evaluated(1, 10, 0.4, 0.81), evaluated(2, 20, 0.3, 0.79)],
    )
    c = loaded(none, low, high)
    assert (c.ranking_metric, c.ranking_greater_is_better) == ("accuracy", True)
    assert [(r.run, r.value, r.step) for r in c.ranking] == [(2, 0.81, 10), (1, 0.72, 20), (0, None, None)]
    assert c.best_run == 2
    assert c.best_values == [("train.learning_rate", 5e-5)]
    assert c.runs[0].eval_curve == [] and c.runs[2].eval_curve == [(10, 0.81), (20, 0.79)]


def test_no_run_with_an_evaluation_has_no_best_run(runs: Path) -> None:
    a = write_run(runs, "20250101-100000-a", config(runs), [run_started(), *steps(4)], status=None)
    b = write_run(runs, "20250101-110000-b", config(runs, train={"learning_rate": 2e-2}), [], status=None)
    c = loaded(a, b)
    assert c.best_run is None and c.best_values == [] and c.eval_rows == []
    assert c.runs[1].status == "not started"
    out = io.StringIO()
    for part in render(c):
        Console(file=out, width=100).print(part)
    assert "no run has an evaluation yet" in out.getvalue()
    assert "no run has an evaluation of eval loss yet: nothing to rank" in out.getvalue()


def test_different_tasks_and_data_compare_with_warnings(runs: Path) -> None:
    a = write_run(runs, "20250101-100000-a", config(runs), [evaluated(1, 10, 0.5, 0.7)])
    b = write_run(
        runs,
        "20250101-110000-b",
        config(runs, task="masked-lm", data={"source": "movies-sample", "label_field": None}),
        [evaluated(1, 10, 2.0, perplexity=7.0)],
    )
    c = loaded(a, b)
    assert len(c.warnings) == 2
    assert c.warnings[0].startswith("the runs have different tasks (classification: ")
    assert "masked-lm: " in c.warnings[0]
    assert c.warnings[1].startswith("the runs train on different data.source (data/reviews.jsonl: ")
    assert [row.key for row in c.diff][:2] == ["task", "data.source"]
    # a classifier's eval loss of 0.5 is no better than a masked LM's 2.0: no ranking, no best run
    assert (c.ranking, c.best_run) == ([], None)
    assert (
        c.to_json()["ranking"]["not_ranked"] == "not ranked: the runs have different tasks (classification, masked-lm)"
    )
    out = io.StringIO()
    for part in render(c):
        Console(file=out, width=100).print(part)
    assert "not ranked: the runs have different tasks (classification, masked-lm)" in out.getvalue()
    assert "best by" not in out.getvalue()


# ---------------------------------------------------------------------------------------------------------
# drawing


def test_sparkline_shares_its_scale_and_leaves_a_shorter_run_blank() -> None:
    falling = [(step, float(8 - step)) for step in range(1, 9)]
    assert sparkline(falling, 8, 8, 0.0, 7.0) == "█▇▆▅▄▃▂▁"
    assert sparkline(falling[:4], 8, 8, 0.0, 7.0) == "█▇▆▅    "  # a run half as long: half as wide
    assert sparkline(falling, 4, 8, 0.0, 7.0) == "▇▅▃▁"  # two steps a cell: their mean (6.5, 4.5, 2.5, 0.5)
    # steps 1, 3, 5, 7 of 8 over 15 cells: a cell without a point repeats the one before, up to step 7
    assert sparkline(falling[::2], 15, 8, 0.0, 7.0) == "████▆▆▆▆▄▄▄▄▂  "
    assert sparkline([(5, float("nan"))], 4, 10, 0.0, 1.0) == "    "


def test_render_shows_the_best_value_of_each_metric_in_bold_green(runs: Path) -> None:
    a = write_run(runs, "20250101-100000-a", config(runs), [*steps(20), evaluated(1, 10, 0.4321, 0.7)])
    b = write_run(
        runs, "20250101-110000-b", config(runs, train={"learning_rate": 5e-5}), [*steps(10), evaluated(1, 5, 0.5, 0.8)]
    )
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system="standard", width=200)
    for part in render(loaded(a, b)):
        console.print(part)
    text = out.getvalue()
    bold_green = re.findall(r"\x1b\[1;32m *([0-9.]+)\x1b\[0m", text)
    assert bold_green == ["0.4321", "0.8000"]


# ---------------------------------------------------------------------------------------------------------
# tunebench compare


def two_runs(runs: Path) -> tuple[RunDir, RunDir]:
    a = write_run(
        runs,
        "20250101-100000-base",
        config(runs, train={"learning_rate": 3e-5}),
        [run_started(), *steps(20), evaluated(1, 10, 0.6, 0.7), evaluated(2, 20, 0.5, 0.75)],
    )
    b = write_run(
        runs,
        "20250101-110000-clone",
        config(runs, train={"learning_rate": 5e-5}, output={"parent": "20250101-100000-base"}),
        [run_started(), *steps(10), evaluated(1, 10, 0.55, 0.8)],
    )
    return a, b


def test_compare_json_prints_the_comparison_only(runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    two_runs(runs)
    assert cli.main(["compare", "20250101-10", "20250101-11", "--runs-dir", str(runs), "--json"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert captured.err == ""
    assert set(data) == {"format", "runs", "diff", "metrics", "eval_key", "evaluations", "ranking", "warnings"}
    assert data["format"] == 1
    base, clone = data["runs"]
    assert (base["name"], base["legend"], base["status"]) == ("20250101-100000-base", "lr=3e-5", "finished")
    assert clone["parent"] == "20250101-100000-base" and base["parent"] is None
    assert (clone["metric"], clone["greater_is_better"]) == ("eval_loss", False)
    assert clone["best"] == {"value": 0.55, "step": 10, "epoch": 1.0}
    assert clone["curves"]["train_loss"][0] == [1, pytest.approx(0.92)] and len(base["curves"]["train_loss"]) == 20
    assert clone["curves"]["eval"] == [[10, 0.55]]
    assert data["diff"] == [{"key": "train.learning_rate", "values": [3e-5, 5e-5]}]
    assert data["metrics"] == [
        {"name": "eval_loss", "greater_is_better": False, "best": 0.5},
        {"name": "accuracy", "greater_is_better": True, "best": 0.8},
    ]
    assert data["eval_key"] == "epoch"
    assert [row["label"] for row in data["evaluations"]] == ["1", "2"]
    assert data["evaluations"][1]["runs"][1] is None
    first = {"epoch": 1.0, "step": 10, "metrics": {"eval_loss": 0.55, "accuracy": 0.8}}
    assert data["evaluations"][0]["runs"][1] == first
    ranking = data["ranking"]
    assert (ranking["metric"], ranking["greater_is_better"]) == ("eval_loss", False)
    assert [r["name"] for r in ranking["runs"]] == ["20250101-100000-base", "20250101-110000-clone"]
    assert ranking["best"] == {
        "run": 0,
        "name": "20250101-100000-base",
        "legend": "lr=3e-5",
        "values": {"train.learning_rate": 3e-5},
    }
    assert data["warnings"] == []


def test_compare_prints_the_diff_evaluations_curves_and_ranking(
    runs: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    a, _ = two_runs(runs)
    assert cli.main(["compare", str(a.path), "20250101-110000-clone", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    lines = [" ".join(line.split()) for line in out.splitlines()]
    assert "train.learning_rate 3e-5 5e-5" in lines
    assert "eval loss (lower) 1 0.6000 0.5500" in lines and "2 0.5000 -" in lines
    assert "accuracy (higher) 1 0.7000 0.8000" in lines
    assert any(line.startswith("lr=5e-5 20250101-110000-clone finished 1 lr=3e-5") for line in lines)  # its parent
    curves = [line for line in lines if line.startswith("lr=3e-5 █")]
    assert curves and "0.9600 0.2000 @20 0.2000" in curves[0]
    assert (  # one line: piped, nothing is folded at 80 columns
        "best by eval loss (lower is better): lr=3e-5 (20250101-100000-base), 0.5000 at epoch 2, step 20; "
        "its settings: train.learning_rate=3e-5" in lines
    )
    assert "1 lr=3e-5 0.5000 epoch 2, step 20" in lines and "2 lr=5e-5 0.5500 epoch 1, step 10" in lines


def test_compare_warns_on_stderr_for_runs_of_different_data(runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_run(runs, "20250101-100000-a", config(runs), [evaluated(1, 10, 0.5)])
    write_run(runs, "20250101-110000-b", config(runs, data={"source": "reviews-sample"}), [evaluated(1, 10, 0.4)])
    assert cli.main(["compare", "20250101-10", "20250101-11", "--runs-dir", str(runs)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "tunebench: warning: the runs train on different data.source (data/reviews.jsonl: data=reviews.jsonl; "
        "reviews-sample: data=reviews-sample); their metrics may not be comparable"
    ]


def test_a_sweeps_id_compares_its_runs(runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, lr in (("20250101-100000-a", 1e-5), ("20250101-110000-b", 3e-5)):
        cfg = config(runs, train={"learning_rate": lr})
        cfg.output.sweep = "4f2a01"
        write_run(runs, name, cfg, [run_started(), evaluated(1, 4, 0.5)])
        (runs / name / "summary.json").write_text(json.dumps({"status": "finished", "sweep": "4f2a01"}))
    write_run(runs, "20250101-120000-other", config(runs))
    assert cli.main(["compare", "4f2a01", "--runs-dir", str(runs), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in shown["runs"]] == ["20250101-100000-a", "20250101-110000-b"]
    shutil.rmtree(runs / "20250101-110000-b")  # a sweep of one run so far: said so, not "give two runs (got 1)"
    assert cli.main(["compare", "4f2a01", "--runs-dir", str(runs)]) == 2
    assert capsys.readouterr().err == (
        f"tunebench: error: compare: sweep 4f2a01 has one run in {runs}/ so far (20250101-100000-a); compare needs "
        "two or more\n"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compare", "20250101-100000-base"], "compare: give two runs or more, or a sweep's id (got 1); tunebench"),
        (["compare"], "compare: give two runs or more, or a sweep's id (got 0)"),
        (["compare", "20250101-10", "nope"], "nope: no run by that path, name or prefix in "),
        (["compare", "20250101-10", "20250101-100000-base"], "20250101-100000-base: the same run as 20250101-10"),
        (["compare", "2025", "20250101-10"], "2025 matches 2 runs"),
    ],
)
def test_bad_compare_arguments_exit_2_with_one_line(
    runs: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    two_runs(runs)
    assert cli.main([*argv, "--runs-dir", str(runs)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith(f"tunebench: error: {message}")


def test_a_run_written_by_a_newer_tunebench_exits_2(runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, _ = two_runs(runs)
    write_run(runs, "20250101-120000-new", config(runs), [run_started(format=99)])
    assert cli.main(["compare", str(a.path), "20250101-12", "--runs-dir", str(runs)]) == 2
    assert "written by a newer Tunebench (events format 99" in capsys.readouterr().err


def test_a_compared_run_holds_its_task_data_and_metric(runs: Path) -> None:
    a, _ = two_runs(runs)
    run = load_compared_run(a)
    assert isinstance(run, ComparedRun)
    assert (run.name, run.task, run.data_source, run.metric, run.greater_is_better) == (
        "20250101-100000-base",
        "classification",
        "data/reviews.jsonl",
        "eval_loss",
        False,
    )


@pytest.mark.parametrize(
    ("value", "full", "compact"),
    [
        (0.0003, "3e-4", "3e-4"),
        (2.5e-5, "2.5e-5", "2.5e-5"),
        (0.1, "0.1", "0.1"),
        (0.30000000000000004, "0.30000000000000004", "0.3"),
        (16, "16", "16"),
        (True, "true", "true"),
        (None, "null", "null"),
        (["a", "b"], "a, b", "a,b"),
    ],
)
def test_a_value_reads_in_the_shorter_of_its_plain_and_scientific_forms(value: Any, full: str, compact: str) -> None:
    from engine.compare import format_value

    assert (format_value(value), format_value(value, compact=True)) == (full, compact)
