"""A table over any number of rows that reads only the pages on screen (the Line API, no row widgets)."""

from __future__ import annotations

from collections import OrderedDict
from typing import ClassVar, Protocol

from rich.segment import Segment
from textual.binding import Binding, BindingType
from textual.events import Click
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from engine.browse import Row


class PageSource(Protocol):
    def __len__(self) -> int: ...
    def page(self, start: int, count: int) -> list[Row]: ...


def fit(text: str, width: int) -> str:
    """``text`` cut or padded to exactly ``width`` cells (an ellipsis marks a cut)."""
    if width <= 0:
        return ""
    if len(text) > width:
        return text[: width - 1] + "…"
    return text.ljust(width)


class PagedTable(ScrollView, can_focus=True):
    """Index, label and text columns over a ``PageSource``; a header line stays on top.

    Rows are read a page at a time when they scroll into view, and a few recent pages are kept, so a million
    rows cost what a screenful costs. A 100-row page is a small Arrow slice whatever the split's size
    (BENCHMARKS.md, data_browsing.py), so pages are read on the UI thread; opening and filtering run in workers.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "jump(0)", "First", show=False),
        Binding("end", "jump(-1)", "Last", show=False),
        Binding("enter", "open", "Open sample"),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "paged-table--header",
        "paged-table--cursor",
        "paged-table--index",
        "paged-table--label",
    }
    DEFAULT_CSS = """
    PagedTable { height: 1fr; overflow-x: hidden; }
    PagedTable > .paged-table--header { text-style: bold; background: $panel; }
    PagedTable > .paged-table--cursor { background: $block-cursor-blurred-background; }
    PagedTable:focus > .paged-table--cursor { background: $block-cursor-background; color: $block-cursor-foreground; }
    PagedTable > .paged-table--index { color: $text-muted; }
    PagedTable > .paged-table--label { color: $text-accent; }
    """

    PAGE_SIZE = 100
    CACHED_PAGES = 16

    cursor: reactive[int] = reactive(0, always_update=True, init=False)

    class RowOpened(Message):
        """Enter (or a click on the highlighted row) asked to open a row."""

        def __init__(self, table: PagedTable, position: int, row: Row) -> None:
            super().__init__()
            self.table = table
            self.position = position
            self.row = row

    def __init__(self, *, label_title: str = "label", id: str | None = None) -> None:
        super().__init__(id=id)
        self.label_title = label_title
        self._source: PageSource | None = None
        self._count = 0
        self._pages: OrderedDict[int, list[Row]] = OrderedDict()
        self._index_width = 5
        self._label_width = 8
        self.pages_read = 0

    # -- data -----------------------------------------------------------------------------------------------
    def set_source(self, source: PageSource | None, *, index_width: int = 5, label_width: int = 8) -> None:
        """Show ``source`` from its first row; ``None`` empties the table."""
        self._source = source
        self._count = len(source) if source is not None else 0
        self._pages.clear()
        self._index_width = max(index_width, 1)
        self._label_width = max(label_width, len(self.label_title)) if label_width else 0
        self.virtual_size = Size(self.size.width, self._count + 1)
        self.scroll_to(y=0, animate=False, immediate=True)
        self.cursor = 0
        self.refresh()

    @property
    def row_count(self) -> int:
        return self._count

    def row_at(self, position: int) -> Row | None:
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

    # -- drawing --------------------------------------------------------------------------------------------
    def _cells(self, index: str, label: str, text: str, width: int) -> list[tuple[str, str]]:
        text_width = width - self._index_width - 1 - (self._label_width + 1 if self._label_width else 0)
        cells = [(index.rjust(self._index_width) + " ", "paged-table--index")]
        if self._label_width:
            cells.append((fit(label, self._label_width) + " ", "paged-table--label"))
        cells.append((fit(text, max(text_width, 0)), ""))
        return cells

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        base = self.rich_style
        if y == 0:
            style = base + self.get_component_rich_style("paged-table--header")
            cells = self._cells("#", self.label_title, "text", width)
            return Strip([Segment("".join(c for c, _ in cells), style)], width).crop_extend(0, width, style)
        position = round(self.scroll_offset.y) + y - 1
        row = self.row_at(position)
        if row is None:
            return Strip.blank(width, base)
        line_style = base
        if position == self.cursor:
            line_style = base + self.get_component_rich_style("paged-table--cursor")
        segments = []
        for text, component in self._cells(str(row.index), row.label, row.preview, width):
            style = line_style
            if component and position != self.cursor:
                style = line_style + self.get_component_rich_style(component)
            segments.append(Segment(text, style))
        return Strip(segments).crop_extend(0, width, line_style)

    def on_resize(self) -> None:
        self.virtual_size = Size(self.size.width, self._count + 1)

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

    def on_click(self, event: Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y == 0:
            return
        position = round(self.scroll_offset.y) + offset.y - 1
        if 0 <= position < self._count:
            if position == self.cursor and event.chain >= 2:
                self.action_open()
            self.cursor = position
