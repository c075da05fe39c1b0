"""Text of a fixed size: a title, a status line, a help box."""

from __future__ import annotations

from textual.visual import VisualType
from textual.widgets import Static


class FixedText(Static):
    """A ``Static`` whose size is set in CSS (a fixed height and a width from its container), so that new
    text never needs a layout pass of the screen: these lines change at every panel visit and, while a run
    trains, twice a second, and the UI thread should answer keys, not lay the screen out (docs/perf-log.md,
    cause 9)."""

    def update(self, content: VisualType = "", *, layout: bool = False) -> None:
        super().update(content, layout=layout)
