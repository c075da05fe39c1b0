"""Every key of the workbench, read from one source, the bindings: the help screen's rows and the palette.

A binding's ``description`` is its short footer label and its ``tooltip`` the sentence the help screen and the
command palette show. The only keys listed here by hand are those that widgets handle themselves.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textual.actions import parse as parse_action
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen

if TYPE_CHECKING:
    from tui.app import WorkbenchApp
    from tui.widgets.paged_table import PagedTable

#: (where, key, what) for keys that Textual's widgets handle on their own, with no binding of ours.
WIDGET_KEYS = (
    ("Config", "→", "Accept the path completion in the file field"),
    ("Config", "↑, ↓, tab, shift+tab", "Edit the field above or below"),
    ("Config", "pgup, pgdn", "Edit the field ten above or below"),
    ("Config", "←, →, a letter", "Step through a choice field's values, or pick one by its first letter"),
    ("Predict", "⏎", "Predict the text in the input"),
)


#: Where space acts: Train, and any panel while a run trains or is paused.
RUN_GOING = "Train, or any panel while a run goes"
#: Where x stops the run: the same but Runs, where x takes a queued entry off the queue.
STOP_GOING = "Train, or any panel but Runs while a run goes"

#: Bound actions the palette leaves out: the palette itself, and moving the focus (it would move it in the palette).
NOT_COMMANDS = ("command_palette", "app.focus_next", "app.focus_previous", "leave_field")


@dataclass(frozen=True)
class KeyPlace:
    """Where a set of bindings applies; ``panel`` is the panel whose widget runs them (None: the app)."""

    where: str
    bindings: tuple[Binding, ...]
    panel: str | None = None
    #: Offered in the command palette (navigation keys of a table are not commands).
    commands: bool = True


def key_places(app: App[Any]) -> list[KeyPlace]:
    """Every binding of the workbench, grouped by where it applies; the panels' modules load here."""
    from tui.compare import CompareScreen
    from tui.dialogs import ExportScreen
    from tui.panels.config import ConfigPanel
    from tui.panels.data import DataPanel, SampleScreen, SamplesTable
    from tui.panels.predict import PredictPanel
    from tui.panels.runs import RunsPanel, RunsTable

    everywhere = [
        *_bindings(type(app).BINDINGS),
        *_bindings(App.BINDINGS),
        Binding(
            App.COMMAND_PALETTE_BINDING, "command_palette", "Palette", tooltip="Search every action", priority=True
        ),  # as Textual binds it
        *(b for b in _bindings(Screen.BINDINGS) if b.action.startswith("app.focus")),
    ]
    listed = [b for b in everywhere if b.description or b.tooltip]
    # App bindings that the app's check_action lets act only in some places: the help says where.
    run_keys = {"start": "Train", "toggle_pause": RUN_GOING, "resume_run": RUN_GOING, "stop": STOP_GOING}
    # A dialog or the sample view holds every key but the priority ones (^q, ^p) and the screens' own (tab): the
    # rest act on the panels (the panel keys too, priority to act on arrival, refused over a dialog).
    anywhere = [
        b
        for b in listed
        if b.action not in run_keys
        and ((b.priority and not b.action.startswith("show_panel")) or b.action.startswith("app.focus"))
    ]
    return [
        KeyPlace("everywhere", tuple(anywhere)),
        KeyPlace("every panel", tuple(b for b in listed if b.action not in run_keys and b not in anywhere)),
        *(
            KeyPlace(where, tuple(b for b in listed if run_keys.get(b.action) == where))
            for where in dict.fromkeys(run_keys.values())
        ),
        KeyPlace("Data", _bindings(DataPanel.BINDINGS), "data"),
        KeyPlace("Data table", _table_bindings(SamplesTable), "data", commands=False),
        KeyPlace("Sample view", _bindings(SampleScreen.BINDINGS), commands=False),
        KeyPlace("Config", _bindings(ConfigPanel.BINDINGS), "config"),
        KeyPlace("Predict", _bindings(PredictPanel.BINDINGS), "predict"),
        KeyPlace("Runs", _bindings(RunsPanel.BINDINGS), "runs"),
        KeyPlace("Runs table", _table_bindings(RunsTable), "runs", commands=False),
        KeyPlace("Comparison", _bindings(CompareScreen.BINDINGS), commands=False),
        KeyPlace("Export dialog", _bindings(ExportScreen.BINDINGS), commands=False),
    ]


def _bindings(bindings: Iterable[BindingType]) -> tuple[Binding, ...]:
    return tuple(b for b in bindings if isinstance(b, Binding))


def _table_bindings(table: type[PagedTable[Any]]) -> tuple[Binding, ...]:
    """A table's bindings and its base's, where the table's own replace the base's for the same action."""
    from tui.widgets.paged_table import PagedTable

    by_action = {b.action: b for b in (*_bindings(PagedTable.BINDINGS), *_bindings(table.BINDINGS))}
    return tuple(by_action.values())


def key_text(app: App[Any], binding: Binding) -> str:
    """The binding's keys as the help shows them: ``F2``, ``^s``, ``/``, ``esc, q``."""
    names = []
    for key in binding.key.split(","):
        key = key.strip()
        names.append(key.upper() if re.fullmatch(r"f\d+", key) else app.get_key_display(Binding(key, "")))
    return ", ".join(names)


def what(binding: Binding) -> str:
    return binding.tooltip or binding.description or binding.action


def help_rows(app: App[Any]) -> list[tuple[str, str, str]]:
    """(where, key, what) for every key; bindings of one action in one place share a row."""
    rows: dict[tuple[str, str], tuple[list[str], str]] = {}
    for place in key_places(app):
        for binding in place.bindings:
            rows.setdefault((place.where, binding.action), ([], what(binding)))[0].append(key_text(app, binding))
    listed = [(where, ", ".join(keys), text) for (where, _action), (keys, text) in rows.items()]
    return listed + list(WIDGET_KEYS)


def palette_commands(app: WorkbenchApp) -> Iterator[SystemCommand]:
    """One palette command per bound action; a panel's action shows its panel first."""
    seen: set[tuple[str | None, str]] = set()
    for place in key_places(app):
        if not place.commands:
            continue
        for binding in place.bindings:
            if (place.panel, binding.action) in seen or binding.action in NOT_COMMANDS:
                continue
            seen.add((place.panel, binding.action))
            title = what(binding)
            if place.panel is not None:
                title = f"{place.where}: {title}"
            yield SystemCommand(title, f"{key_text(app, binding)}", _runner(app, place.panel, binding.action))


#: App actions whose key acts on the Train panel alone (WorkbenchApp.check_action): their command shows it first.
ON_TRAIN = ("start",)


def _runner(app: WorkbenchApp, panel: str | None, action: str) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        if panel is None:
            if action in ON_TRAIN:
                app.action_show_panel("train")
            if action.startswith("show_panel("):  # chosen in the palette: acts as asked, a dialog up or not
                _target, _name, params = parse_action(action)
                app.action_show_panel(str(params[0]))
                return
            await app.run_action(action)
            return
        app.action_show_panel(panel)
        await app.run_action(action, app.workbench.query_one(f"#{panel}-panel"))

    return run
