"""Helpers for the benches that drive the real workbench with Pilot: frame timing and event-loop lag.

``FrameProbe`` wraps the app's ``_display`` (where every composed frame ends up). In headless mode Textual
composes each frame but skips turning it into terminal bytes; the probe does that step too, so a measured
frame costs what it costs on a terminal. A key is timed from the moment it is posted until the first frame
on which its effect is visible (a condition on the app's state checked at frame time).

Keys are posted the way a terminal driver posts them (``driver.send_message``), not with ``Pilot.press``:
Pilot then waits for every widget on the screen to drain its queue, a walk over hundreds of widgets per
key that no real keyboard causes and that would be counted in the latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any


class FrameProbe:
    """Times keys from press to the first frame that shows their effect."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.frames = 0
        self._waiting: tuple[Callable[[], bool], asyncio.Future[float]] | None = None
        original = app._display

        def display(screen: Any, renderable: Any) -> None:
            original(screen, renderable)
            if renderable is None:
                return
            render_segments = getattr(renderable, "render_segments", None)
            if render_segments is not None:
                render_segments(app.console)  # the terminal bytes a real driver would write
            self.frames += 1
            if self._waiting is not None:
                shown, future = self._waiting
                if not future.done() and shown():
                    future.set_result(time.perf_counter())

        app._display = display

    async def time_key(self, key: str, shown: Callable[[], bool], timeout: float = 10.0) -> float:
        """Post ``key`` as a terminal would; milliseconds until a frame is composed while ``shown()`` holds."""
        return await self.time_action(lambda: self.app._driver.send_message(key_event(key)), shown, timeout)

    async def time_action(self, act: Callable[[], object], shown: Callable[[], bool], timeout: float = 10.0) -> float:
        """Call ``act`` on the app's loop; milliseconds until a frame is composed while ``shown()`` holds."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiting = (shown, future)
        start = time.perf_counter()
        try:
            act()
            end = await asyncio.wait_for(future, timeout)
        finally:
            self._waiting = None
        return (end - start) * 1000


def key_event(key: str) -> Any:
    """The ``Key`` event a terminal driver sends for ``key`` (a name such as "f2" or "pagedown", or a character);
    the same translation ``Pilot.press`` makes."""
    import unicodedata

    from textual import events
    from textual.keys import REPLACED_KEYS, _character_to_key, _get_unicode_name_from_key

    if len(key) == 1 and not key.isalnum():
        key = _character_to_key(key)
    char: str | None
    try:
        char = unicodedata.lookup(_get_unicode_name_from_key(REPLACED_KEYS.get(key, key)))
    except KeyError:
        char = key if len(key) == 1 else None
    return events.Key(key, char)


class LagSampler:
    """Wakes every ``interval`` seconds on the running loop and records how late each wake-up was (ms)."""

    def __init__(self, interval: float = 0.010) -> None:
        self.interval = interval
        self.lags_ms: list[float] = []
        self.recording = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            if self.recording:
                self.lags_ms.append(max(0.0, loop.time() - due) * 1000)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
