"""A detached run seen from a front (the workbench's DetachedRun): the same events, control and result as an
in-process Runner, read from and sent through the run's folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.detached import DetachedRun
from engine.errors import UserError
from engine.events import (
    DeviceUsage,
    Event,
    Paused,
    Resumed,
    RunFailed,
    RunFinished,
    RunStarted,
    StepDone,
    StepLogged,
    StopRequested,
)
from engine.runs import list_runs, read_events
from tests.conftest import hold_run_at

pytestmark = pytest.mark.slow  # starts training processes


def test_a_detached_run_streams_every_event_and_returns_the_result(
    make_config: Callable[..., Any], tmp_path: Path
) -> None:
    cfg = make_config()
    events: list[Event] = []
    result = DetachedRun(cfg, subscribers=[events.append], runs_dir=tmp_path / "runs").run()
    assert result.status == "finished" and result.run_dir is not None
    started = next(e for e in events if isinstance(e, RunStarted))
    assert Path(started.run_dir) == result.run_dir
    assert isinstance(events[-1], RunFinished) and events[-1].status == "finished"
    steps = [e.step for e in events if isinstance(e, StepLogged)]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) == 30  # 120 train rows, batch 8, 2 epochs
    assert result.metrics["accuracy"] == pytest.approx(events[-1].metrics["accuracy"])
    on_disk = [e for e in read_events(result.run_dir / "events.jsonl") if isinstance(e, StepLogged)]
    assert [e.loss for e in on_disk] == [e.loss for e in events if isinstance(e, StepLogged)]
    assert not (result.run_dir / "live.json").exists()


def test_pause_resume_and_stop_reach_the_run_and_the_live_readings_arrive(
    make_config: Callable[..., Any], tmp_path: Path
) -> None:
    events: list[Event] = []

    def drive(event: Event) -> None:
        events.append(event)
        if isinstance(event, StepLogged) and event.step == 2:
            run.pause()
        elif isinstance(event, Paused):  # paused a while: live.json's readings reach the viewer meanwhile
            threading.Timer(1.5, run.resume).start()
        elif isinstance(event, Resumed):
            run.stop()

    run = DetachedRun(make_config(train={"num_train_epochs": 20}), subscribers=[drive], runs_dir=tmp_path)
    result = run.run()
    assert result.status == "stopped"
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("Paused") < kinds.index("Resumed") < kinds.index("StopRequested")
    assert isinstance(events[-1], RunFinished) and events[-1].status == "stopped"
    stopped = next(e for e in events if isinstance(e, StopRequested))
    assert stopped.step < 300
    assert any(isinstance(e, StepDone) for e in events)  # from live.json: events.jsonl has no StepDone
    assert any(isinstance(e, DeviceUsage) and e.device == "CPU" for e in events)


def test_a_run_killed_mid_run_is_a_failed_run_that_says_so_and_lists_as_killed(
    make_config: Callable[..., Any], tmp_path: Path
) -> None:
    events: list[Event] = []

    def kill(event: Event) -> None:
        events.append(event)
        if isinstance(event, StepLogged) and event.step == 1 and run.pid is not None:
            os.kill(run.pid, signal.SIGKILL)

    run = DetachedRun(make_config(train={"num_train_epochs": 20}), subscribers=[kill], runs_dir=tmp_path)
    result = run.run()
    assert result.status == "failed" and not result.user_error
    assert result.error is not None and "was killed by signal 9" in result.error
    assert result.run_dir is not None and result.run_dir.is_dir()  # the folder a resume continues
    assert isinstance(events[-1], RunFailed) and events[-1].error == result.error
    assert [r.status for r in list_runs(tmp_path)] == ["killed"]


def test_a_user_error_arrives_as_the_same_clear_failure_and_leaves_no_folder(
    make_config: Callable[..., Any], tmp_path: Path
) -> None:
    cfg = make_config(model={"name_or_path": str(tmp_path / "no-such-model")})
    events: list[Event] = []
    result = DetachedRun(cfg, subscribers=[events.append], runs_dir=tmp_path / "runs").run()
    assert result.status == "failed" and result.user_error and result.run_dir is None
    assert result.error is not None and "no-such-model" in result.error
    assert isinstance(events[-1], RunFailed) and events[-1].error == result.error
    assert not any((tmp_path / "runs").iterdir())


def test_resuming_a_finished_run_is_refused_before_any_process_starts(
    make_config: Callable[..., Any], tmp_path: Path
) -> None:
    result = DetachedRun(make_config(train={"num_train_epochs": 1}), runs_dir=tmp_path).run()
    assert result.run_dir is not None
    with pytest.raises(UserError, match="already finished"):
        DetachedRun.from_run_dir(result.run_dir)


def test_tunebench_run_trains_in_its_own_process_which_a_hang_up_does_not_reach(
    make_config: Callable[..., Any], tmp_path: Path, in_run_process: Callable[[str], None]
) -> None:
    """``tunebench run`` without --detach follows its run in the foreground; an SSH drop (SIGHUP to the CLI, whose
    default is to end it) ends only the following."""
    config = tmp_path / "config.yaml"
    config.write_text(make_config().to_yaml(), encoding="utf-8")
    runs, marker, release = tmp_path / "runs", tmp_path / "at-step-3", tmp_path / "go-on"
    in_run_process(hold_run_at(3, marker, release))
    cli = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "run", str(config), "--runs-dir", str(runs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not marker.exists() and cli.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), cli.communicate()[1][-2000:]
    (run,) = list(runs.iterdir())
    live = read_live_pid(run)
    assert live != cli.pid and os.getsid(live) == live  # a session of its own: the terminal's hang-up misses it

    cli.send_signal(signal.SIGHUP)
    cli.communicate(timeout=30)
    assert cli.returncode == -signal.SIGHUP
    release.touch()
    summary = run / "summary.json"
    while not summary.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert json.loads(summary.read_text())["status"] == "finished"


def read_live_pid(run: Path) -> int:
    return int(json.loads((run / "live.json").read_text())["pid"])


FULL_DISK_AT_STEP_4 = """
import errno
import engine.runs

real = engine.runs.EventLog.write

def write(log, event):
    if event.type == "StepLogged" and event.step >= 4:
        log.write_error = log.write_error or OSError(errno.ENOSPC, "No space left on device")
    real(log, event)

engine.runs.EventLog.write = write
"""


def test_a_viewer_hears_why_a_run_whose_events_cannot_be_written_ended(
    make_config: Callable[..., Any], tmp_path: Path, in_run_process: Callable[[str], None]
) -> None:
    """The run's final event cannot reach events.jsonl; its process's last line on stderr carries the message."""
    in_run_process(FULL_DISK_AT_STEP_4)
    events: list[Event] = []
    result = DetachedRun(make_config(), subscribers=[events.append], runs_dir=tmp_path / "runs").run()
    assert result.status == "failed" and result.user_error and result.run_dir is not None
    assert result.error is not None and result.error.startswith(f"cannot write to the run folder {result.run_dir}")
    assert isinstance(events[-1], RunFailed) and events[-1].error == result.error
    assert [e.step for e in events if isinstance(e, StepLogged)] == [1, 2, 3]


def test_a_run_process_leaves_with_its_code_its_output_flushed_and_exit_handlers_run(tmp_path: Path) -> None:
    """``leave`` skips the interpreter's teardown, not what the run asked for at exit or what it printed."""
    code = (
        "import atexit, sys\n"
        "from engine.detached import leave\n"
        "atexit.register(lambda: open(sys.argv[1], 'w').write('ran'))\n"
        "print('to stdout', end='')\n"
        "print('to stderr', end='', file=sys.stderr)\n"
        "leave(3)\n"
        "print('never')\n"
    )
    marker = tmp_path / "atexit.txt"
    done = subprocess.run([sys.executable, "-c", code, str(marker)], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (3, "to stdout", "to stderr")
    assert marker.read_text() == "ran"


def test_a_viewer_attached_to_a_run_killed_elsewhere_says_so_and_what_a_resume_does(
    make_config: Callable[..., Any], tmp_path: Path
) -> None:
    """It said "is not live: it was killed (resume continues it from its last checkpoint)" as a user error,
    which the Train panel answered with "n in Runs starts a config from this run to fix"; the run had no
    checkpoint, so a resume would start over."""
    from engine.detached import start_detached

    cfg = make_config(train={"num_train_epochs": 20})
    run, pid = start_detached(cfg, tmp_path)
    killed = threading.Event()

    def kill(event: Event) -> None:
        if isinstance(event, StepLogged) and not killed.is_set():
            killed.set()
            os.kill(pid, signal.SIGKILL)

    result = DetachedRun(cfg, subscribers=[kill], attach_dir=run.path).run()
    assert killed.is_set()
    assert result.status == "failed" and not result.user_error
    assert result.error == f"{run.name} was killed before it ended; no checkpoint: a resume starts over"
