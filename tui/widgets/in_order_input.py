"""An Input whose keys act in the order they were typed."""

from __future__ import annotations

from textual import events
from textual.widgets import Input


class InOrderInput(Input):
    """Textual inserts a printable key when it reaches the focused Input, but runs the Input's own bindings
    (backspace, delete, ←, home, ctrl+w …) only once the key has bubbled back up to the app through each
    ancestor's queue. With the app busy between keys (the Config form validates each edit), a backspace typed
    before a letter could land after it and delete it. Here those bindings act on arrival, in turn with the
    letters; a key that no binding of the Input takes still bubbles up as before."""

    async def _on_key(self, event: events.Key) -> None:
        for binding in self._bindings.key_to_bindings.get(event.key, ()):
            if not binding.priority and await self.app.run_action(binding.action, self):
                event.stop()  # not prevent_default: Input's own handler restarts the cursor's blink
                return
