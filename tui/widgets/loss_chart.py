"""A loss chart drawn in braille dots, re-drawn on the next frame after its data, size or theme changed.

Each character cell holds 2x4 dots, so a 100x20 plot area resolves 200x80 points. A drawing is a list of
``Strip`` (one per row) built in one pass over the visible points, a millisecond or two for a full chart.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.strip import Strip
from textual.widget import Widget

Point = tuple[float, float]

#: Series colours, in the order series are added; readable on dark and light themes.
PALETTE = ("#4f9dff", "#ff9f1c", "#2ec27e", "#c061cb", "#33c7de", "#e5534b", "#d4b106")
#: Bit of each dot in a braille cell, by (column, row) inside the cell.
BRAILLE_BITS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))
BRAILLE_BASE = 0x2800
DOT = "•"  # a per-epoch value: a point, not a line
LEGEND_MARK = {"braille": "━", "dot": DOT}


@dataclass
class Series:
    label: str
    points: list[Point] = field(default_factory=list)
    #: "braille" draws a dense line; "dot" marks a few points such as per-epoch values.
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


def nice_ticks(low: float, high: float, count: int) -> list[float]:
    """About ``count`` round ticks (multiples of 1, 2 or 5 times a power of ten) between ``low`` and ``high``."""
    span = high - low
    if span <= 0 or count < 1:
        return [low]
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def integer_ticks(low: float, high: float, count: int) -> list[int]:
    """About ``count`` round integer ticks between ``low`` and ``high``."""
    ticks = nice_ticks(low, max(high, low + 1.0), count)
    return sorted({round(t) for t in ticks if abs(t - round(t)) < 1e-9} or {int(low)})


def tick_label(value: float, step: float) -> str:
    """A tick value with the decimals its spacing needs (0.25 spacing: two)."""
    decimals = max(0, -math.floor(math.log10(step))) if step > 0 else 0
    return f"{value:.{decimals}f}"


class Canvas:
    """Braille dots on a ``width`` x ``height`` cell grid; each cell takes the colour of the last series drawn
    into it, and a series drawn with points (DOT) wins the cell outright."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.bits = [[0] * width for _ in range(height)]
        self.color: list[list[int]] = [[-1] * width for _ in range(height)]
        self.marks: dict[tuple[int, int], int] = {}

    def dot(self, x: int, y: int, color: int) -> None:
        """Set dot (x, y); 0 <= x < 2 * width, 0 <= y < 4 * height, y growing downwards."""
        cx, cy = x >> 1, y >> 2
        if 0 <= cx < self.width and 0 <= cy < self.height:
            self.bits[cy][cx] |= BRAILLE_BITS[x & 1][y & 3]
            self.color[cy][cx] = color

    def line(self, x0: int, y0: int, x1: int, y1: int, color: int) -> None:
        """Bresenham's line between two dots, both ends included."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        while True:
            self.dot(x0, y0, color)
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def mark(self, x: int, y: int, color: int) -> None:
        cx, cy = x >> 1, y >> 2
        if 0 <= cx < self.width and 0 <= cy < self.height:
            self.marks[(cx, cy)] = color

    def cells(self, row: int) -> Iterator[tuple[str, int]]:
        """(character, colour index) of each cell of a row; -1 for an empty cell."""
        bits, colors = self.bits[row], self.color[row]
        for col in range(self.width):
            if (col, row) in self.marks:
                yield DOT, self.marks[(col, row)]
            elif bits[col]:
                yield chr(BRAILLE_BASE + bits[col]), colors[col]
            else:
                yield " ", -1


class LossChart(Widget):
    """Loss against optimizer step for any number of named series.

    Data arrives through ``set_series``/``extend``; the chart is re-drawn on the next frame after a change (any
    number of changes between two frames cost one drawing), and a render (a panel switch, a repaint of a
    neighbour) reuses the last drawing while the series, the size and the theme are unchanged. Callers pace
    their data: the Train panel gets its steps in batches from ``tui.bridge``.
    """

    DEFAULT_CSS = """
    LossChart { width: 1fr; height: 1fr; min-height: 6; }
    LossChart > .loss-chart--axis { color: $text-muted; }
    """
    COMPONENT_CLASSES: ClassVar[set[str]] = {"loss-chart--axis"}

    def __init__(self, *, empty_text: str = "no steps yet", id: str | None = None) -> None:
        super().__init__(id=id)
        self.empty_text = empty_text
        self._series: dict[str, Series] = {}
        self._version = 0
        #: The last drawing, one strip per row, and what it was drawn from (series version, size, theme).
        self._drawn: tuple[tuple[int, Size, str], list[Strip]] | None = None

    @property
    def series(self) -> dict[str, Series]:
        return self._series

    def set_series(
        self, name: str, points: Sequence[Point], *, marker: str = "braille", color: str | None = None
    ) -> None:
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
        self._version += 1
        self.refresh()

    def render_line(self, y: int) -> Strip:
        key = (self._version, self.size, self.app.theme)
        if self._drawn is None or self._drawn[0] != key:
            self._drawn = (key, self.draw(self.size.width, self.size.height))
        strips = self._drawn[1]
        return strips[y] if 0 <= y < len(strips) else Strip.blank(self.size.width, self.rich_style)

    # -- drawing --------------------------------------------------------------------------------------------
    def draw(self, width: int, height: int) -> list[Strip]:
        """The whole chart: a legend row, the plot with its y labels, the x axis and its labels."""
        base = self.rich_style
        axis = base + self.get_component_rich_style("loss-chart--axis", partial=True)
        blank = Strip.blank(width, base)
        drawn = [s for s in self._series.values() if s.points]
        if not drawn or width < 12 or height < 4:
            text = self.empty_text[:width]
            rows = [blank] * height
            if height:
                rows[height // 2] = Strip([Segment(text.center(width), axis)]).adjust_cell_length(width, base)
            return rows

        colors = self._colors(drawn)
        styles = [base + Style(color=c) for c in colors]
        xs = [p[0] for s in drawn for p in s.points]
        ys = [p[1] for s in drawn for p in s.points if math.isfinite(p[1])]
        x_low, x_high = min(xs), max(xs)
        y_low, y_high = (min(ys), max(ys)) if ys else (0.0, 1.0)
        if y_high - y_low < 1e-12:
            pad = abs(y_high) * 0.1 or 0.5
            y_low, y_high = y_low - pad, y_high + pad
        legend = self._legend(drawn, styles, base, width, max_rows=max(1, (height - 6) // 2))
        plot_h = height - len(legend) - 2  # the legend above, the axis line and its labels below
        y_ticks = nice_ticks(y_low, y_high, max(2, plot_h // 3))
        y_step = y_ticks[1] - y_ticks[0] if len(y_ticks) > 1 else y_high - y_low
        y_labels = {t: tick_label(t, y_step) for t in y_ticks}
        label_w = max(len(s) for s in y_labels.values()) + 1
        plot_w = width - label_w - 1
        if plot_w < 4:
            return [blank] * height

        canvas = Canvas(plot_w, plot_h)
        x_span = max(x_high - x_low, 1e-12)
        y_span = y_high - y_low

        def to_dot(x: float, y: float) -> tuple[int, int]:
            return (
                round((x - x_low) / x_span * (plot_w * 2 - 1)),
                round((y_high - y) / y_span * (plot_h * 4 - 1)),
            )

        for index, s in enumerate(drawn):
            points = [p for p in downsample(s.points, plot_w * 2) if math.isfinite(p[1])]
            dots = [to_dot(x, y) for x, y in points]
            if s.marker == "dot":
                for x, y in dots:
                    canvas.mark(x, y, index)
            elif len(dots) == 1:  # a run of one logged step: a point that no other run's line can cover
                canvas.mark(*dots[0], index)
            else:
                for (x0, y0), (x1, y1) in itertools.pairwise(dots):
                    canvas.line(x0, y0, x1, y1, index)

        rows = list(legend)
        label_rows = {min(plot_h - 1, max(0, round((y_high - t) / y_span * (plot_h - 1)))): t for t in y_ticks}
        for row in range(plot_h):
            tick = label_rows.get(row)
            label = y_labels[tick].rjust(label_w - 1) + " " if tick is not None else " " * label_w
            segments = [Segment(label, axis), Segment("┤" if tick is not None else "│", axis)]
            segments += self._runs(canvas.cells(row), styles, base)
            rows.append(Strip(segments).adjust_cell_length(width, base))
        rows += self._x_axis(x_low, x_high, label_w, plot_w, axis, width)
        return rows[:height] + [blank] * max(0, height - len(rows))

    def _colors(self, drawn: list[Series]) -> list[str]:
        palette = iter(PALETTE * (len(drawn) // len(PALETTE) + 1))
        return [s.color or next(palette) for s in drawn]

    @staticmethod
    def _runs(cells: Iterator[tuple[str, int]], styles: list[Style], base: Style) -> list[Segment]:
        """Cells joined into one segment per run of the same colour."""
        segments: list[Segment] = []
        text: list[str] = []
        current = -2
        for char, color in cells:
            if color != current and text:
                segments.append(Segment("".join(text), styles[current] if current >= 0 else base))
                text = []
            current = color
            text.append(char)
        if text:
            segments.append(Segment("".join(text), styles[current] if current >= 0 else base))
        return segments

    @staticmethod
    def _legend(drawn: list[Series], styles: list[Style], base: Style, width: int, max_rows: int) -> list[Strip]:
        """The series' names on one row, or on as many as they need at this width (a name is never split), up to
        ``max_rows``; the names left out are counted at the end ("+2 more")."""
        entries = [
            (DOT if sum(math.isfinite(y) for _, y in s.points) == 1 else LEGEND_MARK.get(s.marker, "━"), s.label, style)
            for s, style in zip(drawn, styles, strict=True)
        ]

        def cells(row: list[tuple[str, str, Style]]) -> int:  # " ━ name   ━ name"
            return 1 + sum(cell_len(mark) + 1 + cell_len(label) for mark, label, _ in row) + 3 * max(len(row) - 1, 0)

        rows: list[list[tuple[str, str, Style]]] = [[]]
        for entry in entries:
            if rows[-1] and cells([*rows[-1], entry]) > width:
                rows.append([])
            rows[-1].append(entry)
        left_out = sum(len(row) for row in rows[max_rows:])
        rows = rows[:max_rows]
        while left_out and rows[-1] and cells(rows[-1]) + len(f"   +{left_out + 1} more") > width:
            rows[-1].pop()
            left_out += 1
        strips = []
        for n, row in enumerate(rows):
            segments = [Segment(" ", base)]
            for i, (mark, label, style) in enumerate(row):
                segments += [Segment("   " if i else "", base), Segment(mark, style), Segment(f" {label}", base)]
            if left_out and n == len(rows) - 1:
                segments.append(Segment(f"{'   ' if row else ''}+{left_out} more", base))
            strips.append(Strip(segments).adjust_cell_length(width, base))
        return strips

    @staticmethod
    def _x_axis(low: float, high: float, label_w: int, plot_w: int, axis: Style, width: int) -> list[Strip]:
        """The axis line with a tick under each label, then the labels and "step" at the right."""
        line = ["─"] * plot_w
        labels = [" "] * (plot_w + 1)
        span = max(high - low, 1e-12)
        for tick in integer_ticks(low, high, max(2, plot_w // 14)):
            col = round((tick - low) / span * (plot_w - 1)) if high > low else 0
            if not 0 <= col < plot_w:
                continue
            line[col] = "┬"
            text = str(tick)
            start = min(max(0, col - len(text) // 2), plot_w - len(text))
            if all(c == " " for c in labels[max(0, start - 1) : start + len(text) + 1]):
                labels[start : start + len(text)] = list(text)
        name = "step"
        if all(c == " " for c in labels[plot_w - len(name) - 1 :]):
            labels[plot_w - len(name) :] = list(name)
        pad = " " * label_w
        return [
            Strip([Segment(pad + "└" + "".join(line), axis)]).adjust_cell_length(width, axis),
            Strip([Segment(pad + " " + "".join(labels[:plot_w]), axis)]).adjust_cell_length(width, axis),
        ]
