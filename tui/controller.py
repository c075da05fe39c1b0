"""The workbench's one run: its handle, the bridge its events come through, and its state.

No widgets here. The app starts a run through the controller, hands it the run's events, and re-renders when
``on_change`` fires; the state comes from the run's own events (the engine says how a run ended), so the
controller can be tested without Pilot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING

from engine.events import (
    Event,
    Paused,
    Resumed,
    RunFailed,
    RunFinished,
    RunStarted,
    Status,
    StopRequested,
    fmt_duration,
)

if TYPE_CHECKING:
    from engine.runner import RunHandle
    from tui.bridge import EventBridge


class RunState(StrEnum):
    """What the user sees of the run: the run bar and the Train panel's status line say it."""

    IDLE = "idle"
    LOADING = "loading"
    TRAINING = "training"
    PAUSED = "paused"
    STOPPING = "stopping"
    FINISHED = "finished"
    STOPPED = "stopped"
    FAILED = "failed"

    @property
    def active(self) -> bool:
        """The run still holds the training worker."""
        return self in _ACTIVE

    @property
    def mark(self) -> str:
        return _MARKS[self]


_ACTIVE = frozenset({RunState.LOADING, RunState.TRAINING, RunState.PAUSED, RunState.STOPPING})
_MARKS = {
    RunState.IDLE: "○",
    RunState.LOADING: "◌",
    RunState.TRAINING: "●",
    RunState.PAUSED: "‖",
    RunState.STOPPING: "◍",
    RunState.FINISHED: "✓",
    RunState.STOPPED: "■",
    RunState.FAILED: "✗",
}


class RunController:
    """Owns the workbench's current run; ``on_change`` is called after every change of state or detail."""

    def __init__(self, on_change: Callable[[], None] = lambda: None) -> None:
        self.state = RunState.IDLE
        self.detail = ""
        self.handle: RunHandle | None = None
        self.bridge: EventBridge | None = None
        #: The run's folder, once its RunStarted has said it.
        self.run_dir: str | None = None
        self._on_change = on_change
        self._pause_requested = False
        self._waiters: list[tuple[frozenset[RunState], asyncio.Future[RunState]]] = []

    @property
    def active(self) -> bool:
        return self.state.active

    @property
    def controllable(self) -> bool:
        """Pause and stop apply: a run is on and not already stopping."""
        return self.active and self.state is not RunState.STOPPING

    def begin(self, handle: RunHandle, bridge: EventBridge, detail: str) -> None:
        """A new run (or a resumed one) is starting; its events will come through ``bridge``."""
        self.handle = handle
        self.bridge = bridge
        self.run_dir = None
        self._pause_requested = False
        self._set(RunState.LOADING, detail)

    @property
    def paused(self) -> bool:
        """A run that is paused, or asked to pause at the next step: space resumes it."""
        return self.controllable and (self.state is RunState.PAUSED or self._pause_requested)

    # -- the user's commands ---------------------------------------------------------------------------------
    def toggle_pause(self) -> None:
        if self.handle is None or not self.controllable:
            return
        if self.state is RunState.PAUSED or self._pause_requested:
            self._pause_requested = False
            self.handle.resume()
            if self.state is not RunState.PAUSED:
                self._set(self.state, "")
        else:
            self._pause_requested = True
            self.handle.pause()
            self._set(self.state, "pausing at the next step")

    def stop(self, detail: str = "saving at the next step") -> None:
        if self.handle is None or not self.controllable:
            return
        self.handle.stop()
        self._set(RunState.STOPPING, detail)

    # -- what the run says -----------------------------------------------------------------------------------
    def steps_arrived(self) -> None:
        if self.state is RunState.LOADING:
            self._set(RunState.TRAINING)

    def take(self, event: Event) -> None:
        """Fold one event of the current run into the state."""
        if isinstance(event, RunStarted):
            self.run_dir = event.run_dir
            if self.state is RunState.LOADING:
                self._set(RunState.TRAINING, "pausing at the next step" if self._pause_requested else "")
        elif isinstance(event, Status) and self.state is RunState.LOADING:
            self._set(RunState.LOADING, f"{event.stage} {event.detail}".strip())
        elif isinstance(event, Paused):
            self._pause_requested = False
            if self.state is not RunState.STOPPING:
                self._set(RunState.PAUSED, f"at step {event.step}; space resumes")
        elif isinstance(event, Resumed):
            if self.state is not RunState.STOPPING:
                self._set(RunState.TRAINING)
        elif isinstance(event, StopRequested):
            self._set(RunState.STOPPING, f"at step {event.step}; saving")
        elif isinstance(event, RunFinished):
            took = f"at step {event.step} in {fmt_duration(event.duration_seconds)}"
            if event.status == "stopped":
                self._set(RunState.STOPPED, f"{took}; r in the Runs panel resumes it")
            else:
                self._set(RunState.FINISHED, event.note or f"done {took}")
        elif isinstance(event, RunFailed):
            self._set(RunState.FAILED, "see the message above the chart")

    def carried_on(self, since: str) -> None:
        """The run this workbench stopped, or lost, was taken up by another process since (``tunebench run
        --resume``): ``since`` says how it stands now, in place of advice to resume it."""
        if self.state in (RunState.STOPPED, RunState.FAILED) and since != self.detail:
            self._set(self.state, since)

    def crashed(self) -> None:
        """The training worker raised: a bug outside the run, which would otherwise report its own end."""
        if self.active:
            self._set(RunState.FAILED, "internal error")

    # -- waiting (tests and benchmarks) ----------------------------------------------------------------------
    async def wait_for(self, *states: str) -> RunState:
        """Wait, on the app's loop, until the run reaches one of ``states``."""
        wanted = frozenset(RunState(s) for s in states)
        if self.state in wanted:
            return self.state
        future: asyncio.Future[RunState] = asyncio.get_running_loop().create_future()
        self._waiters.append((wanted, future))
        return await future

    def _set(self, state: RunState, detail: str = "") -> None:
        self.state = state
        self.detail = detail
        self._on_change()
        for waiter in [w for w in self._waiters if state in w[0]]:
            self._waiters.remove(waiter)
            if not waiter[1].done():
                waiter[1].set_result(state)
