"""The workbench's dialogs: the quit question asked during a run, and the list of keys."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Static


class ConfirmQuit(ModalScreen[str | None]):
    """Asked when quitting during a run: "leave" it training, "stop" it (it saves), or None to stay."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("l", "answer('leave')", "Leave it training"),
        Binding("s", "answer('stop')", "Stop, save and quit"),
        Binding("escape,c", "answer(None)", "Cancel"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-dialog"):
            yield Static("A run is in progress.", classes="panel-title")
            yield Static(
                "Quit the workbench? The run can train on without it (tunebench attach shows it again), or stop at "
                "its next step and save what it has."
            )
            with Horizontal(id="confirm-buttons"):
                yield Button("Leave running (l)", variant="primary", id="confirm-leave")
                yield Button("Stop, save (s)", variant="error", id="confirm-stop")
                yield Button("Cancel (Esc)", id="confirm-cancel")

    def on_mount(self) -> None:
        self.query_one("#confirm-leave", Button).focus()

    def action_answer(self, answer: str | None) -> None:
        self.dismiss(answer)

    @on(Button.Pressed)
    def _on_button(self, event: Button.Pressed) -> None:
        self.dismiss({"confirm-leave": "leave", "confirm-stop": "stop"}.get(event.button.id or ""))


class HelpScreen(ModalScreen[None]):
    """Every key binding: global ones, each panel's, and the sample view's."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,f1,question_mark,q", "dismiss", "Close"),
    ]

    def __init__(self, rows: list[tuple[str, str, str]]) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        with Vertical(id="help-dialog"):
            yield Static("Keys  (Esc closes; ctrl+p searches every action)", classes="panel-title")
            yield DataTable[str](id="help-table", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("key", "action", "where")
        for where, key, description in self.rows:
            table.add_row(key, description, where)
        table.focus()
