"""A loss chart that re-plots at a capped rate, and only when its data changed."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from textual.app import RenderResult
from textual.geometry import Size
from textual_plotext import PlotextPlot

Point = tuple[float, float]

#: Series colours (plotext names), in the order series are added.
PALETTE = ("blue", "orange", "green", "magenta", "cyan", "red", "yellow")


@dataclass
class Series:
    label: str
    points: list[Point] = field(default_factory=list)
    #: "braille" draws a dense line; "dot" suits a few points such as per-epoch values.
    marker: str = "braille"
    color: str | None = None


def downsample(points: list[Point], limit: int) -> list[Point]:
    """At most ``limit`` points: consecutive buckets are averaged, so the curve keeps its shape."""
    if limit <= 0 or len(points) <= limit:
        return points
    size = len(points) / limit
    out: list[Point] = []
    for i in range(limit):
        bucket = points[int(i * size) : max(int((i + 1) * size), int(i * size) + 1)]
        out.append((sum(p[0] for p in bucket) / len(bucket), sum(p[1] for p in bucket) / len(bucket)))
    return out


def integer_ticks(low: float, high: float, count: int) -> list[int]:
    """About ``count`` round integer ticks between ``low`` and ``high``."""
    span = max(high - low, 1.0)
    raw = span / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw)) if raw >= 1 else 1
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [int(first + i * step) for i in range(int((high - first) // step) + 1)]


class LossChart(PlotextPlot):
    """Loss against optimizer step for any number of named series.

    Data arrives through ``set_series``/``extend``; the plot is rebuilt at most ``max_fps`` times a second
    (plotext re-draws the whole figure on every render, and its cost grows with the points drawn).
    """

    DEFAULT_CSS = """
    LossChart { min-height: 6; }
    """

    def __init__(self, *, empty_text: str = "no steps yet", max_fps: float = 4.0, id: str | None = None) -> None:
        super().__init__(id=id)
        self.empty_text = empty_text
        self.min_interval = 1.0 / max_fps
        self._series: dict[str, Series] = {}
        self._dirty = True
        self._last_plot = 0.0
        self._pending_timer = False
        #: The last drawing and what it was drawn from (series version, size, theme).
        self._drawn: tuple[tuple[int, Size, str], RenderResult] | None = None
        self._version = 0

    @property
    def series(self) -> dict[str, Series]:
        return self._series

    def set_series(self, name: str, points: list[Point], *, marker: str = "braille", color: str | None = None) -> None:
        self._series[name] = Series(name, list(points), marker, color)
        self._changed()

    def extend(self, name: str, points: list[Point]) -> None:
        if name not in self._series:
            self._series[name] = Series(name)
        self._series[name].points.extend(points)
        self._changed()

    def clear(self) -> None:
        self._series.clear()
        self._changed()

    def _changed(self) -> None:
        self._dirty = True
        wait = self.min_interval - (time.monotonic() - self._last_plot)
        if wait <= 0:
            self.flush()
        elif not self._pending_timer and self.is_mounted:
            self._pending_timer = True
            self.set_timer(wait, self._on_timer)

    def on_resize(self) -> None:
        self._dirty = True
        self.flush()

    def _on_timer(self) -> None:
        self._pending_timer = False
        self.flush()

    def flush(self) -> None:
        """Re-plot now if the data changed since the last plot."""
        if not self._dirty:
            return
        self._dirty = False
        self._last_plot = time.monotonic()
        self.replot()

    def render(self) -> RenderResult:
        """plotext's drawing, redone only when the series, the size or the theme changed: a panel switch or a
        repaint of a neighbour re-renders the widget, and a plotext drawing costs 15-30 ms."""
        key = (self._version, self.size, self.app.theme)
        if self._drawn is None or self._drawn[0] != key:
            self._drawn = (key, super().render())
        return self._drawn[1]

    def replot(self) -> None:
        """Hand the series to plotext; the expensive drawing happens once, in the next render."""
        self._version += 1
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        width = max(self.size.width, 40)
        drawn = [s for s in self._series.values() if s.points]
        colors = iter(PALETTE)
        low, high = math.inf, -math.inf
        for s in drawn:
            points = downsample(s.points, width * 2)
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            low, high = min(low, xs[0], min(xs)), max(high, max(xs))
            draw = plt.scatter if s.marker == "dot" else plt.plot  # per-epoch values are points, not a line
            draw(xs, ys, marker=s.marker, color=s.color or next(colors), label=s.label)
        if drawn:
            ticks = integer_ticks(low, high, max(2, width // 14))
            plt.xticks([float(t) for t in ticks], [str(t) for t in ticks])
            plt.xlabel("step")
        else:
            plt.title(self.empty_text)
        self.refresh()
