"""A run in a child process: the caller sees the same events, control and result as with an in-process Runner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.child import ChildRun
from engine.errors import UserError
from engine.events import Event, Paused, Resumed, RunFailed, RunFinished, RunStarted, StepLogged, StopRequested
from engine.runs import read_events

pytestmark = pytest.mark.slow  # starts training processes


def test_a_child_run_streams_every_event_and_returns_the_result(make_config: Callable[..., Any]) -> None:
    cfg = make_config()
    events: list[Event] = []
    result = ChildRun(cfg, subscribers=[events.append]).run()
    assert result.status == "finished" and result.run_dir is not None
    started = next(e for e in events if isinstance(e, RunStarted))
    assert Path(started.run_dir) == result.run_dir
    assert isinstance(events[-1], RunFinished) and events[-1].status == "finished"
    steps = [e.step for e in events if isinstance(e, StepLogged)]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) == 30  # 120 train rows, batch 8, 2 epochs
    assert result.metrics["accuracy"] == pytest.approx(events[-1].metrics["accuracy"])
    # what the caller saw is what the run wrote
    on_disk = [e for e in read_events(result.run_dir / "events.jsonl") if isinstance(e, StepLogged)]
    assert [e.loss for e in on_disk] == [e.loss for e in events if isinstance(e, StepLogged)]


def test_pause_resume_and_stop_reach_the_child(make_config: Callable[..., Any]) -> None:
    events: list[Event] = []

    def drive(event: Event) -> None:
        events.append(event)
        if isinstance(event, StepLogged) and event.step == 2:
            run.pause()
        elif isinstance(event, Paused):
            run.resume()
        elif isinstance(event, Resumed):
            run.stop()

    run = ChildRun(make_config(), subscribers=[drive])
    result = run.run()
    assert result.status == "stopped"
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("Paused") < kinds.index("Resumed") < kinds.index("StopRequested")
    assert isinstance(events[-1], RunFinished) and events[-1].status == "stopped"
    stopped = next(e for e in events if isinstance(e, StopRequested))
    assert stopped.step < 30


def test_a_child_killed_mid_run_is_a_failed_run_that_says_so(make_config: Callable[..., Any]) -> None:
    events: list[Event] = []

    def kill(event: Event) -> None:
        events.append(event)
        if isinstance(event, StepLogged) and event.step == 1 and run.pid is not None:
            os.kill(run.pid, signal.SIGKILL)

    run = ChildRun(make_config(), subscribers=[kill])
    result = run.run()
    assert result.status == "failed" and not result.user_error
    assert result.error is not None and "killed by signal 9" in result.error
    assert result.run_dir is not None and result.run_dir.is_dir()  # the folder a resume continues
    assert isinstance(events[-1], RunFailed) and events[-1].error == result.error


def test_a_user_error_in_the_child_arrives_as_the_same_clear_failure(
    make_config: Callable[..., Any], tmp_path: Path
) -> None:
    cfg = make_config(model={"name_or_path": str(tmp_path / "no-such-model")})
    events: list[Event] = []
    result = ChildRun(cfg, subscribers=[events.append]).run()
    assert result.status == "failed" and result.user_error
    assert result.error is not None and "no-such-model" in result.error
    assert isinstance(events[-1], RunFailed) and events[-1].error == result.error


def test_resuming_a_finished_run_is_refused_before_any_process_starts(make_config: Callable[..., Any]) -> None:
    result = ChildRun(make_config(train={"num_train_epochs": 1})).run()
    assert result.run_dir is not None
    with pytest.raises(UserError, match="already finished"):
        ChildRun.from_run_dir(result.run_dir)


def test_when_the_parent_goes_away_the_child_stops_the_run_and_saves_it(make_config: Callable[..., Any]) -> None:
    cfg = make_config(train={"num_train_epochs": 50})
    child = subprocess.Popen(
        [sys.executable, "-m", "engine.child", cfg.to_yaml()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    run_dir = None
    for line in child.stdout:  # read up to the first step, then vanish as a killed workbench would
        message = json.loads(line)
        run_dir = message.get("run_dir", run_dir)
        if message.get("type") == "StepLogged":
            break
    child.stdin.close()
    child.stdout.close()
    assert child.wait(timeout=120) == 0
    assert run_dir is not None
    summary = json.loads((Path(run_dir) / "summary.json").read_text(encoding="utf-8"))
    assert summary["status"] == "stopped"
