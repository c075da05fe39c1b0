"""The workbench's tabbed panels: the panel on show changes only when the user asks for another one."""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.message import Message
from textual.widgets import TabbedContent, TabPane


class PanelTabs(TabbedContent):
    """A ``TabbedContent`` whose pane changes through ``active`` (a panel key, a tab click) and nothing else.

    Textual's ``TabbedContent`` shows the pane of any widget that gets the focus. Focus is set a little after it
    is asked for, so a panel's late focus (a form built after the user moved on, a load finishing, the focus of
    a panel key that a later key superseded) took the view back to that panel. Here a focus that lands in a pane
    not on show changes nothing but posts ``FocusStrayed``, so the app can put the focus back where the user is.
    """

    @dataclass
    class FocusStrayed(Message):
        """A widget in a pane that is not on show took the focus; ``active`` is the pane on show."""

        active: str

    @on(TabPane.Focused)
    def _keep_the_pane_on_show(self, event: TabPane.Focused) -> None:
        event.stop()
        event.prevent_default()  # skips TabbedContent's own handler, which would show the focused pane
        if event.tab_pane.id != self.active:
            self.post_message(self.FocusStrayed(self.active))
