"""The run controller without Pilot: the state the user reads comes from the run's own events."""

from __future__ import annotations

import asyncio
from typing import Any

from engine.events import Paused, Resumed, RunFailed, RunFinished, RunStarted, Status, StopRequested
from tests.tui.fakes import run_script
from tui.bridge import EventBridge
from tui.controller import RunController, RunState


class Handle:
    """Records the commands the controller sends to its run."""

    def __init__(self) -> None:
        self.cfg: Any = None
        self.commands: list[str] = []

    def run(self) -> Any:
        raise AssertionError("the controller never runs the handle itself")

    def pause(self) -> None:
        self.commands.append("pause")

    def resume(self) -> None:
        self.commands.append("resume")

    def stop(self) -> None:
        self.commands.append("stop")


def started() -> RunStarted:
    return next(e for e in run_script("runs/r") if isinstance(e, RunStarted))


def controller() -> tuple[RunController, Handle, list[tuple[RunState, str]]]:
    seen: list[tuple[RunState, str]] = []
    ctl = RunController(lambda: seen.append((ctl.state, ctl.detail)))
    handle = Handle()
    ctl.begin(handle, EventBridge(lambda _m: None), "loading")
    return ctl, handle, seen


def test_a_stopped_run_reads_stopped_and_resumable_not_finished() -> None:
    ctl, handle, _ = controller()
    ctl.take(started())
    ctl.stop()
    assert handle.commands == ["stop"] and ctl.state is RunState.STOPPING and not ctl.controllable
    ctl.take(StopRequested(step=22))
    ctl.take(RunFinished(status="stopped", step=22, duration_seconds=31.0, model_dir="m"))
    assert ctl.state is RunState.STOPPED and not ctl.active
    assert ctl.detail == "at step 22 in 0:31; r in the Runs panel resumes it"


def test_a_run_that_ends_on_its_own_reads_finished_with_its_last_step() -> None:
    ctl, _, _ = controller()
    ctl.take(Status("loading model", "tiny"))
    assert (ctl.state, ctl.detail) == (RunState.LOADING, "loading model tiny")
    ctl.take(started())
    assert ctl.state is RunState.TRAINING and ctl.run_dir == "runs/r"
    ctl.take(RunFinished(status="finished", step=24, duration_seconds=65.0, model_dir="m"))
    assert (ctl.state, ctl.detail) == (RunState.FINISHED, "done at step 24 in 1:05")


def test_a_run_that_stopped_early_says_so_and_reads_finished() -> None:
    ctl, _, _ = controller()
    ctl.take(started())
    note = "stopped early at step 12: eval_loss did not improve for 2 evaluations (best 0.3100 at step 4)"
    ctl.take(RunFinished(status="finished", step=12, duration_seconds=9.0, model_dir="m", note=note))
    assert (ctl.state, ctl.detail) == (RunState.FINISHED, note)


def test_pause_asks_once_and_the_paused_state_comes_from_the_run() -> None:
    ctl, handle, _ = controller()
    ctl.take(started())
    ctl.toggle_pause()
    assert ctl.state is RunState.TRAINING and ctl.detail == "pausing at the next step"
    ctl.take(Paused(step=14))
    assert (ctl.state, ctl.detail) == (RunState.PAUSED, "at step 14; space resumes")
    assert ctl.paused
    ctl.toggle_pause()
    ctl.take(Resumed(step=14))
    assert handle.commands == ["pause", "resume"] and ctl.state is RunState.TRAINING
    ctl.toggle_pause()  # asked to pause, and the run ends before its next step
    assert ctl.paused
    ctl.take(RunFinished(status="finished", step=24, duration_seconds=9.0, model_dir="m"))
    assert not ctl.paused, "an ended run has nothing to resume: space is Pause again"


def test_a_pause_while_stopping_is_ignored_and_a_failure_ends_the_run() -> None:
    ctl, handle, _ = controller()
    ctl.take(started())
    ctl.stop()
    ctl.toggle_pause()
    ctl.take(Paused(step=3))
    assert handle.commands == ["stop"] and ctl.state is RunState.STOPPING
    ctl.take(RunFailed(error="disk full", user_error=True))
    assert ctl.state is RunState.FAILED
    ctl.crashed()  # the worker's end after the run's own failure changes nothing
    assert ctl.detail == "see the message above the chart"


def test_every_change_is_reported_and_waiters_wake_on_their_state() -> None:
    async def scenario() -> None:
        ctl, _, seen = controller()
        waiting = asyncio.ensure_future(ctl.wait_for("stopped", "finished"))
        await asyncio.sleep(0)
        ctl.take(started())
        assert not waiting.done()
        ctl.take(RunFinished(status="finished", step=24, duration_seconds=1.0, model_dir=None))
        assert await waiting is RunState.FINISHED
        assert [s for s, _ in seen] == [RunState.LOADING, RunState.TRAINING, RunState.FINISHED]

    asyncio.run(scenario())


def test_a_crash_outside_the_run_fails_an_active_run_only() -> None:
    ctl, _, _ = controller()
    ctl.crashed()
    assert (ctl.state, ctl.detail) == (RunState.FAILED, "internal error")
    idle = RunController()
    idle.crashed()
    assert idle.state is RunState.IDLE
