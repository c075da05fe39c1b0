"""A ``DataTable`` that redraws its rows once it has sized its columns to them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from textual.widgets import DataTable
from textual.widgets._data_table import RowKey

CellType = TypeVar("CellType")


class SizedTable(DataTable[CellType]):
    """Textual's ``DataTable`` widens auto-width columns to new rows on an idle pass, and caches rendered rows
    under a key that does not hold the column widths. On a busy machine a frame can come between the rows and
    that pass: the rows then stayed drawn at the header's widths (a Runs table squeezed to ``202 finish``)
    until the table changed again. Here the pass drops those cached rows."""

    @property
    def columns_sized(self) -> bool:
        """Whether the columns fit every row added so far (Textual 8.2 sizes them on an idle pass after the
        rows; its flag for a pending pass is private, so it is read here only)."""
        return not self._require_update_dimensions

    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        super()._update_dimensions(new_rows)
        self._clear_caches()
        self.refresh()
