"""Evaluations every N steps, the best model at the end and the best checkpoint under rotation, in both engines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.checkpoint import checkpoint_name, complete_checkpoints, write_checkpoint
from engine.events import CheckpointSaved, EpochEnded, Evaluated, Event, RunFinished
from engine.runner import Runner
from tests.conftest import tiny_config, write_jsonl


def masked_lm_config(tmp_path: Path, model_dir: Path, engine: str, overrides: dict[str, Any]) -> Any:
    """48 rows, a quarter held out: 36 to train, 5 steps of 8 per epoch."""
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"text": f"the cafe was lovely, visit {i}"} for i in range(48)])
    base = {"task": "masked-lm", "engine": engine, "data.label_field": None}
    return tiny_config(model_dir, rows, tmp_path / "runs", {**base, **overrides})


def run(cfg: Any) -> tuple[Any, list[Event]]:
    events: list[Event] = []
    result = Runner(cfg, subscribers=[events.append]).run()
    assert result.status == "finished", result.error
    return result, events


@pytest.mark.parametrize("engine", ["loop", "sft"])
def test_eval_every_n_steps_mid_epoch_and_at_the_end(engine: str, tmp_path: Path, tiny_bert_dir: Path) -> None:
    """eval_steps 3 over 2 epochs of 5 steps: at steps 3, 6 and 9 inside epochs, and at the last step, after its
    epoch's end; not at the first epoch's end (step 5)."""
    cfg = masked_lm_config(tmp_path, tiny_bert_dir, engine, {"train.eval_strategy": "steps", "train.eval_steps": 3})
    _, events = run(cfg)
    evaluated = [e for e in events if isinstance(e, Evaluated)]
    assert [(e.step, e.epoch) for e in evaluated] == [(3, 0.6), (6, 1.2), (9, 1.8), (10, 2)]
    last_epoch_end = next(i for i, e in enumerate(events) if isinstance(e, EpochEnded) and e.step == 10)
    assert events.index(evaluated[-1]) > last_epoch_end


@pytest.mark.parametrize("engine", ["loop", "sft"])
def test_eval_strategy_no_evaluates_nothing(engine: str, tmp_path: Path, tiny_bert_dir: Path) -> None:
    cfg = masked_lm_config(tmp_path, tiny_bert_dir, engine, {"train.eval_strategy": "no"})
    _, events = run(cfg)
    assert not [e for e in events if isinstance(e, Evaluated)]
    assert len([e for e in events if isinstance(e, EpochEnded)]) == 2


#: Eval losses, one per epoch: the best is the second.
HISTORY = [0.9, 0.4, 0.6, 0.7]


def scripted(values: list[float]) -> Iterator[float]:
    yield from values
    raise AssertionError("more evaluations than scripted")


@pytest.fixture
def scripted_evaluations(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both engines' evaluations give HISTORY's losses in turn, whatever the model."""
    from transformers import Trainer
    from transformers.trainer_utils import EvalLoopOutput

    import engine.loop

    loop_values = scripted(HISTORY)
    monkeypatch.setattr(
        engine.loop,
        "evaluate",
        lambda s, task, seed: {"eval_loss": next(loop_values), "perplexity": 1.0, "accuracy": 0.0},
    )
    trainer_values = scripted(HISTORY)

    def evaluation_loop(self: Any, *args: Any, **kwargs: Any) -> Any:
        self.model.eval()  # as the Trainer's own loop leaves it; the next training step sets train mode again
        return EvalLoopOutput(None, None, {"eval_loss": next(trainer_values)}, 1)

    monkeypatch.setattr(Trainer, "evaluation_loop", evaluation_loop)


def weights(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def same_weights(a: dict[str, Any], b: dict[str, Any]) -> bool:
    import torch

    shared = a.keys() & b.keys()
    return bool(shared) and all(torch.equal(a[k], b[k]) for k in shared)


@pytest.mark.usefixtures("scripted_evaluations")
@pytest.mark.parametrize("engine", ["loop", "sft"])
def test_load_best_model_at_end_takes_the_best_evaluation(engine: str, tmp_path: Path, tiny_bert_dir: Path) -> None:
    """Four epochs whose eval losses are HISTORY: model/ holds step 10's weights (the second evaluation), whose
    checkpoint survives a rotation that keeps one (the newest goes when the run ends, as in transformers), and
    the summary and the end line say so."""
    overrides = {
        "train.num_train_epochs": 4,
        "train.load_best_model_at_end": True,
        "train.save_strategy": "epoch",
        "train.save_total_limit": 1,
    }
    result, events = run(masked_lm_config(tmp_path, tiny_bert_dir, engine, overrides))
    assert [e.step for e in events if isinstance(e, Evaluated)] == [5, 10, 15, 20]
    checkpoints = result.run_dir / "checkpoints"
    assert [p.name for p in complete_checkpoints(checkpoints)] == ["checkpoint-10"]
    model = weights(result.run_dir / "model")
    assert same_weights(model, weights(checkpoints / "checkpoint-10"))
    last = next(e for e in events if isinstance(e, EpochEnded) and e.step == 20)
    assert any(isinstance(e, CheckpointSaved) and e.step == 20 for e in events[events.index(last) :])
    finished = next(e for e in events if isinstance(e, RunFinished))
    assert finished.note == "model/ holds step 10, the best eval_loss (0.4000)"
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["best_model"] == {"metric": "eval_loss", "value": 0.4, "step": 10, "in_model_dir": True}
    if engine == "sft":  # what a resumed Trainer reads: the kept checkpoint, not the folder it was staged in
        state = json.loads((checkpoints / "checkpoint-10" / "trainer_state.json").read_text())
        assert state["best_model_checkpoint"] == str(checkpoints / "checkpoint-10")


@pytest.mark.usefixtures("scripted_evaluations")
def test_without_load_best_model_the_model_is_the_last(tmp_path: Path, tiny_bert_dir: Path) -> None:
    overrides = {"train.num_train_epochs": 4, "train.save_strategy": "epoch", "train.save_total_limit": 2}
    result, events = run(masked_lm_config(tmp_path, tiny_bert_dir, "loop", overrides))
    checkpoints = result.run_dir / "checkpoints"
    assert [p.name for p in complete_checkpoints(checkpoints)] == ["checkpoint-10", "checkpoint-20"]
    assert same_weights(weights(result.run_dir / "model"), weights(checkpoints / "checkpoint-20"))
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["best_model"] == {"metric": "eval_loss", "value": 0.4, "step": 10, "in_model_dir": False}
    assert next(e for e in events if isinstance(e, RunFinished)).note == ""


@pytest.mark.parametrize("keep", [1, 2])
def test_rotation_never_deletes_the_best_checkpoint(keep: int, tmp_path: Path) -> None:
    """transformers' rule: the newest and the best stay, and no more than ``keep`` unless both are needed."""
    folder = tmp_path / "checkpoints"
    best = folder / checkpoint_name(2)
    for step in range(1, 6):
        write_checkpoint(folder, step, lambda _: None, keep=keep, best=best if step >= 2 else None)
    assert [p.name for p in complete_checkpoints(folder)] == ["checkpoint-2", "checkpoint-5"]


def test_rotation_without_a_best_keeps_the_newest(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    for step in range(1, 6):
        write_checkpoint(folder, step, lambda _: None, keep=2)
    assert [p.name for p in complete_checkpoints(folder)] == ["checkpoint-4", "checkpoint-5"]


@pytest.mark.parametrize(
    "metric, headline",
    [(None, ("accuracy", 0.8)), ("macro_f1", ("macro_f1", 0.6)), ("eval_loss", ("accuracy", 0.8))],
)
def test_the_runs_headline_score_is_the_metric_its_config_names(
    metric: str | None, headline: tuple[str, float]
) -> None:
    """The runs list, sweep rows and summary.json show a classifier's best accuracy, unless the config picks
    another train.metric_for_best_model: then that metric's best, as early stopping and compare rank by."""
    from engine.config import from_dict
    from engine.runner import _Summary

    train = {} if metric is None else {"metric_for_best_model": metric}
    summary = _Summary(from_dict({"task": "classification", "train": train}))
    for step, loss, acc, f1 in ((5, 0.5, 0.7, 0.6), (10, 0.6, 0.8, 0.5)):
        summary.see(Evaluated(epoch=step / 5, step=step, eval_loss=loss, accuracy=acc, macro_f1=f1))
    assert summary.best() == headline
    assert (summary.as_dict("finished")["best_metric"], summary.as_dict("finished")["best_value"]) == headline
