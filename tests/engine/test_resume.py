"""Checkpoints and resume: a run killed with SIGKILL and resumed ends exactly where an uninterrupted one does."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.checkpoint import MARKER, complete_checkpoints
from engine.errors import UserError
from engine.events import CheckpointSaved, EpochEnded, Evaluated, RunFinished, RunStarted, StepLogged
from engine.runner import Runner
from engine.runs import read_events
from tests.conftest import sentiment_rows, write_jsonl

REPO = Path(__file__).resolve().parents[2]

# Trains the config in argv[1] under the runs folder argv[2]. With argv[3] = N > 0 it freezes the worker at
# the StepLogged event of step N, says so on stdout, and waits there to be killed: the kill then lands at a
# known step, with no sleeps and no race.
CHILD = """
import sys, threading
from engine.config import load_config
from engine.runner import Runner

freeze_at = int(sys.argv[3])

def freeze(event):
    if freeze_at and event.type == "StepLogged" and event.step == freeze_at:
        print("frozen", flush=True)
        threading.Event().wait()

runner = Runner(load_config(sys.argv[1]), runs_dir=sys.argv[2], subscribers=[freeze])
runner.start()
result = runner.join()
print("done", result.status, flush=True)
"""


def _start_child(config: Path, runs: Path, freeze_at: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(config), str(runs), str(freeze_at)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _only_run(runs: Path) -> Path:
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    return run


def _weights(run: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(run / "model" / "model.safetensors")


def _final_eval(run: Path) -> Evaluated:
    return [e for e in read_events(run / "events.jsonl") if isinstance(e, Evaluated)][-1]


def _kill_resume_and_compare(tmp_path: Path, cfg: Any, freeze_at: int) -> tuple[Path, Path]:
    """Run ``cfg`` once straight through (here) and once in a child process that is killed with SIGKILL at
    ``freeze_at`` and then resumed through the CLI; return both run folders."""
    from engine.cli import main

    config = tmp_path / "config.yaml"
    config.write_text(cfg.to_yaml(), encoding="utf-8")
    killed_runs = tmp_path / "killed"
    killed = _start_child(config, killed_runs, freeze_at)
    try:
        straight = Runner(cfg, runs_dir=tmp_path / "straight").run()  # meanwhile, on the other core
        assert straight.status == "finished" and straight.run_dir is not None, straight.error
        assert killed.stdout is not None
        line = killed.stdout.readline()
        assert line.strip() == "frozen", killed.communicate()[1][-3000:]
    finally:
        os.kill(killed.pid, signal.SIGKILL)
        killed.communicate()
    killed_run = _only_run(killed_runs)
    assert not (killed_run / "model").exists()  # the kill really cut the run short
    assert (killed_run / "checkpoints").is_dir()

    # A checkpoint torn by the kill, and a newer one without its completion marker, must both be ignored.
    (killed_run / "checkpoints" / f".checkpoint-{freeze_at}.torn").mkdir()
    half = killed_run / "checkpoints" / f"checkpoint-{freeze_at + 100}"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"\0" * 64)

    assert main(["run", "--resume", str(killed_run)]) == 0
    return straight.run_dir, killed_run


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> Any:
    """These runs pin torch to one thread (the same in the child and here); give the other tests theirs back."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


#: Two epochs with a checkpoint and an evaluation every 3 steps, on one torch thread (the same here and in the child).
EVERY_3_STEPS = {
    "num_train_epochs": 2,
    "save_strategy": "steps",
    "save_steps": 3,
    "eval_strategy": "steps",
    "eval_steps": 3,
    "torch_threads": 1,
}


def _assert_same_result(straight: Path, resumed: Path) -> None:
    steps = [
        [e.step for e in read_events(run / "events.jsonl") if isinstance(e, Evaluated)] for run in (straight, resumed)
    ]
    assert steps[0] == steps[1], "the resumed run evaluates at the same steps, and none twice"
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    worst = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
    assert worst <= 1e-6, f"weights differ by up to {worst}"
    # The logged losses from the resume on: a window the kill cut in two logs the same mean as the whole one.
    resumed_at = _resumed_from(resumed)
    logged = [
        {e.step: e.loss for e in read_events(run / "events.jsonl") if isinstance(e, StepLogged) and e.step > resumed_at}
        for run in (straight, resumed)
    ]
    assert logged[0].keys() == logged[1].keys() and logged[0]
    assert logged[1] == pytest.approx(logged[0], abs=1e-6)
    ea, eb = _final_eval(straight), _final_eval(resumed)
    assert (ea.epoch, ea.step) == (eb.epoch, eb.step)
    assert eb.eval_loss == pytest.approx(ea.eval_loss, abs=1e-6)
    for name in ("accuracy", "perplexity", "macro_f1"):
        va, vb = getattr(ea, name), getattr(eb, name)
        assert (va is None) == (vb is None)
        if va is not None:
            assert vb == pytest.approx(va, abs=1e-6)


def _resumed_from(run: Path) -> int:
    starts = [e for e in read_events(run / "events.jsonl") if isinstance(e, RunStarted)]
    assert len(starts) == 2, "the resumed run continues the same events.jsonl"
    return starts[1].start_step


@pytest.mark.slow
def test_loop_run_killed_mid_epoch_and_resumed_matches_uninterrupted_run(
    tmp_path: Path, make_config: Callable[..., Any]
) -> None:
    # 72 training rows in batches of 8: 9 batches per epoch, so step 7 is inside epoch 1 and checkpoint-6 too,
    # written after the evaluation at step 6.
    data = write_jsonl(tmp_path / "rows.jsonl", sentiment_rows(96))
    cfg = make_config(
        task="masked-lm",
        data={"source": str(data), "label_field": None, "eval_fraction": 0.25},
        train={**EVERY_3_STEPS, "group_by_length": False},  # the plain shuffle; the grouped order has its own test
    )
    straight, resumed = _kill_resume_and_compare(tmp_path, cfg, freeze_at=7)
    assert _resumed_from(resumed) == 6
    _assert_same_result(straight, resumed)
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert summary["step"] == json.loads((straight / "summary.json").read_text())["step"]


@pytest.mark.slow
def test_sft_run_killed_mid_epoch_and_resumed_matches_uninterrupted_run(
    tmp_path: Path, make_config: Callable[..., Any], tiny_gpt2_dir: Path
) -> None:
    pytest.importorskip("engine.sft")
    cfg = make_config(
        task="causal-lm",
        engine="sft",
        model={"name_or_path": str(tiny_gpt2_dir)},
        data={"source": str(write_jsonl(tmp_path / "rows.jsonl", sentiment_rows(96))), "label_field": None},
        # the Trainer's own shuffle; a loss logged every 2 steps, so that the kill cuts the window of steps 3-4
        train={**EVERY_3_STEPS, "group_by_length": False, "logging_steps": 2},
    )
    straight, resumed = _kill_resume_and_compare(tmp_path, cfg, freeze_at=4)
    assert _resumed_from(resumed) == 3
    _assert_same_result(straight, resumed)


def _rows_of_many_lengths(n: int) -> list[dict[str, Any]]:
    """sentiment_rows with 0-20 filler words each, so that length-grouped batches differ from shuffled ones."""
    import random

    rng = random.Random(1)
    return [{**row, "text": row["text"] + " and so on" * rng.randint(0, 20)} for row in sentiment_rows(n)]


@pytest.mark.slow
def test_loop_run_with_group_by_length_killed_in_epoch_two_resumes_to_the_uninterrupted_run(
    tmp_path: Path, make_config: Callable[..., Any]
) -> None:
    # 72 training rows in batches of 8: 9 batches an epoch; step 13 is inside epoch 2, after checkpoint-12, so
    # the resumed run must rebuild epoch 2's grouped order from the checkpoint's sampler state.
    data = write_jsonl(tmp_path / "rows.jsonl", _rows_of_many_lengths(96))
    cfg = make_config(
        task="masked-lm",
        data={"source": str(data), "label_field": None, "eval_fraction": 0.25},
        train={**EVERY_3_STEPS, "group_by_length": True},
    )
    straight, resumed = _kill_resume_and_compare(tmp_path, cfg, freeze_at=13)
    assert _resumed_from(resumed) == 12
    _assert_same_result(straight, resumed)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["causal-lm", "masked-lm"])
def test_sft_run_with_group_by_length_killed_in_epoch_two_resumes_to_the_uninterrupted_run(
    tmp_path: Path, make_config: Callable[..., Any], tiny_gpt2_dir: Path, task: str
) -> None:
    pytest.importorskip("engine.sft")
    model = {"name_or_path": str(tiny_gpt2_dir)} if task == "causal-lm" else {}
    cfg = make_config(
        task=task,
        engine="sft",
        model=model,
        data={"source": str(write_jsonl(tmp_path / "rows.jsonl", _rows_of_many_lengths(96))), "label_field": None},
        train={**EVERY_3_STEPS, "group_by_length": True},
    )
    # 72 training rows in batches of 8: 9 steps an epoch; step 14 is inside epoch 2, after checkpoint-12.
    straight, resumed = _kill_resume_and_compare(tmp_path, cfg, freeze_at=14)
    assert _resumed_from(resumed) == 12
    _assert_same_result(straight, resumed)


def test_stop_saves_a_checkpoint_and_the_stopped_run_resumes_to_the_end(
    tmp_path: Path, make_config: Callable[..., Any]
) -> None:
    rows = write_jsonl(tmp_path / "rows.jsonl", sentiment_rows(64))  # 48 to train on: 6 steps an epoch
    cfg = make_config(data={"source": str(rows)}, train={"num_train_epochs": 2, "save_strategy": "no"})
    events: list[Any] = []
    runner = Runner(cfg, subscribers=[events.append])
    stop_at: list[int] = []

    def stop_inside_epoch_two(event: Any) -> None:
        if isinstance(event, RunStarted):  # two steps into epoch 2: after epoch 1's evaluation
            stop_at.append(event.total_steps // 2 + 2)
        elif isinstance(event, StepLogged) and event.step == stop_at[0]:
            runner.stop()

    runner.subscribe(stop_inside_epoch_two)
    stopped = runner.run()
    assert stopped.status == "stopped" and stopped.run_dir is not None
    saved = [e for e in events if isinstance(e, CheckpointSaved)]
    assert [e.step for e in saved] == stop_at, "a stop writes a checkpoint even with save_strategy: no"
    assert json.loads((stopped.run_dir / "summary.json").read_text())["status"] == "stopped"
    seconds_in = json.loads((Path(saved[-1].path) / "state.json").read_text())["epoch_seconds"]
    assert seconds_in > 0, "the checkpoint keeps how long epoch 2 has trained"
    # As if the run had been stopped an hour ago: that hour is not part of its duration.
    history = stopped.run_dir / "events.jsonl"
    shifted = [{**row, "time": row["time"] - 3600} for row in map(json.loads, history.read_text().splitlines())]
    history.write_text("".join(json.dumps(row) + "\n" for row in shifted))
    first_session = shifted[-1]["time"] - shifted[0]["time"]

    more: list[Any] = []
    result = Runner.from_run_dir(stopped.run_dir, subscribers=[more.append]).run()
    assert result.status == "finished", result.error
    start = next(e for e in more if isinstance(e, RunStarted))
    assert start.start_step == stop_at[0]
    steps = [e.step for e in more if isinstance(e, StepLogged)]
    assert steps[0] == stop_at[0] + 1 and steps[-1] == start.total_steps
    finished = more[-1]
    assert isinstance(finished, RunFinished) and finished.status == "finished"
    (epoch_two,) = [e for e in more if isinstance(e, EpochEnded)]
    after_first_step = epoch_two.time - next(e for e in more if isinstance(e, StepLogged)).time
    assert epoch_two.epoch == 2
    assert epoch_two.duration_seconds >= seconds_in + after_first_step, "both sessions' share of epoch 2"
    summary = json.loads((stopped.run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["step"] == start.total_steps
    # The summary covers both sessions: epoch 1 was evaluated before the stop, epoch 2 after the resume.
    evals = [e for e in read_events(stopped.run_dir / "events.jsonl") if isinstance(e, Evaluated)]
    assert [e.epoch for e in evals] == [1, 2]
    assert summary["best_value"] == max(e.accuracy or 0.0 for e in evals)
    second_session = more[-1].time - more[0].time
    assert first_session + second_session <= summary["duration_seconds"] < first_session + second_session + 5
    assert finished.duration_seconds == pytest.approx(summary["duration_seconds"], abs=1)


def test_a_resume_that_failed_before_its_engine_began_does_not_count_the_time_before_it() -> None:
    from engine.events import FIRST_STAGE, RunFailed, Status
    from engine.runner import _sessions

    def at(event: Any, t: float) -> Any:
        return dataclasses.replace(event, time=t)

    history = [
        at(Status(FIRST_STAGE, "minilm"), 0.0),
        at(RunFinished("stopped", 3, 10.0, "model"), 10.0),
        at(RunFailed(error="train.device: CUDA is not available", user_error=True), 5000.0),  # days later
        at(Status(FIRST_STAGE, "minilm"), 9000.0),
        at(RunFinished("finished", 6, 0.0, "model"), 9020.0),
    ]
    assert [s[-1].time - s[0].time for s in _sessions(history)] == [10.0, 0.0, 20.0]


def test_save_total_limit_keeps_only_the_newest_complete_checkpoints(
    tmp_path: Path, make_config: Callable[..., Any]
) -> None:
    rows = write_jsonl(tmp_path / "rows.jsonl", sentiment_rows(64))  # 48 to train on: checkpoints at 2, 4, 6
    cfg = make_config(
        data={"source": str(rows)},
        train={"num_train_epochs": 1, "save_strategy": "steps", "save_steps": 2, "save_total_limit": 2},
    )
    events: list[Any] = []
    result = Runner(cfg, subscribers=[events.append]).run()
    assert result.status == "finished" and result.run_dir is not None
    saved = [e.step for e in events if isinstance(e, CheckpointSaved)]
    assert len(saved) > 2
    kept = complete_checkpoints(result.run_dir / "checkpoints")
    assert [p.name for p in kept] == [f"checkpoint-{s}" for s in saved[-2:]]
    assert all((p / MARKER).is_file() for p in kept)
    assert [p.name for p in (result.run_dir / "checkpoints").iterdir() if p.name.startswith(".")] == []


def test_resume_refuses_a_finished_run(tmp_path: Path, make_config: Callable[..., Any]) -> None:
    rows = write_jsonl(tmp_path / "rows.jsonl", sentiment_rows(24))
    result = Runner(make_config(data={"source": str(rows)}, train={"num_train_epochs": 1})).run()
    assert result.status == "finished" and result.run_dir is not None
    with pytest.raises(UserError, match="already finished"):
        Runner.from_run_dir(result.run_dir)


def test_resume_refuses_a_run_that_another_process_is_training(tmp_path: Path, make_config: Callable[..., Any]) -> None:
    from engine.runs import create_run_dir

    run = create_run_dir(make_config(), tmp_path / "runs")
    with run.lock(), pytest.raises(UserError, match="being trained by another process"):
        Runner.from_run_dir(run.path)


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_over(
    tmp_path: Path, make_config: Callable[..., Any]
) -> None:
    from engine.runs import create_run_dir

    rows = write_jsonl(tmp_path / "rows.jsonl", sentiment_rows(24))
    cfg = make_config(data={"source": str(rows)}, train={"num_train_epochs": 1})
    run = create_run_dir(cfg)  # what a kill during model loading leaves: a folder with only the config
    events: list[Any] = []
    result = Runner.from_run_dir(run.path, subscribers=[events.append]).run()
    assert result.status == "finished", result.error
    assert next(e for e in events if isinstance(e, RunStarted)).start_step == 0
    assert any(e.type == "LogMessage" and "no complete checkpoint" in e.message for e in events)


def test_events_appended_after_a_torn_last_line_are_all_read_back(tmp_path: Path) -> None:
    from engine.events import Status
    from engine.runs import EventLog

    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(Status("loading data").to_dict()) + '\n{"type": "StepLo', encoding="utf-8")  # killed
    log = EventLog(path)
    log.write(Status("loading checkpoint"))
    log.close()
    assert [e.stage for e in read_events(path) if isinstance(e, Status)] == ["loading data", "loading checkpoint"]


def test_a_line_with_bytes_that_are_no_utf8_spoils_that_line_only(tmp_path: Path) -> None:
    from engine.events import Status

    path = tmp_path / "events.jsonl"
    good = json.dumps(Status("loading data").to_dict()).encode()
    path.write_bytes(b"\x00\xff\xfe\n" + good + b"\n")
    assert [e.stage for e in read_events(path) if isinstance(e, Status)] == ["loading data"]


def test_runs_list_tells_a_killed_run_from_a_running_one(tmp_path: Path, make_config: Callable[..., Any]) -> None:
    from engine.runs import create_run_dir, list_runs

    run = create_run_dir(make_config(), tmp_path / "runs")
    assert [r.status for r in list_runs(tmp_path / "runs")] == ["killed"]
    with run.lock():
        assert [r.status for r in list_runs(tmp_path / "runs")] == ["running"]


def test_a_runs_duration_leaves_out_the_time_it_lay_paused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pause waits for the user: 25 s paused in a minute's run is no time the run took, in this session or, once
    resumed from a stop, in an earlier one."""
    from engine.config import RunConfig
    from engine.events import FIRST_STAGE, Paused, Resumed, Status
    from engine.runner import _Summary

    clock = [1000.0]
    monkeypatch.setattr("engine.runner.time.time", lambda: clock[0])
    summary = _Summary(RunConfig())
    summary.see(Paused(step=5, time=1010.0))
    clock[0] = 1030.0
    assert summary.duration() == pytest.approx(10.0)  # paused since 1010: the clock stands still
    summary.see(Resumed(step=5, time=1035.0))
    clock[0] = 1060.0
    assert summary.duration() == pytest.approx(35.0)

    earlier = [
        Status(FIRST_STAGE, "", time=100.0),
        Paused(step=3, time=110.0),
        Resumed(step=3, time=140.0),
        Paused(step=4, time=150.0),  # stopped while paused: the session's end came 10 s into the pause
        RunFinished(status="stopped", step=4, duration_seconds=20.0, model_dir=None, time=160.0),
    ]
    resumed = _Summary(RunConfig())
    resumed.replay(earlier)
    assert resumed.duration() == pytest.approx(20.0)  # and this session has just begun
