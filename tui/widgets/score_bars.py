"""Horizontal bars for scores in [0, 1]: top-k tokens, label probabilities, label shares."""

from __future__ import annotations

from textual.content import Content
from textual.geometry import Size
from textual.widget import Widget

from engine.events import text_width
from tui.widgets.paged_table import fit

_EIGHTHS = " ▏▎▍▌▋▊▉"


def bar(fraction: float, width: int) -> str:
    """A bar ``width`` cells wide filled to ``fraction``, with eighth-cell precision."""
    fraction = min(max(fraction, 0.0), 1.0)
    eighths = round(fraction * width * 8)
    full, rest = divmod(eighths, 8)
    text = "█" * full + (_EIGHTHS[rest] if rest else "")
    return text.ljust(width)


class ScoreBars(Widget):
    """Rows of ``label  bar  value``; bars are scaled to ``scale`` (1.0 for probabilities, or the largest count).
    Given a height under its rows, it shows the first ones and how many more there are."""

    DEFAULT_CSS = """
    ScoreBars { height: auto; width: 1fr; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None, fit: bool = False) -> None:
        super().__init__(id=id, classes=classes)
        self._rows: list[tuple[str, float, str]] = []
        self._scale = 1.0
        #: At most as tall as its container leaves it (the Data panel's side column), not one line a row.
        self._fit = fit

    @property
    def rows(self) -> list[tuple[str, float, str]]:
        return list(self._rows)

    def set_scores(self, scores: list[tuple[str, float]], *, digits: int = 3) -> None:
        """Probabilities or scores in [0, 1], shown as given (sort them first)."""
        self._rows = [(label, score, f"{score:.{digits}f}") for label, score in scores]
        self._scale = 1.0
        self.refresh(layout=True)

    def set_counts(self, counts: list[tuple[str, int]]) -> None:
        """Counts, scaled to the largest one."""
        self._rows = [(label, float(count), f"{count:,}") for label, count in counts]
        self._scale = max((c for _, c in counts), default=1) or 1
        self.refresh(layout=True)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        rows = max(len(self._rows), 1)
        if self._fit and self.parent is not None:  # the room its container's other widgets leave
            others = sum(w.outer_size.height for w in self.parent.children if w is not self and w.display)
            rows = min(rows, max(container.height - others, 2))
        return rows

    def render(self) -> Content:
        if not self._rows:
            return Content("")
        width, rows = self.size.width, self._rows
        if 0 < self.size.height < len(rows):  # given less height than rows (the Data panel's side column)
            rows = rows[: self.size.height - 1]
        # Cells, not characters: a label in CJK or with an emoji takes two cells a character.
        label_width = min(max(text_width(r[0]) for r in rows), max(width // 3, 6)) if rows else 0
        value_width = max(len(r[2]) for r in self._rows)
        bar_width = max(width - label_width - value_width - 2, 1)
        lines = []
        for label, score, shown in rows:
            lines.append(
                Content.assemble(
                    (fit(label, label_width, middle=True) + " ", "bold"),  # class names may differ at their ends
                    (bar(score / self._scale, bar_width), "$accent"),
                    " " + shown.rjust(value_width),
                )
            )
        if len(rows) < len(self._rows):
            lines.append(Content.styled(f"… {len(self._rows) - len(rows):,} more", "dim"))
        return Content("\n").join(lines)
