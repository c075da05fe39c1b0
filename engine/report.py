"""A classification evaluation drawn for the terminal: the confusion matrix as a coloured grid and the per-class
scores. Rich renderables, printed by ``tunebench runs RUN`` and shown by the workbench's Runs panel; and the
console the CLI prints them with."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from engine.metrics import class_scores, label_of

if TYPE_CHECKING:
    from rich.console import Console, Group
    from rich.table import Table

    from engine.events import Evaluated

#: How wide the CLI's lines may be when stdout is not a terminal (a pipe, a log file): rich would cut and fold
#: them at 80 columns, splitting a checkpoint's path or cutting a run's name in a table.
PIPED_WIDTH = 1000


def stdout_console() -> Console:
    """Rich's console for the CLI's stdout: the terminal's width, or ``PIPED_WIDTH`` for a pipe (unless COLUMNS
    says otherwise)."""
    from rich.console import Console

    class PipedConsole(Console):
        def on_broken_pipe(self) -> None:
            # Rich exits 1, an internal failure to a script; engine.cli.main ends a left pipe with 0.
            self.quiet = True
            raise BrokenPipeError

    console = PipedConsole(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = PipedConsole(highlight=False, width=PIPED_WIDTH)
    return console


#: Cell backgrounds from none to all of a true label's rows: right answers go green, wrong ones red.
_RIGHT, _WRONG, _EMPTY = (46, 160, 67), (198, 40, 40), (40, 40, 40)


def _shade(share: float, full: tuple[int, int, int]) -> str:
    r, g, b = (round(e + (f - e) * share) for e, f in zip(_EMPTY, full, strict=True))
    return f"bold white on rgb({r},{g},{b})"


def confusion_grid(
    confusion: Sequence[Sequence[int]], labels: Sequence[str], corner: str = "true \\ predicted"
) -> Table:
    """Rows = true labels, columns = predicted; each cell shaded by its share of the row."""
    from rich.table import Table
    from rich.text import Text

    names = [Text(label_of(labels, i)) for i in range(len(confusion))]  # a label is text, never markup
    grid = Table(show_edge=False, pad_edge=False, box=None)
    grid.add_column(corner, style="bold", no_wrap=True)
    for name in names:
        grid.add_column(name, justify="right", no_wrap=True, max_width=12)
    for i, row in enumerate(confusion):
        total = sum(row)
        cells = [
            f"[{_shade(count / total if total else 0.0, _RIGHT if i == j else _WRONG)}] {count} [/]"
            for j, count in enumerate(row)
        ]
        grid.add_row(names[i], *cells)
    return grid


def class_table(confusion: Sequence[Sequence[int]], labels: Sequence[str]) -> Table:
    """Precision, recall, F1 and support of each class."""
    from rich.table import Table
    from rich.text import Text

    table = Table(show_edge=False, pad_edge=False, box=None)
    table.add_column("class", style="bold", no_wrap=True)
    for column in ("precision", "recall", "F1", "support"):
        table.add_column(column, justify="right")
    for c in class_scores(confusion, labels):
        table.add_row(Text(c.label), f"{c.precision:.3f}", f"{c.recall:.3f}", f"{c.f1:.3f}", str(c.support))
    return table


def class_report(evaluated: Evaluated, labels: Sequence[str], width: int | None = None) -> Group:
    """A heading that names the evaluation, its confusion grid and its per-class table: the table under the
    grid, or beside it where ``width`` columns hold both (a workbench panel has more columns than lines)."""
    from rich.console import Console, Group
    from rich.table import Table
    from rich.text import Text

    assert evaluated.confusion is not None
    where = f"epoch {evaluated.epoch}, step {evaluated.step}"
    heading = Text.assemble(("confusion matrix", "bold"), f", {where} (rows: true labels, columns: predicted)")
    table = class_table(evaluated.confusion, labels)
    if width is not None:
        console = Console(width=width * 2)  # measured unbounded: what each needs, not what the width leaves it
        for corner in ("true \\ predicted", "true \\ pred", ""):  # the heading says which are which
            beside = confusion_grid(evaluated.confusion, labels, corner)
            if console.measure(beside).maximum + SIDE_GAP + console.measure(table).maximum <= width:
                both = Table.grid(padding=(0, SIDE_GAP, 0, 0))
                both.add_row(beside, table)
                return Group(heading, both)
    return Group(heading, confusion_grid(evaluated.confusion, labels), Text(""), table)


#: Columns between the confusion grid and the per-class table set beside it.
SIDE_GAP = 3
