"""The one place where engine events become Textual messages.

A run's subscribers are called on the thread that delivers its events: the app's training worker, which reads
them from the run's folder (``engine.detached``), or the run's own thread for an in-process ``Runner``. A
subscriber must never wait for the UI: each event is wrapped in a ``Message`` and handed to ``post_message``,
which is thread-safe and returns at once. Step events (``StepDone``, ``StepLogged``) are buffered here; the
first one since the app last took them posts one ``StepsLogged``, and the app takes them all at once, at most
every ``STEP_REFRESH_SECONDS``: however fast the loop steps, the UI thread wakes about twice a second for them,
and the chart still receives every point.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from textual.message import Message

from engine.config import RunConfig
from engine.events import Emit, Event, LogMessage, StepDone, StepLogged

if TYPE_CHECKING:
    from engine.runner import RunHandle

Post = Callable[[Message], object]

#: New steps reach the Train panel and the run bar at most this often (each update re-renders the progress
#: line, the status and the chart).
STEP_REFRESH_SECONDS = 0.5


class EngineEvent(Message):
    """An engine event other than a step (status, epoch, eval, checkpoint, pause, end of run)."""

    def __init__(self, bridge: EventBridge, event: Event, steps_before: int) -> None:
        super().__init__()
        self.bridge = bridge
        self.event = event
        #: How many step events the run had sent before this one: the app shows those first, and no later ones.
        self.steps_before = steps_before


class StepsLogged(Message):
    """Step events wait in the bridge: posted by the first one since the app last took them (take_steps)."""

    def __init__(self, bridge: EventBridge) -> None:
        super().__init__()
        self.bridge = bridge

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, StepsLogged) and message.bridge is self.bridge


class RunHistory(Message):
    """What a resumed run did before it stopped, read back from its events.jsonl, for the Train panel."""

    def __init__(self, bridge: EventBridge, events: list[Event]) -> None:
        super().__init__()
        self.bridge = bridge
        self.events = events


class LibraryLog(Message):
    """A log record from the TUI's own workers (data loading, prediction), for the log pane."""

    def __init__(self, event: LogMessage) -> None:
        super().__init__()
        self.event = event


class EventBridge:
    """Engine subscriber for one run: called on the thread that delivers its events, posts without blocking."""

    def __init__(self, post: Post) -> None:
        self._post = post
        self._lock = threading.Lock()
        self._steps: list[StepLogged | StepDone] = []
        #: Step events received so far; the first waiting in ``_steps`` is number ``_taken``.
        self._received = 0
        self._taken = 0

    def __call__(self, event: Event) -> None:
        if isinstance(event, StepLogged | StepDone):
            # The app shows steps at a capped rate and takes them all at once: while some wait, a message is
            # already on its way, and waking the UI thread again would only cost it (and a core) for nothing.
            with self._lock:
                self._steps.append(event)
                self._received += 1
                first = len(self._steps) == 1
            if first:
                self._post(StepsLogged(self))
        else:
            with self._lock:
                received = self._received
            self._post(EngineEvent(self, event, received))

    def many(self, events: list[Event]) -> None:
        """What calling this with each event does, for a burst (a run's history read from its folder, 100,000
        steps for a long run): each run of step events goes in under one lock, with at most one message."""
        i, n = 0, len(events)
        while i < n:
            j = i
            while j < n and isinstance(events[j], StepLogged | StepDone):
                j += 1
            if j > i:
                with self._lock:
                    first = not self._steps
                    self._steps.extend(events[i:j])  # type: ignore[arg-type]
                    self._received += j - i
                if first:
                    self._post(StepsLogged(self))
            if j < n:
                self(events[j])
            i = j + 1

    def take_steps(self, upto: int | None = None) -> list[StepLogged | StepDone]:
        """The step events waiting, oldest first; with ``upto``, only those among the first ``upto`` the run sent
        (the ones before an EngineEvent: a run read from its folder sends a burst at once) (UI thread)."""
        with self._lock:
            count = len(self._steps) if upto is None else max(0, min(len(self._steps), upto - self._taken))
            steps, self._steps = self._steps[:count], self._steps[count:]
            self._taken += count
        return steps


RunnerFactory = Callable[[RunConfig, list[Emit]], "RunHandle"]
#: Continues the run in a folder; raises ``engine.errors.UserError`` when that run cannot be resumed.
ResumeFactory = Callable[[Path, list[Emit]], "RunHandle"]
#: Follows the run in a folder, from its first event; raises ``engine.errors.UserError`` for a folder that is no run.
AttachFactory = Callable[[Path, list[Emit]], "RunHandle"]


def torch_threads_beside_the_ui() -> int:
    """Torch threads for a run started from the workbench whose ``train.torch_threads`` is null: every core but
    one, which stays the UI's (with a torch thread on every core, the UI thread's turns stall the training
    threads' OpenMP team; BENCHMARKS.md, threads.py, has the measurement)."""
    return max(1, (os.cpu_count() or 1) - 1)


def engine_runner(cfg: RunConfig, subscribers: list[Emit]) -> RunHandle:
    """The real engine: a detached run under the config's runs folder (engine.detached), which trains on when the
    workbench goes away and takes no time from the UI thread (a run in a thread of the app would wait for the
    UI's Python whenever it draws)."""
    from engine.detached import DetachedRun  # imported with the first run, not before the first frame

    return DetachedRun(cfg, subscribers=subscribers, torch_threads=torch_threads_beside_the_ui())


def engine_resumer(run_dir: Path, subscribers: list[Emit]) -> RunHandle:
    """The real engine continuing a stopped, failed or killed run in its own folder (detached)."""
    from engine.detached import DetachedRun

    return DetachedRun.from_run_dir(run_dir, subscribers=subscribers, torch_threads=torch_threads_beside_the_ui())


def engine_attacher(run_dir: Path, subscribers: list[Emit]) -> RunHandle:
    """Follow the run in ``run_dir``, live or over, from its first event."""
    from engine.detached import DetachedRun

    return DetachedRun.attach(run_dir, subscribers=subscribers)


class LogBridge(logging.Handler):
    """Sends library records from the TUI's own workers to the log pane instead of the terminal."""

    def __init__(self, post: Post) -> None:
        super().__init__(logging.WARNING)
        self._post = post

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "tunebench.predict":  # the Predict panel shows its own warnings beside its answer
            return
        try:
            self._post(LibraryLog(LogMessage(record.levelname.lower(), record.getMessage(), record.name)))
        except Exception:  # a log line must never take the UI down
            self.handleError(record)
