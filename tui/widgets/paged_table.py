"""A table over any number of rows that draws only the rows on screen (the Line API, no row widgets)."""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from textual.binding import Binding, BindingType
from textual.dom import NoScreen
from textual.events import Blur, Click, DescendantBlur, DescendantFocus, Focus, Leave, MouseMove
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from engine.events import text_width

RowT = TypeVar("RowT")
RowT_co = TypeVar("RowT_co", covariant=True)


class PageSource(Protocol[RowT_co]):
    def __len__(self) -> int: ...
    def page(self, start: int, count: int) -> Sequence[RowT_co]: ...


class RowList(Generic[RowT]):
    """Rows already in memory, as a ``PageSource``."""

    def __init__(self, rows: Sequence[RowT]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def page(self, start: int, count: int) -> Sequence[RowT]:
        return self.rows[start : start + count]


@dataclass(frozen=True)
class Column:
    """A column: its title, its width in cells (0: the room the other columns leave), its alignment, and the
    component class its cells take (off the cursor's row)."""

    title: str
    width: int = 0
    right: bool = False
    component: str = ""
    #: Cut a long cell in its middle, not at its end (names that differ at their ends).
    middle: bool = False


def fit(text: str, width: int, *, right: bool = False, middle: bool = False) -> str:
    """``text`` cut or padded to exactly ``width`` cells (an ellipsis marks a cut: at the end, or in the
    ``middle``, which keeps the ends of names that differ only there, such as class names)."""
    if width <= 0:
        return ""
    if middle and cell_len(text) > width >= 5:
        tail = (width - 1) // 2
        return fit(text, width - tail) + _cell_tail(text, tail)
    if not text.isascii():
        if cell_len(text) > width:
            return set_cell_size(text, width - 1) + "…"
        pad = " " * (width - cell_len(text))
        return pad + text if right else text + pad
    if len(text) > width:
        return text[: width - 1] + "…"
    return text.rjust(width) if right else text.ljust(width)


def _cell_tail(text: str, cells: int) -> str:
    """The end of ``text`` that takes ``cells`` cells (a space first where a wide character would not fit)."""
    tail = ""
    for char in reversed(text):
        if cell_len(char + tail) > cells:
            break
        tail = char + tail
    return " " * (cells - cell_len(tail)) + tail


def column_widths(titles: Sequence[str], rows: Sequence[Sequence[str]]) -> list[int]:
    """The width of each column that fits its title and every row's cell."""
    widths = [text_width(t) for t in titles]
    for cells in rows:
        for i, text in enumerate(cells):
            n = text_width(text)
            if n > widths[i]:
                widths[i] = n
    return widths


class PagedTable(ScrollView, Generic[RowT], can_focus=True):
    """Columns over a ``PageSource``; a header line stays on top, and the columns scroll sideways with it.

    Rows are read a page at a time when they scroll into view, and a few recent pages are kept, so a million
    rows cost what a screenful costs. A 100-row page is a small Arrow slice whatever the split's size
    (BENCHMARKS.md, data_browsing.py), so pages are read on the UI thread; opening and filtering run in workers.
    ``cells`` turns a row into its cells' text when the row is drawn.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "jump(0)", "First", show=False),
        Binding("end", "jump(-1)", "Last", show=False),
        Binding("enter", "open", "Open"),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "paged-table--header",
        "paged-table--cursor",
        "paged-table--cursor-blurred",
        "paged-table--hover",
        "paged-table--even-row",
        "paged-table--index",
        "paged-table--label",
    }
    DEFAULT_CSS = """
    PagedTable { height: 1fr; overflow-x: hidden; }
    PagedTable > .paged-table--header { text-style: bold; background: $panel; }
    PagedTable > .paged-table--cursor { background: $block-cursor-background; color: $block-cursor-foreground; }
    PagedTable > .paged-table--cursor-blurred { background: $block-cursor-blurred-background; }
    PagedTable > .paged-table--hover { background: $block-hover-background; }
    PagedTable > .paged-table--even-row { background: $surface-lighten-1 50%; }
    PagedTable:dark > .paged-table--even-row { background: $surface-darken-1 40%; }
    PagedTable > .paged-table--index { color: $text-muted; }
    PagedTable > .paged-table--label { color: $text-accent; }
    """

    #: Whether a CSS rule gives this table another look when it has the focus (the Runs table's tint). Textual
    #: restyles a widget and its scroll bars (matches and applies every CSS rule again) whenever the focus comes
    #: or goes; a table that no :focus rule styles skips that (docs/perf-log.md, cause 47).
    FOCUS_STYLED: ClassVar[bool] = True
    PAGE_SIZE = 100
    CACHED_PAGES = 16
    #: Clicks on the highlighted row that open it: 2 is a double click, 1 any click on it.
    OPEN_CLICKS = 2

    cursor: reactive[int] = reactive(0, always_update=True, init=False)

    class RowOpened(Message):
        """Enter (or a click on the highlighted row) asked to open a row."""

        def __init__(self, table: PagedTable[Any], position: int, row: Any) -> None:
            super().__init__()
            self.table = table
            self.position = position
            self.row = row

        @property
        def control(self) -> PagedTable[Any]:
            return self.table

    class RowHighlighted(Message):
        """The cursor was set, to a new row or again to the same one (the rows under it may have changed)."""

        def __init__(self, table: PagedTable[Any], position: int) -> None:
            super().__init__()
            self.table = table
            self.position = position

        @property
        def control(self) -> PagedTable[Any]:
            return self.table

    def __init__(
        self,
        cells: Callable[[RowT], Sequence[str]],
        columns: Sequence[Column],
        *,
        padding: int = 0,
        zebra_stripes: bool = False,
        id: str | None = None,
    ) -> None:
        """``padding``: blank cells on each side of a cell; without it, one blank cell follows each column."""
        super().__init__(id=id)
        self._row_cells = cells
        self._columns = list(columns)
        self._padding = padding
        self.zebra_stripes = zebra_stripes
        self._source: PageSource[RowT] | None = None
        self._count = 0
        self._pages: OrderedDict[int, Sequence[RowT]] = OrderedDict()
        self._hover = -1
        self.pages_read = 0
        #: Size, virtual size, container size and the scroll bars' and gutter's room at the last layout pass that
        #: updated the scroll bars.
        self._laid_out: tuple[Size, Size, Size, tuple[int, int, tuple[int, int]]] | None = None

    # -- data -----------------------------------------------------------------------------------------------
    def set_source(
        self, source: PageSource[RowT] | None, columns: Sequence[Column] | None = None, *, keep_place: bool = False
    ) -> None:
        """Show ``source`` (``None`` empties the table), from its first row or, with ``keep_place``, with the
        cursor and the scroll where they were (as far as the new rows go)."""
        self._source = source
        self._count = len(source) if source is not None else 0
        self._pages.clear()
        if columns is not None:
            self._columns = list(columns)
        self.virtual_size = Size(self._content_width(), self._count + 1)
        if keep_place:
            self.cursor = min(self.cursor, max(self._count - 1, 0))
        else:
            self.scroll_to(y=0, animate=False, immediate=True)
            self.cursor = 0
        self.refresh()

    def set_columns(self, columns: Sequence[Column]) -> None:
        """New column widths for the same rows (the view's width changed)."""
        if list(columns) == self._columns:
            return
        self._columns = list(columns)
        self.virtual_size = Size(self._content_width(), self._count + 1)
        self.refresh()

    @property
    def row_count(self) -> int:
        return self._count

    def row_at(self, position: int) -> RowT | None:
        if self._source is None or not 0 <= position < self._count:
            return None
        number, offset = divmod(position, self.PAGE_SIZE)
        page = self._pages.get(number)
        if page is None:
            page = self._source.page(number * self.PAGE_SIZE, self.PAGE_SIZE)
            self.pages_read += 1
            self._pages[number] = page
            while len(self._pages) > self.CACHED_PAGES:
                self._pages.popitem(last=False)
        else:
            self._pages.move_to_end(number)
        return page[offset] if offset < len(page) else None

    def cells_at(self, position: int) -> list[str]:
        """The text of the row's cells as drawn, before fitting to their columns ([] past the last row)."""
        row = self.row_at(position)
        return [] if row is None else list(self._row_cells(row))

    # -- drawing --------------------------------------------------------------------------------------------
    def _fixed_width(self) -> int:
        """The width of the line but for the text of a column without a width."""
        if self._padding:
            return sum(c.width + 2 * self._padding for c in self._columns)
        return sum(c.width for c in self._columns) + len(self._columns) - 1

    def _content_width(self) -> int:
        """As wide as the columns; a column without a width takes what the view leaves."""
        if any(not c.width for c in self._columns):
            return self.size.width
        return self._fixed_width()

    def _cells(self, texts: Sequence[str], width: int) -> list[tuple[str, str]]:
        flex = max(width - self._fixed_width(), 0)
        pad = " " * self._padding
        last = len(self._columns) - 1
        cells = []
        for i, (column, text) in enumerate(zip(self._columns, texts, strict=False)):
            cell = fit(text, column.width or flex, right=column.right, middle=column.middle)
            if self._padding:
                cell = f"{pad}{cell}{pad}"
            elif i < last:
                cell += " "
            cells.append((cell, column.component))
        return cells

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        full = width if any(not c.width for c in self._columns) else self._fixed_width()
        scroll_x = round(self.scroll_offset.x)
        base = self.rich_style
        if y == 0:
            style = base + self.get_component_rich_style("paged-table--header")
            cells = self._cells([c.title for c in self._columns], full)
            line = Strip([Segment("".join(c for c, _ in cells), style)])
            return line.crop_extend(scroll_x, scroll_x + width, base)
        position = round(self.scroll_offset.y) + y - 1
        row = self.row_at(position)
        if row is None:
            return Strip.blank(width, base)
        line_style = base
        if self.zebra_stripes and position % 2 == 0:
            line_style = base + self.get_component_rich_style("paged-table--even-row")
        if position == self.cursor:
            cursor = "paged-table--cursor" if self.has_focus else "paged-table--cursor-blurred"
            line_style = base + self.get_component_rich_style(cursor)
        elif position == self._hover:
            line_style = base + self.get_component_rich_style("paged-table--hover")
        segments = []
        for text, component in self._cells(self._row_cells(row), full):
            style = line_style
            if component and position != self.cursor:
                style = line_style + self.get_component_rich_style(component)
            segments.append(Segment(text, style))
        return Strip(segments).crop_extend(scroll_x, scroll_x + width, base)

    # -- focus ----------------------------------------------------------------------------------------------
    # Textual's Widget redraws every line of a widget that gains or loses focus. Here only the cursor's row
    # changes (its two looks are component classes, not a :focus rule, which would also redraw everything):
    # redraw that row. A panel key that focuses a table drew the whole table again (docs/perf-log.md, 43). A
    # table whose CSS gives it another look when focused (the Runs panel's tint, FOCUS_STYLED) is still redrawn
    # whole, by the restyle that the focus change sets off.
    def focus(self, scroll_visible: bool = True) -> Self:
        """Widget.focus without its redraw of every line (the handlers below redraw the cursor's row)."""

        def set_focus() -> None:
            with contextlib.suppress(NoScreen):
                self.screen.set_focus(self, scroll_visible=scroll_visible)

        self.app.call_later(set_focus)
        return self

    def _on_focus(self, event: Focus) -> None:
        event.prevent_default()  # skip Widget._on_focus, which does this and redraws every line
        self.has_focus = True
        self.refresh_line(self.cursor + 1)
        if self.parent is not None:
            self.parent.post_message(DescendantFocus(self))

    def watch_has_focus(self, has_focus: bool) -> None:
        if self.FOCUS_STYLED:
            super().watch_has_focus(has_focus)

    def _on_blur(self, event: Blur) -> None:
        event.prevent_default()  # skip Widget._on_blur, likewise
        self.has_focus = False
        self.refresh_line(self.cursor + 1)
        if self.parent is not None:
            self.parent.post_message(DescendantBlur(self))

    def _size_updated(self, size: Size, virtual_size: Size, container_size: Size, layout: bool = True) -> bool:
        # Textual's ScrollView keeps a virtual size of its own (on_resize), yet compares it with the one the
        # layout passes (the content's size), and the two always differ: every layout pass that took in the
        # table, such as each panel key that shows it, redrew its scroll bar whole (docs/perf-log.md, cause 47).
        # Now only a change since the last pass does: of its size, its own virtual size, its container's size or
        # the room its scroll bars and gutter take.
        styles = self.styles
        room = (styles.scrollbar_size_vertical, styles.scrollbar_size_horizontal, styles.gutter.totals)
        laid_out = (size, self.virtual_size, container_size, room)
        if laid_out == self._laid_out:
            return False
        self._laid_out = laid_out
        return super()._size_updated(size, virtual_size, container_size, layout)

    def on_resize(self) -> None:
        self.virtual_size = Size(self._content_width(), self._count + 1)

    # -- cursor ---------------------------------------------------------------------------------------------
    @property
    def _visible_rows(self) -> int:
        return max(self.scrollable_content_region.height - 1, 1)

    def watch_cursor(self, old: int, new: int) -> None:
        top = round(self.scroll_offset.y)
        if new < top:
            self.scroll_to(y=new, animate=False, immediate=True)
        elif new >= top + self._visible_rows:
            self.scroll_to(y=new - self._visible_rows + 1, animate=False, immediate=True)
        self.refresh()
        self.post_message(self.RowHighlighted(self, new))

    def _move_to(self, position: int) -> None:
        if self._count:
            self.cursor = min(max(position, 0), self._count - 1)

    def action_cursor(self, delta: int) -> None:
        self._move_to(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        self._move_to(self.cursor + direction * self._visible_rows)

    def action_jump(self, where: int) -> None:
        self._move_to(self._count - 1 if where < 0 else where)

    def action_open(self) -> None:
        row = self.row_at(self.cursor)
        if row is not None:
            self.post_message(self.RowOpened(self, self.cursor, row))

    # -- mouse ----------------------------------------------------------------------------------------------
    def _position_at(self, y: int) -> int:
        position = round(self.scroll_offset.y) + y - 1
        return position if y > 0 and 0 <= position < self._count else -1

    def on_click(self, event: Click) -> None:
        offset = event.get_content_offset(self)
        position = -1 if offset is None else self._position_at(offset.y)
        if position >= 0:
            if position == self.cursor and event.chain >= self.OPEN_CLICKS:
                self.action_open()
            self.cursor = position

    def on_mouse_move(self, event: MouseMove) -> None:
        offset = event.get_content_offset(self)
        hover = -1 if offset is None else self._position_at(offset.y)
        if hover != self._hover:
            self._hover = hover
            self.refresh()

    def on_leave(self, event: Leave) -> None:
        if self._hover >= 0:
            self._hover = -1
            self.refresh()
