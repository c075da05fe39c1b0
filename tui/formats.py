"""Text shared by the app and its panels: run-state marks and durations (no widgets, so cheap to import)."""

from __future__ import annotations

#: Run state -> the mark shown before it in the run bar and the Train panel's status line.
STATE_MARKS = {
    "idle": "○",
    "loading": "◌",
    "training": "●",
    "paused": "‖",
    "stopping": "◍",
    "finished": "✓",
    "failed": "✗",
}
#: States in which a run holds the training worker.
ACTIVE_STATES = ("loading", "training", "paused", "stopping")


def fmt_duration(seconds: float | None) -> str:
    """``m:ss`` or ``h:mm:ss``; "-" when unknown."""
    if seconds is None or seconds != seconds or seconds in (float("inf"), float("-inf")):
        return "-"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
