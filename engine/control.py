"""RunControl: the UI (or a signal handler) sets flags; the training loop polls them at step boundaries."""

from __future__ import annotations

import threading
import time


class RunControl:
    """Stop and pause requests for one run, safe to set from any thread.

    ``stop`` and ``pause`` are plain ``threading.Event`` objects so that any loop can poll them cheaply.
    """

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.pause = threading.Event()
        self._wake = threading.Event()

    def request_stop(self) -> None:
        self.stop.set()
        self._wake.set()  # a paused loop must see the stop at once

    def request_pause(self) -> None:
        self._wake.clear()
        self.pause.set()

    def request_resume(self) -> None:
        self.pause.clear()
        self._wake.set()

    @property
    def should_stop(self) -> bool:
        return self.stop.is_set()

    def wait_while_paused(self, timeout: float | None = None) -> None:
        """Block the calling (worker) thread while paused; return at once if not paused, or when stopped, or
        after ``timeout`` seconds (None: no limit)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.pause.is_set() and not self.stop.is_set():
            left = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if left <= 0:
                return
            self._wake.wait(left)
