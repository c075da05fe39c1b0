"""A footer that rebuilds its keys only when the keys it shows change.

Textual's ``Footer`` recomposes all of its key widgets on every bindings signal: each focus change and each
``refresh_bindings`` call, several per panel switch, even when the same keys stay on screen. That work runs
on the UI thread beside a training run. This one coalesces the signals of a frame into one check and
recomposes only when the shown keys (key, label, enabled) differ from what is on screen.
"""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer


class WorkbenchFooter(Footer):
    def __init__(self, *, compact: bool = False, id: str | None = None) -> None:
        super().__init__(compact=compact, id=id)
        self._shown: tuple[tuple[str, str, str, bool], ...] | None = None
        self._check_pending = False

    def shown_keys(self) -> tuple[tuple[str, str, str, bool], ...]:
        """What ``compose`` would show: (key, action, description, enabled) of each visible binding."""
        return tuple(
            (binding.key, binding.action, binding.description, enabled)
            for (_node, binding, enabled, _tooltip) in self.screen.active_bindings.values()
            if binding.show or binding.key == self.app.COMMAND_PALETTE_BINDING
        )

    def bindings_changed(self, screen: Screen[object]) -> None:
        self._bindings_ready = True
        if not screen.app.app_focus or not self.is_attached or screen is not self.screen or self._check_pending:
            return
        self._check_pending = True
        self.call_after_refresh(self._recompose_if_changed)

    async def _recompose_if_changed(self) -> None:
        self._check_pending = False
        if not self.is_attached:
            return
        shown = self.shown_keys()
        if shown != self._shown:
            self._shown = shown
            await self.recompose()
