"""Config panel: every RunConfig field, grouped by section, edited in place and validated by the engine."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args, get_origin, get_type_hints

import yaml
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.events import DescendantFocus
from textual.message import Message
from textual.suggester import Suggester
from textual.widget import Widget
from textual.widgets import Input, Label, Select, Static

from engine.config import (
    SECTIONS,
    RunConfig,
    field_docs,
    load_config,
    parse_yaml,
    save_config,
    unwrap_optional,
    validate_field,
)
from engine.errors import ConfigError, UserError
from engine.runs import CONFIG_FILE as RUN_CONFIG_FILE
from engine.runs import EVENTS_FILE
from tui.panels import PANELS
from tui.widgets.fixed_text import FixedText

TITLE = PANELS["config"][1]
REMOTE_CODE_PATH = "model.trust_remote_code"
#: Beside the field while it is on: the model's own Python code will run on this machine.
REMOTE_CODE_NOTE = "⚠ ON: runs code from the model's repo"


@dataclass(frozen=True)
class FieldSpec:
    """One editable config field."""

    path: str
    section: str
    name: str
    kind: Any  # the annotation without Optional
    optional: bool
    choices: tuple[str, ...] | None
    doc: str

    @property
    def widget_id(self) -> str:
        return "field-" + self.path.replace(".", "--")


def is_run_record(path: Path) -> bool:
    """Whether ``path`` is a run folder's config.yaml: what the run trained with, never to be overwritten."""
    return path.name == RUN_CONFIG_FILE and (path.parent / EVENTS_FILE).exists()


def field_specs() -> list[FieldSpec]:
    """Every field of RunConfig in declaration order: top-level keys first, then each section."""
    docs = field_docs()
    specs: list[FieldSpec] = []

    def add(cls: type, section: str) -> None:
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if section == "" and f.name in SECTIONS:
                continue
            kind, optional = unwrap_optional(hints[f.name])
            choices: tuple[str, ...] | None = None
            if get_origin(kind) is Literal:
                choices = tuple(str(c) for c in get_args(kind))
            elif kind is bool:
                choices = ("null", "true", "false") if optional else ("true", "false")
            path = f"{section}.{f.name}" if section else f.name
            specs.append(FieldSpec(path, section, f.name, kind, optional, choices, docs.get(path, "")))

    add(RunConfig, "")
    for name, cls in SECTIONS.items():
        add(cls, name)
    return specs


def get_value(cfg: RunConfig, path: str) -> Any:
    section, _, name = path.partition(".")
    return getattr(getattr(cfg, section), name) if name else getattr(cfg, section)


def format_value(value: Any) -> str:
    """How a value is shown in its editor; null is an empty field."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # a block of keys (model.lora): one line
        return yaml.safe_dump(dataclasses.asdict(value), default_flow_style=True, sort_keys=False, width=2**16).strip()
    return str(value)


def parse_text(spec: FieldSpec, text: str) -> Any:
    """The value an editor's text means: empty is null; strings are taken as typed; numbers are YAML scalars."""
    if get_origin(spec.kind) is list:
        return text.strip() or []  # the engine splits "a, b"
    if not text.strip():
        return None
    if spec.choices is not None and spec.kind is bool:
        return None if text == "null" else text == "true"
    if spec.kind is str or spec.choices is not None:
        return text.strip()
    return parse_yaml(text, spec.path)


class PathSuggester(Suggester):
    """Completes file-system paths: folders and YAML files."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        if not value:
            return None
        path = Path(os.path.expanduser(value))
        folder, stem = (path, "") if value.endswith(os.sep) else (path.parent, path.name)
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            return None
        for entry in entries:
            candidate = entry.name.startswith(stem) and entry.name != stem and not entry.name.startswith(".")
            if candidate and (entry.is_dir() or entry.suffix in (".yaml", ".yml")):
                return value + entry.name[len(stem) :] + (os.sep if entry.is_dir() else "")
        return None


class ChoiceSuggester(Suggester):
    """Completes from choices that change while the form is up (the loaded dataset's columns)."""

    def __init__(self, choices: Callable[[], list[str]]) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self.choices = choices

    async def get_suggestion(self, value: str) -> str | None:
        return next((c for c in self.choices() if c.startswith(value) and c != value), None)


#: Fields that name a column of the dataset.
COLUMN_FIELDS = ("data.text_field", "data.label_field")


class ConfigPanel(Vertical):
    """Edit the run config; each change goes through ``engine.config.validate_field``."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Save", tooltip="Save the form to the YAML file named above it"),
        Binding("ctrl+l", "load", "Load", tooltip="Load the YAML file named above the form"),
        Binding("ctrl+r", "reset", "Reset", tooltip="Reset the form to the file it was loaded from"),
        Binding("Q", "queue", "Queue", tooltip="Add the config in the form to the run queue (Q in Runs starts it)"),
    ]

    class Changed(Message):
        """The valid config changed, or the form became valid or invalid."""

        def __init__(self, config: RunConfig, valid: bool, paths: tuple[str, ...]) -> None:
            super().__init__()
            self.config = config
            self.valid = valid
            self.paths = paths

    def __init__(self, cfg: RunConfig, path: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.specs = field_specs()
        self.by_path = {s.path: s for s in self.specs}
        self.by_widget = {s.widget_id: s for s in self.specs}
        self.file_config = cfg
        self.config = cfg
        self.path = path
        #: Field path -> (the value the user typed, the engine's message about it).
        self.errors: dict[str, tuple[Any, str]] = {}
        self.form_built = False
        self._focus_pending: str | None = None
        #: The source the Data panel loaded last, and its columns (see ``column_choices``).
        self._columns: tuple[str, list[str]] = ("", [])
        self._column_suggester = ChoiceSuggester(self.column_choices)

    @property
    def is_valid(self) -> bool:
        return not self.errors

    # -- layout ---------------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield FixedText(TITLE, id="config-title", classes="panel-title")
        with Horizontal(id="config-file", classes="controls"):
            yield Label("file ", classes="field-key-short")
            yield Input(self.path, suggester=PathSuggester(), compact=True, id="config-path")
        yield Static("", id="config-status")
        yield VerticalScroll(id="config-form")
        yield FixedText("", id="config-help", classes="hint")

    def _form_widgets(self) -> list[Widget]:
        widgets: list[Widget] = []
        section = None
        for spec in self.specs:
            if spec.section != section:
                section = spec.section
                widgets.append(Static(section or "run", classes="section-title"))
            pending = self.errors.get(spec.path)
            value = pending[0] if pending else get_value(self.config, spec.path)
            key = Label(self._key_text(spec, False), classes="field-key", id=f"key-{spec.widget_id}")
            row = [key, self._editor(spec, value)]
            if spec.path == REMOTE_CODE_PATH:
                row.append(Static("", classes="field-note warning", id="remote-code-note"))
            widgets.append(Horizontal(*row, classes="field-row", id=f"row-{spec.widget_id}"))
            error = Static("", classes="field-error", id=f"err-{spec.widget_id}")
            error.display = False
            widgets.append(error)
        return widgets

    def _editor(self, spec: FieldSpec, value: Any) -> Widget:
        if spec.choices is not None:
            return Select[str](
                [(c, c) for c in spec.choices],
                value=format_value(value) or "null",  # an optional field's null is a choice of its own
                allow_blank=False,
                compact=True,
                id=spec.widget_id,
                classes="field-editor",
            )
        placeholder = "null" if spec.optional else ""
        return Input(
            format_value(value),
            placeholder=placeholder,
            suggester=self._column_suggester if spec.path in COLUMN_FIELDS else None,
            compact=True,
            id=spec.widget_id,
            classes="field-editor",
        )

    @staticmethod
    def _key_text(spec: FieldSpec, changed: bool) -> str:
        return ("● " if changed else "  ") + spec.name

    def on_mount(self) -> None:
        self.query_one("#config-status").display = False
        self._refresh_marks()
        # The form is about a hundred widgets; build it after the first frame so start-up does not wait for it.
        self.call_after_refresh(self._build_form)

    async def _build_form(self) -> None:
        await self.query_one("#config-form", VerticalScroll).mount_all(self._form_widgets())
        if not self.query(f"#key-{self.specs[0].widget_id}"):
            return  # the app closed before the form was up
        self.form_built = True
        for path, (_value, message) in self.errors.items():
            self._show_error(path, message)
        self._refresh_marks()
        # The focus asked for before the form existed, unless the user has moved to another panel since (its
        # pane is hidden then; the panel's next showing focuses it).
        if self._focus_pending is not None and self.parent is not None and self.parent.display:
            self.focus_field(self._focus_pending)

    def focus_main(self) -> None:
        focused = self.app.focused
        if focused is None or self not in focused.ancestors:
            self.focus_field(self.specs[0].path)

    def focus_field(self, path: str) -> None:
        if not self.form_built:
            self._focus_pending = path
            return
        self._focus_pending = None
        self.query_one(f"#{self.by_path[path].widget_id}").focus()

    # -- editing --------------------------------------------------------------------------------------------
    @on(Input.Changed, ".field-editor")
    def _on_input(self, event: Input.Changed) -> None:
        assert event.input.id is not None
        self._edit(self.by_widget[event.input.id], event.value)

    @on(Select.Changed, ".field-editor")
    def _on_select(self, event: Select.Changed) -> None:
        assert event.select.id is not None
        if isinstance(event.value, str):
            self._edit(self.by_widget[event.select.id], event.value)

    def _edit(self, spec: FieldSpec, text: str) -> None:
        try:
            value = parse_text(spec, text)
        except ConfigError as exc:
            self._set_error(spec.path, text, exc.message)
            self._after_edit((spec.path,))
            return
        if spec.path not in self.errors and value == get_value(self.config, spec.path):
            return  # an editor reporting the value it already shows (mount, programmatic fill)
        self.set_field(spec.path, value)

    def set_field(self, path: str, value: Any) -> None:
        """Validate ``path = value`` against the current config; keep it or show the engine's message."""
        before = self.config
        try:
            self.config = validate_field(self.config, path, value)
            self.errors.pop(path, None)
            self._show_error(path, None)
        except ConfigError as exc:
            message = exc.message if exc.path in (path, "") else str(exc)
            self._set_error(path, value, message)
        # A fix here can make a field that failed next to it valid again (eval_split vs eval_fraction).
        progress = True
        while progress and self.errors:
            progress = False
            for other, (pending, _message) in list(self.errors.items()):
                try:
                    self.config = validate_field(self.config, other, pending)
                except ConfigError:
                    continue
                del self.errors[other]
                self._show_error(other, None)
                progress = True
        changed = tuple(s.path for s in self.specs if get_value(before, s.path) != get_value(self.config, s.path))
        self._after_edit(changed)

    def _set_error(self, path: str, value: Any, message: str) -> None:
        self.errors[path] = (value, message)
        self._show_error(path, message)

    def _show_error(self, path: str, message: str | None) -> None:
        if not self.form_built:
            return
        spec = self.by_path[path]
        err = self.query_one(f"#err-{spec.widget_id}", Static)
        err.update(Content(f"  ✗ {message}") if message else "")
        err.display = message is not None
        self.query_one(f"#row-{spec.widget_id}").set_class(message is not None, "-invalid")
        if message is not None:
            err.scroll_visible(animate=False)

    def _after_edit(self, changed: tuple[str, ...]) -> None:
        self._refresh_marks()
        self.post_message(self.Changed(self.config, self.is_valid, changed))

    def differs_from_file(self) -> list[str]:
        """Paths whose current value differs from the loaded file (pending invalid edits count)."""
        out = []
        for spec in self.specs:
            current = self.errors[spec.path][0] if spec.path in self.errors else get_value(self.config, spec.path)
            if current != get_value(self.file_config, spec.path):
                out.append(spec.path)
        return out

    def _refresh_marks(self) -> None:
        differs = set(self.differs_from_file())
        for spec in self.specs if self.form_built else ():
            changed = spec.path in differs
            key = self.query_one(f"#key-{spec.widget_id}", Label)
            key.update(self._key_text(spec, changed))
            self.query_one(f"#row-{spec.widget_id}").set_class(changed, "-changed")
        if self.form_built:
            note = self.query_one("#remote-code-note", Static)
            note.update(Content(REMOTE_CODE_NOTE))
            note.display = self.config.model.trust_remote_code
        state = f"{len(self.errors)} invalid" if self.errors else "valid"
        changes = f"{len(differs)} changed from file" if differs else "as in file"
        origin = f" · from {self.config.output.parent}" if self.config.output.parent else ""
        self.query_one("#config-title", Static).update(Content(f"{TITLE} · {self.path}{origin} · {changes} · {state}"))

    @on(DescendantFocus)
    def _show_help(self, event: DescendantFocus) -> None:
        self._render_help(self.by_widget.get(event.widget.id or ""))

    def _render_help(self, spec: FieldSpec | None) -> None:
        help_text = f"{spec.path}: {spec.doc}" if spec else "ctrl+l loads this file, ctrl+s saves the form to it"
        if spec is not None and spec.path in COLUMN_FIELDS and self.column_choices():
            help_text += f" Columns: {', '.join(self.column_choices())} (→ completes)"
        self.query_one("#config-help", Static).update(Content(help_text))

    def column_choices(self) -> list[str]:
        """The columns of the config's dataset, once the Data panel has loaded it; else none."""
        source, columns = self._columns
        return columns if source == self.config.data.source else []

    def set_columns(self, source: str, columns: list[str]) -> None:
        """Offer these columns in the column fields while the config's source is ``source``."""
        self._columns = (source, columns)
        focused = self.by_widget.get(self.screen.focused.id or "") if self.screen.focused else None
        if focused is not None and focused.path in COLUMN_FIELDS:
            self._render_help(focused)

    # -- file -----------------------------------------------------------------------------------------------
    def _status(self, text: str, error: bool = False) -> None:
        status = self.query_one("#config-status", Static)
        status.update(Content(text))
        status.set_class(error, "error")
        status.display = bool(text)

    def _fill(self, cfg: RunConfig) -> None:
        if not self.form_built:
            self.errors.clear()
            return
        with self.prevent(Input.Changed, Select.Changed):
            for spec in self.specs:
                widget = self.query_one(f"#{spec.widget_id}")
                text = format_value(get_value(cfg, spec.path))
                if isinstance(widget, Select):
                    widget.value = text or "null"
                elif isinstance(widget, Input):
                    widget.value = text
        for path in list(self.errors):
            self._show_error(path, None)
        self.errors.clear()

    def load_path(self, path: str) -> bool:
        """Load a YAML config into the form; False (with the message shown) when it cannot be used."""
        try:
            cfg = load_config(path)
        except ConfigError as exc:
            self._status(str(exc), error=True)
            return False
        before = self.config
        self.path = path
        self.query_one("#config-path", Input).value = path
        self.file_config = cfg
        self.config = cfg
        self._fill(cfg)
        self._status(f"loaded {path}")
        changed = tuple(s.path for s in self.specs if get_value(before, s.path) != get_value(cfg, s.path))
        self._after_edit(changed)
        return True

    def clone_run(self, run_dir: Path) -> bool:
        """Start a new config from a run's: ``output.parent`` names the run (the new run records it), and it
        leaves any sweep. False (with the message shown) when the run's config cannot be loaded."""
        if not self.load_path(str(run_dir / RUN_CONFIG_FILE)):
            return False
        output = dataclasses.replace(self.config.output, parent=run_dir.name, sweep=None)
        self.config = dataclasses.replace(self.config, output=output)
        self._fill(self.config)
        self._status(f"from {run_dir.name}: edit, then s on the Train panel starts the new run")
        self._after_edit(("output.parent", "output.sweep"))
        return True

    def action_load(self) -> None:
        self.load_path(self.query_one("#config-path", Input).value.strip())

    def action_save(self) -> None:
        if self.errors:
            first = next(iter(self.errors))
            self._status(f"not saved: fix {first} first ({self.errors[first][1]})", error=True)
            return
        path = self.query_one("#config-path", Input).value.strip()
        if is_run_record(Path(path)):
            self._status(
                f"not saved: {path} is the record of run {Path(path).parent.name}; name a new file above "
                "(e.g. sample_configs/my-run.yaml)",
                error=True,
            )
            return
        try:
            save_config(self.config, path)
        except OSError as exc:
            self._status(f"cannot save to {path} ({exc.strerror}); pick another path", error=True)
            return
        self.path = path
        self.file_config = self.config
        self._status(f"saved {path}")
        self._refresh_marks()

    def action_queue(self) -> None:
        from engine import queue

        if self.errors:
            first = next(iter(self.errors))
            self._status(f"not queued: fix {first} first ({self.errors[first][1]})", error=True)
            return
        changed = [f"{path}={format_value(get_value(self.config, path))}" for path in self.differs_from_file()]
        label = " ".join([Path(self.path).name, *changed])
        runs_dir = self.config.output.runs_dir
        try:
            entry = queue.add(runs_dir, self.config, label)
            waiting = sum(e.state == queue.QUEUED for e in queue.list_queue(runs_dir))
            runner = queue.runner_state(runs_dir)
        except (ConfigError, UserError) as exc:
            self._status(f"not queued: {exc}", error=True)
            return
        then = "the queue runner starts it in turn" if runner else "Q in the Runs panel (F6) starts the queue runner"
        self._status(f"queued #{entry.id} in {runs_dir}/ ({waiting} waiting); {then}")

    def action_reset(self) -> None:
        before = self.config
        self.config = self.file_config
        self._fill(self.file_config)
        self._status(f"reset to {self.path}")
        changed = tuple(s.path for s in self.specs if get_value(before, s.path) != get_value(self.config, s.path))
        self._after_edit(changed)
