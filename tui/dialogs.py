"""The workbench's dialogs: the quit question asked during a run, the list of keys, and where to export a run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Static

from tui.widgets.in_order_input import InOrderInput

if TYPE_CHECKING:
    from rich.console import Group


class ConfirmQuit(ModalScreen[str | None]):
    """Asked when quitting during a run: "leave" it training, "stop" it (it saves), or None to stay."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("l", "answer('leave')", "Leave it training"),
        Binding("s", "answer('stop')", "Stop, save and quit"),
        Binding("escape,c", "answer(None)", "Cancel"),
    ]

    def __init__(self, *, paused: bool = False) -> None:
        super().__init__()
        self.paused = paused

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-dialog"):
            if self.paused:
                yield Static("A run is paused.", classes="panel-title")
                yield Static(
                    "Quit the workbench? The run can stay paused without it (tunebench attach shows it again, "
                    "tunebench resume resumes it), or stop and save what it has."
                )
            else:
                yield Static("A run is in progress.", classes="panel-title")
                yield Static(
                    "Quit the workbench? The run can train on without it (tunebench attach shows it again), or stop "
                    "at its next step and save what it has."
                )
            with Horizontal(id="confirm-buttons"):
                leave = "Leave paused (l)" if self.paused else "Leave running (l)"
                yield Button(leave, variant="primary", id="confirm-leave")
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
    """Every key binding, under where it acts: global ones, each panel's, the sample view's. Long actions wrap,
    so nothing hides past the right edge at 80 columns."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,f1,question_mark,q", "dismiss", "Close"),
    ]

    def __init__(self, rows: list[tuple[str, str, str]]) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        with Vertical(id="help-dialog"):
            yield Static("Keys  (Esc closes; ctrl+p searches every action)", classes="panel-title")
            with VerticalScroll(id="help-keys"):
                yield Static(self.key_table())

    def key_table(self) -> Group:
        """A heading per place, and under it a grid of its keys, aligned across places."""
        from rich.console import Group
        from rich.table import Table  # here: the help is opened rarely, and the workbench loads this module
        from rich.text import Text

        places: dict[str, list[tuple[str, str]]] = {}
        for where, key, description in self.rows:
            places.setdefault(where, []).append((key, description))
        key_width = max(len(key) for _where, key, _what in self.rows)
        parts: list[Text | Table] = []
        for where, keys in places.items():
            parts.append(Text(("\n" if parts else "") + where, style="bold underline"))
            grid = Table.grid(padding=(0, 2), expand=True)
            grid.add_column(no_wrap=True, min_width=key_width)
            grid.add_column(ratio=1)
            for key, description in keys:
                grid.add_row(Text(key, style="bold"), Text(description))  # Text: "[" in a key is not markup
            parts.append(grid)
        return Group(*parts)

    def on_mount(self) -> None:
        self.query_one("#help-keys").focus()


@dataclass(frozen=True)
class ExportChoice:
    """Where the Runs panel's export writes a run's model, and how."""

    out: str
    merge: bool
    force: bool


class ExportScreen(ModalScreen[ExportChoice | None]):
    """Asks where to export a run's model (``tunebench export``): the folder, whether to merge a LoRA adapter
    into its base, and whether to replace a model already there. An export that failed opens it again with the
    same answers (``choice``) and why (``error``), to fix the one at fault."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "Cancel", tooltip="Close without exporting"),
        # priority: on a checkbox too, whose own enter would tick it (space does that)
        Binding("enter", "export", "Export", priority=True, tooltip="Export with the answers given"),
    ]

    def __init__(self, run_name: str, *, adapter: bool, choice: ExportChoice | None = None, error: str = "") -> None:
        super().__init__()
        self.run_name = run_name
        self.adapter = adapter
        self.choice = choice or ExportChoice(str(Path("exports") / run_name), merge=adapter, force=False)
        self.error = error

    def compose(self) -> ComposeResult:
        with Vertical(id="export-dialog"):
            yield Static(f"Export {self.run_name}", classes="panel-title")
            yield Static("A Hugging Face model folder that transformers.pipeline loads without Tunebench.")
            yield InOrderInput(self.choice.out, id="export-out")
            yield Checkbox(
                "merge the LoRA adapter into its base (a standalone model)", self.choice.merge, id="export-merge"
            )
            yield Checkbox("replace the model already there", self.choice.force, id="export-force")
            yield Static(self.error, id="export-error", classes="error")
            yield Static("enter exports · tab moves · esc cancels", classes="hint")

    def on_mount(self) -> None:
        self.query_one("#export-merge", Checkbox).display = self.adapter
        self.query_one("#export-error", Static).display = bool(self.error)
        self.query_one("#export-out", Input).focus()

    def action_export(self) -> None:
        out = self.query_one("#export-out", Input).value.strip()
        if not out:
            return
        merge = self.adapter and self.query_one("#export-merge", Checkbox).value
        self.dismiss(ExportChoice(out, merge, self.query_one("#export-force", Checkbox).value))
