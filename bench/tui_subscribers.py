"""The event subscribers the workbench attaches to a Runner, for the headless engine benches.

The TUI attaches ``tui.bridge.EventBridge``: on the run thread it wraps each event in a Textual message
and hands it to ``post_message`` (thread-safe, non-blocking); the app's loop then handles the message on
the main thread. Here the real bridge and the real messages are used; ``post_message`` is replaced by a
thread-safe queue that the main thread drains while the run trains, as the app's message pump does.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from typing import Any


class TuiSubscribers:
    """The TUI's subscribers for one run, plus a main-thread consumer that keeps up with them."""

    def __init__(self) -> None:
        from tui.bridge import EventBridge

        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.bridge = EventBridge(self._queue.put)
        self.received: list[Any] = []
        self.subscribers: list[Callable[[Any], None]] = [self.bridge]

    def drain_until_done(self, runner: Any) -> None:
        """Handle posted messages on this thread until the runner's thread ends and the queue is empty, taking
        the waiting steps at the app's pace: at most every STEP_REFRESH_SECONDS, and before any other event."""
        from tui.bridge import STEP_REFRESH_SECONDS, StepsLogged

        shown_at = -STEP_REFRESH_SECONDS
        due: float | None = None  # when the waiting steps are taken, as the app's timer would
        while True:
            timeout = 0.05 if due is None else max(0.0, due - time.monotonic())
            try:
                message = self._queue.get(timeout=timeout)
            except queue.Empty:
                message = None
                if due is None and not runner.is_alive():
                    self.received.extend(self.bridge.take_steps())
                    break
            if isinstance(message, StepsLogged):
                if due is None:
                    due = max(time.monotonic(), shown_at + STEP_REFRESH_SECONDS)
            elif message is not None:
                due = time.monotonic()  # the steps before this event first, in order
            if due is not None and time.monotonic() >= due:
                self.received.extend(self.bridge.take_steps())
                shown_at, due = time.monotonic(), None
            if message is not None and not isinstance(message, StepsLogged):
                self.received.append(message.event)


def run_as_the_workbench(cfg: Any, *subscribers: Callable[[Any], None]) -> float:
    """Train ``cfg`` with ``Runner`` in its own thread plus the TUI's subscribers, draining their messages on
    this thread as the app's loop does; seconds from start to the end of the run. Fails unless it finished."""
    from engine.runner import Runner

    tui = TuiSubscribers()
    start = time.perf_counter()
    runner = Runner(cfg, subscribers=[*subscribers, *tui.subscribers])
    runner.start()
    tui.drain_until_done(runner)
    result = runner.join()
    assert result is not None and result.status == "finished", result
    return time.perf_counter() - start
