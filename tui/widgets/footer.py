"""The footer: the keys that apply where the focus is, drawn as one line of text.

Textual's ``Footer`` is a widget per key and recomposes them all on every bindings signal: each focus change
and each ``refresh_bindings`` call, several per panel switch, time the UI thread spends before the switch
shows (docs/perf-log.md, cause 10). This footer shows the same
entries (the first binding of each action that is shown, the command palette key at the right end), redraws
only when they change, and presses an entry's key when it is clicked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual import events
from textual.app import RenderResult
from textual.content import Content, Span
from textual.screen import Screen
from textual.style import Style
from textual.widget import Widget


@dataclass(frozen=True)
class Entry:
    key: str
    key_display: str
    description: str
    enabled: bool


class WorkbenchFooter(Widget):
    DEFAULT_CSS = """
    WorkbenchFooter {
        dock: bottom;
        height: 1;
        color: $footer-foreground;
        background: $footer-background;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    WorkbenchFooter > .footer--key {
        color: $footer-key-foreground;
        background: $footer-key-background;
        text-style: bold;
    }
    WorkbenchFooter > .footer--description {
        color: $footer-description-foreground;
        background: $footer-description-background;
    }
    WorkbenchFooter > .footer--separator {
        color: $foreground 20%;
    }
    """
    COMPONENT_CLASSES: ClassVar[set[str]] = {"footer--key", "footer--description", "footer--separator"}
    ALLOW_SELECT = False

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.entries: tuple[Entry, ...] = ()
        self.palette: Entry | None = None
        #: Where each entry sits on the line: (first column, end column, entry), for clicks.
        self._spans: list[tuple[int, int, Entry]] = []
        self._check_pending = False

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self.bindings_changed)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def bindings_changed(self, screen: Screen[object]) -> None:
        """Coalesce the signals of a frame into one check after it."""
        if not self.is_attached or screen is not self.screen or self._check_pending:
            return
        self._check_pending = True
        self.call_after_refresh(self._update_if_changed)

    def _update_if_changed(self) -> None:
        self._check_pending = False
        if not self.is_attached:
            return
        entries, palette = self.shown_entries()
        if (entries, palette) != (self.entries, self.palette):
            self.entries, self.palette = entries, palette
            self.refresh()

    def shown_entries(self) -> tuple[tuple[Entry, ...], Entry | None]:
        """The entries Textual's footer would show, and the command palette's."""
        app = self.app
        seen: set[str] = set()
        entries: list[Entry] = []
        palette: Entry | None = None
        for _node, binding, enabled, _tooltip in self.screen.active_bindings.values():
            entry = Entry(binding.key, app.get_key_display(binding), binding.description, enabled)
            if binding.key == app.COMMAND_PALETTE_BINDING and app.ENABLE_COMMAND_PALETTE:
                palette = entry
            elif binding.show and binding.action not in seen:
                seen.add(binding.action)
                entries.append(entry)
        return tuple(entries), palette

    def render(self) -> RenderResult:
        key_style = self.get_visual_style("footer--key")
        text_style = self.get_visual_style("footer--description")
        separator_style = self.get_visual_style("footer--description", "footer--separator")
        parts: list[str] = []
        spans: list[Span] = []
        self._spans = []
        column = 0

        def add(text: str, style: Style | str) -> None:
            nonlocal column
            parts.append(text)
            spans.append(Span(column, column + len(text), style))
            column += len(text)

        def add_entry(entry: Entry) -> None:
            start = column
            add(entry.key_display, key_style)
            add(f" {entry.description}", text_style)
            if not entry.enabled:
                spans.append(Span(start, column, "dim"))
            self._spans.append((start, column, entry))

        width = self.size.width
        palette = self.palette
        palette_width = len(palette.key_display) + len(palette.description) + 2 if palette else 0  # "▏^p palette"
        room = width - palette_width - 1  # the palette key keeps its place at the right end, after a space
        for entry in self.entries:
            if column + len(entry.key_display) + len(entry.description) + 2 > room:
                break  # the entries that do not fit give way; F1 lists every key
            add(" ", text_style)
            add_entry(entry)
        if palette is not None and column + 1 + palette_width <= width:
            add(" " * (width - palette_width - column), text_style)
            add("▏", separator_style)
            add_entry(palette)
        return Content("".join(parts), spans)

    def on_click(self, event: events.Click) -> None:
        for start, end, entry in self._spans:
            if start <= event.x < end:
                if entry.enabled:
                    self.app.simulate_key(entry.key)
                else:
                    self.app.bell()
                return
