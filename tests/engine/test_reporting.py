"""output.report_to: TensorBoard files hold what events.jsonl holds, in both engines; a missing extra and wandb
without credentials are handled without a prompt or a traceback."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from engine import cli, reporting
from engine.events import Evaluated, Event, LogMessage, StepLogged
from engine.runner import Runner
from tests.conftest import tiny_config, write_jsonl


def run(cfg: Any) -> tuple[Any, list[Event]]:
    events: list[Event] = []
    result = Runner(cfg, subscribers=[events.append]).run()
    assert result.status == "finished", result.error
    return result, events


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return {tag: [(s.step, s.value) for s in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def lm_rows(path: Path) -> Path:
    return write_jsonl(path, [{"text": f"the cafe was lovely today, visit {i}"} for i in range(48)])


@pytest.mark.parametrize("engine", ["loop", "sft"])
def test_tensorboard_files_hold_the_runs_scalars(engine: str, tmp_path: Path, tiny_bert_dir: Path) -> None:
    cfg = tiny_config(
        tiny_bert_dir,
        lm_rows(tmp_path / "rows.jsonl"),
        tmp_path / "runs",
        {"task": "masked-lm", "engine": engine, "data.label_field": None, "output.report_to": ["tensorboard"]},
    )
    result, events = run(cfg)
    scalars = read_scalars(result.run_dir)
    # both engines write the same names
    assert {"train/loss", "train/learning_rate", "train/samples_per_second", "train/epoch_loss", "eval/loss"} <= set(
        scalars
    )
    logged = [e for e in events if isinstance(e, StepLogged)]
    assert [step for step, _ in scalars["train/loss"]] == [e.step for e in logged]
    assert [v for _, v in scalars["train/loss"]] == pytest.approx([e.loss for e in logged], rel=1e-6)
    evaluated = [e for e in events if isinstance(e, Evaluated)]
    assert scalars["eval/loss"] == [(e.step, pytest.approx(e.eval_loss, rel=1e-6)) for e in evaluated]
    assert scalars["eval/perplexity"] == [(e.step, pytest.approx(e.perplexity, rel=1e-6)) for e in evaluated]


def test_a_missing_extra_exits_2_with_the_pip_command(
    tmp_path: Path, tiny_bert_dir: Path, sentiment_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    cfg = tiny_config(tiny_bert_dir, sentiment_file, tmp_path / "runs", {"output.report_to": ["tensorboard"]})
    path = tmp_path / "cfg.yaml"
    path.write_text(cfg.to_yaml(), encoding="utf-8")
    assert cli.main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "tunebench: error: output.report_to: tensorboard is not installed; pip install 'tunebench[tensorboard]'"
    ]
    assert not list((tmp_path / "runs").glob("*"))  # nothing half-made is left


def test_wandb_without_credentials_logs_offline_and_says_so(
    tmp_path: Path, tiny_bert_dir: Path, sentiment_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in wandb module records what the tracker asks of it (the real one is not a test dependency)."""
    calls: dict[str, Any] = {"logged": []}

    class FakeRun:
        def log(self, values: dict[str, Any], step: int | None = None, **_: Any) -> None:
            calls["logged"].append((step, values))

        def finish(self) -> None:
            calls["finished"] = True

    def init(**kwargs: Any) -> FakeRun:
        calls["init"] = kwargs
        return FakeRun()

    fake = types.ModuleType("wandb")
    fake.init = init  # type: ignore[attr-defined]
    fake.config = types.SimpleNamespace(update=lambda values, **_: calls.update(config=values))  # type: ignore[attr-defined]
    fake.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    assert not reporting.wandb_has_credentials()
    cfg = tiny_config(tiny_bert_dir, sentiment_file, tmp_path / "runs", {"output.report_to": ["wandb"]})
    result, events = run(cfg)
    assert calls["init"]["mode"] == "offline" and calls["init"]["dir"] == str(result.run_dir)
    assert calls["config"]["train.learning_rate"] == cfg.train.learning_rate
    warnings = [e.message for e in events if isinstance(e, LogMessage) and e.message.startswith("wandb:")]
    assert warnings and "logging offline" in warnings[0]
    steps = [e.step for e in events if isinstance(e, StepLogged)]
    assert [step for step, values in calls["logged"] if "train/loss" in values] == steps
    assert calls.get("finished")
    assert json.loads((result.run_dir / "summary.json").read_text())["status"] == "finished"


def test_a_tracker_that_fails_is_dropped_with_one_warning_and_the_run_goes_on(
    tmp_path: Path, tiny_bert_dir: Path, sentiment_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from accelerate.tracking import TensorBoardTracker

    def broken(self: Any) -> None:
        raise RuntimeError("protobuf version clash")

    monkeypatch.setattr(TensorBoardTracker, "start", broken)
    cfg = tiny_config(tiny_bert_dir, sentiment_file, tmp_path / "runs", {"output.report_to": ["tensorboard"]})
    _, events = run(cfg)
    said = [e.message for e in events if isinstance(e, LogMessage) and "report_to" in e.message]
    assert said == [
        "report_to: tensorboard failed to start (RuntimeError: protobuf version clash); no more is sent to it, "
        "events.jsonl has everything"
    ]


def test_a_resumed_run_replaces_what_its_earlier_session_logged_after_the_checkpoint(tmp_path: Path) -> None:
    from engine.config import from_dict
    from engine.events import RunStarted
    from engine.runs import RunDir

    cfg = from_dict({"output": {"report_to": ["tensorboard"]}})
    run_dir = RunDir(tmp_path / "run")
    run_dir.path.mkdir()

    def session(start: int, last: int, loss: float) -> None:
        reporter = reporting.Reporter(cfg, run_dir, lambda event: None)
        started = RunStarted(str(run_dir.path), "run", "classification", "loop", "m", "cpu", "fp32", 1, 1, 1, 1, 10, 1)
        reporter.see(dataclasses.replace(started, start_step=start))
        for step in range(start + 1, last + 1):
            reporter.see(StepLogged(step, 10, step / 10, loss, 1e-3, 1.0, 1.0, 1.0))
        reporter.close()

    session(0, 8, loss=2.0)  # killed after step 8; its checkpoint was at step 5
    session(5, 10, loss=1.0)
    assert read_scalars(run_dir.path)["train/loss"] == [(s, 2.0) for s in range(1, 6)] + [
        (s, 1.0) for s in range(6, 11)
    ]
