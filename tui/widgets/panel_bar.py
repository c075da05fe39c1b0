"""The workbench's shell: a line of panel names over five panes, one of which is on show.

Textual's ``TabbedContent`` puts each panel three containers down (tabbed content, content switcher, tab pane),
under a tab bar of a widget per tab, their row and an underline. On every panel key each of those widgets took
its own messages and drew its own lines, time the UI thread spent before the new panel showed
(docs/perf-log.md, cause 36). Here the names are one line of text and the panes sit right under the screen.
"""

from __future__ import annotations

import contextlib
from typing import ClassVar

from textual import events
from textual.app import RenderResult
from textual.containers import Container
from textual.content import Content, Span
from textual.dom import NoScreen
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget


class PanelBar(Widget):
    """The panels' names with their keys; the one on show is marked. A click on a name asks for its panel."""

    DEFAULT_CSS = """
    PanelBar {
        height: 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    PanelBar > .panel-bar--name {
        color: $text-muted;
    }
    PanelBar > .panel-bar--active {
        color: $foreground;
        text-style: bold underline;
    }
    """
    COMPONENT_CLASSES: ClassVar[set[str]] = {"panel-bar--name", "panel-bar--active"}
    ALLOW_SELECT = False

    #: The pane on show; a change redraws this line only.
    active: reactive[str] = reactive("")

    class Picked(Message):
        """A panel's name was clicked."""

        def __init__(self, panel: str) -> None:
            super().__init__()
            self.panel = panel

    def __init__(self, names: dict[str, str], active: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.names = names
        self.set_reactive(PanelBar.active, active)
        #: Where each name sits on the line: (first column, end column, panel), for clicks.
        self._spans: list[tuple[int, int, str]] = []

    def render(self) -> RenderResult:
        name_style = self.get_visual_style("panel-bar--name")
        active_style = self.get_visual_style("panel-bar--active")
        text, spans, self._spans = " ", [], []
        for panel, name in self.names.items():
            start = len(text)
            text += name
            spans.append(Span(start, len(text), active_style if panel == self.active else name_style))
            self._spans.append((start, len(text), panel))
            text += "  "
        return Content(text, spans)

    def on_click(self, event: events.Click) -> None:
        for start, end, panel in self._spans:
            if start <= event.x < end:
                self.post_message(self.Picked(panel))
                return


def focus_now(widget: Widget) -> None:
    """Focus ``widget`` in this turn. ``Widget.focus`` waits for the app's next turn, behind the keys already
    queued: the letters typed right after F3 or / went to the field being left (a hidden panel's)."""
    with contextlib.suppress(NoScreen):  # not mounted (yet, or any more)
        widget.screen.set_focus(widget)


class Pane(Container):
    """One panel's place under the screen; only the pane on show is displayed."""

    class FocusStrayed(Message):
        """A widget in a pane that is not on show took the focus."""

    DEFAULT_CSS = """
    Pane {
        height: 1fr;
    }
    """

    def _on_descendant_focus(self, event: events.DescendantFocus) -> None:
        # Focus is set a little after it is asked for: a panel's late focus (a form built after the user moved
        # on, a load finishing, the focus of a panel key that a later key superseded) lands in a hidden pane.
        if not self.display:
            self.post_message(self.FocusStrayed())
