"""Early stopping: the loop engine's rule is transformers' EarlyStoppingCallback's, and both engines end a run
at the same evaluation with the same line."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from engine import cli
from engine.early_stopping import EarlyStopping
from engine.events import Evaluated, Event, LogMessage, RunFinished
from engine.faults import ENV
from engine.runner import Runner
from tests.conftest import tiny_config, write_jsonl

HISTORIES = [
    # (metric values in order, greater_is_better, patience, threshold)
    ([0.9, 0.8, 0.85, 0.84, 0.79, 0.80, 0.81], False, 2, 0.0),
    ([0.9, 0.8, 0.85, 0.84, 0.79, 0.80, 0.81], False, 3, 0.0),
    ([0.50, 0.55, 0.56, 0.57, 0.52, 0.60, 0.58, 0.59], True, 2, 0.02),
    ([1.0, 1.0, 1.0, 1.0], False, 2, 0.0),
    ([0.3, 0.2, 0.1, 0.05], False, 1, 0.0),
]


def hf_stop_index(values: list[float], greater: bool, patience: int, threshold: float) -> int | None:
    """Where transformers' callback stops, driven as Trainer drives it: on_evaluate, then the best metric moves."""
    import numpy as np
    from transformers import EarlyStoppingCallback, TrainerControl, TrainerState, TrainingArguments

    args = TrainingArguments(
        output_dir="unused", metric_for_best_model="eval_loss", greater_is_better=greater, eval_strategy="epoch"
    )
    state, control = TrainerState(), TrainerControl()
    callback = EarlyStoppingCallback(patience, threshold)
    for i, value in enumerate(values):
        callback.on_evaluate(args, state, control, metrics={"eval_loss": value})
        operator = np.greater if greater else np.less  # Trainer._determine_best_metric
        if state.best_metric is None or operator(value, state.best_metric):
            state.best_metric = value
        if control.should_training_stop:
            return i
    return None


@pytest.mark.parametrize(("values", "greater", "patience", "threshold"), HISTORIES)
def test_the_loop_rule_stops_where_transformers_callback_does(
    values: list[float], greater: bool, patience: int, threshold: float
) -> None:
    rule = EarlyStopping("loss", greater, patience, threshold)
    ours = next((i for i, v in enumerate(values) if rule.see({"eval_loss": v}, step=i)), None)
    assert ours == hf_stop_index(values, greater, patience, threshold)


def run(cfg: Any) -> tuple[Any, list[Event]]:
    events: list[Event] = []
    result = Runner(cfg, subscribers=[events.append]).run()
    assert result.status == "finished", result.error
    return result, events


@pytest.mark.parametrize("save", ["no", "epoch"])
@pytest.mark.parametrize("engine", ["loop", "sft"])
def test_both_engines_stop_at_the_same_evaluation(
    engine: str, save: str, tmp_path: Path, tiny_bert_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No evaluation beats the first by 100: with patience 1 the run ends after its second of four epochs (with
    checkpoints too: the Trainer then tracks its best checkpoint, which the SFT engine's staging must survive)."""
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"text": f"the cafe was lovely, visit {i}"} for i in range(48)])
    cfg = tiny_config(
        tiny_bert_dir,
        rows,
        tmp_path / "runs",
        {
            "task": "masked-lm",
            "engine": engine,
            "data.label_field": None,
            "train.num_train_epochs": 4,
            "train.early_stopping_patience": 1,
            "train.early_stopping_threshold": 100.0,
            "train.save_strategy": save,
            "train.save_total_limit": 1,
        },
    )
    result, events = run(cfg)
    evaluated = [e for e in events if isinstance(e, Evaluated)]
    assert [e.epoch for e in evaluated] == [1, 2]
    finished = next(e for e in events if isinstance(e, RunFinished))
    first = evaluated[0]
    assert finished.note == (
        f"stopped early at step {evaluated[1].step}: eval_loss did not improve by more than 100 for 1 evaluation "
        "in a row "
        f"(best {min(first.eval_loss, evaluated[1].eval_loss):.4f} at step "
        f"{first.step if first.eval_loss <= evaluated[1].eval_loss else evaluated[1].step})"
    )
    assert json.loads((result.run_dir / "summary.json").read_text())["note"] == finished.note
    assert cli.main(["runs", str(result.run_dir)]) == 0  # the note says what model/ holds: it stays in sight
    assert finished.note in capsys.readouterr().out.splitlines()
    shown = [e.message for e in events if isinstance(e, LogMessage)]
    assert not any("EarlyStoppingCallback" in m for m in shown), "transformers' advice is not Tunebench's"


def _train_until_killed(cfg: Any, point: str) -> None:
    os.environ[ENV] = point
    Runner(cfg).run()
    os._exit(0)  # not killed: the test says the point was never reached


def test_a_run_killed_after_an_epochs_evaluation_resumes_to_the_same_early_stop(
    tmp_path: Path, tiny_bert_dir: Path
) -> None:
    """A checkpoint at an epoch's last step is written before that epoch's evaluation, which the resumed run
    makes again: it was counted twice, and the run stopped one evaluation early, its note saying "for 1"."""
    import torch

    rows = write_jsonl(tmp_path / "rows.jsonl", [{"text": f"the cafe was lovely, visit {i}"} for i in range(48)])
    overrides = {
        "task": "masked-lm",
        "data.label_field": None,
        "train.num_train_epochs": 5,
        "train.early_stopping_patience": 2,
        "train.early_stopping_threshold": 100.0,  # no evaluation improves by that much: it stops after epoch 3
        "train.torch_threads": 1,
    }
    _, events = run(tiny_config(tiny_bert_dir, rows, tmp_path / "straight", overrides))
    per_epoch = next(e for e in events if isinstance(e, Evaluated)).step
    want = next(e for e in events if isinstance(e, RunFinished)).note
    assert f"stopped early at step {3 * per_epoch}: " in want

    cfg = tiny_config(
        tiny_bert_dir,
        rows,
        tmp_path / "runs",
        {**overrides, "train.save_strategy": "steps", "train.save_steps": per_epoch},
    )
    child = multiprocessing.get_context("fork").Process(
        target=_train_until_killed, args=(cfg, f"step@{2 * per_epoch + 1}")
    )
    child.start()
    child.join(timeout=300)
    assert child.exitcode == -signal.SIGKILL, f"never reached step {2 * per_epoch + 1} (exit code {child.exitcode})"
    (killed,) = (tmp_path / "runs").iterdir()
    threads = torch.get_num_threads()
    resumed: list[Event] = []
    result = Runner.from_run_dir(killed, subscribers=[resumed.append]).run()
    torch.set_num_threads(threads)
    assert result.status == "finished", result.error
    assert next(e for e in resumed if isinstance(e, RunFinished)).note == want


@pytest.mark.parametrize("engine", ["loop", "sft"])
def test_a_run_stopped_early_between_epochs_ends_no_epoch(engine: str, tmp_path: Path, tiny_bert_dir: Path) -> None:
    """The SFT engine wrote an EpochEnded for the part of the epoch run before early stopping ended it, which
    the epoch table showed as a whole epoch; the loop engine writes none."""
    from engine.events import EpochEnded

    rows = write_jsonl(tmp_path / "rows.jsonl", [{"text": f"the cafe was lovely, visit {i}"} for i in range(48)])
    overrides = {
        "task": "masked-lm",
        "engine": engine,
        "data.label_field": None,
        "train.num_train_epochs": 2,
        "train.eval_strategy": "steps",
        "train.eval_steps": 2,
        "train.early_stopping_patience": 1,
        "train.early_stopping_threshold": 100.0,
    }
    _, events = run(tiny_config(tiny_bert_dir, rows, tmp_path / "runs", overrides))
    evaluated = [e.step for e in events if isinstance(e, Evaluated)]
    assert evaluated[:2] == [2, 4]
    assert not [e for e in events if isinstance(e, EpochEnded)], "4 steps of the first epoch are no epoch"
