"""Config panel: every RunConfig field, grouped by section, edited in place and validated by the engine."""

from __future__ import annotations

import dataclasses
import os
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args, get_origin, get_type_hints

import yaml
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content, Span
from textual.events import DescendantFocus
from textual.message import Message
from textual.suggester import Suggester
from textual.widgets import Input, Label, Static

from engine.config import (
    SECTIONS,
    RunConfig,
    config_path,
    field_docs,
    load_config,
    parse_yaml,
    unwrap_optional,
    validate_field,
)
from engine.data import check_source
from engine.errors import ConfigError, DataError, UserError
from engine.files import not_a_folder
from engine.models import resolve_model_path
from engine.presets import save_preset
from engine.runs import CONFIG_FILE as RUN_CONFIG_FILE
from engine.runs import EVENTS_FILE
from tui.panels import PANELS
from tui.widgets.fixed_text import FixedText
from tui.widgets.in_order_input import InOrderInput
from tui.widgets.panel_bar import focus_now

TITLE = PANELS["config"][1]
REMOTE_CODE_PATH = "model.trust_remote_code"
#: Beside the field while it is on: the model's own Python code will run on this machine.
REMOTE_CODE_NOTE = "⚠ ON: runs code from the model's repo"


#: What a status line about the file field waits on: the field changing.
PATH_FIELD = "#config-path"


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


def _is_special(path: str) -> bool:
    """Whether ``path`` is a pipe, a device or a socket; False where it names nothing (load_config says why)."""
    try:
        target = Path(path).expanduser()
        return target.exists() and not target.is_file() and not target.is_dir()
    except (OSError, ValueError, RuntimeError):  # RuntimeError: ~user of no such user
        return False


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


SOURCE = "data.source"
MODEL = "model.name_or_path"


def _path_message(exc: UserError, path: str) -> str:
    return str(exc).removeprefix(f"{path}: ")


def model_problem(name_or_path: str) -> str | None:
    """Why a run could not load ``name_or_path``, as far as the files say: a local folder that is missing or
    holds no model, the bundled alias without its package. A hub id passes (reaching it is the load's)."""
    try:
        resolve_model_path(name_or_path)
    except UserError as exc:
        return _path_message(exc, MODEL)
    return None


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
    """The value an editor's text means: empty is null, and so are "null" and "~" where null is allowed (the
    empty field's placeholder says null); strings are taken as typed; numbers are YAML scalars."""
    if get_origin(spec.kind) is list:
        return text.strip() or []  # the engine splits "a, b"
    if not text.strip() or (spec.optional and text.strip() in ("null", "~")):
        return None
    if spec.choices is not None and text.strip() not in spec.choices:
        raise ConfigError(spec.path, f"expected one of {', '.join(spec.choices)}, got {text.strip()!r}")
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
#: Keys that move the editor to another field, and by how many fields.
MOVES = {"up": -1, "down": 1, "tab": 1, "shift+tab": -1, "pageup": -10, "pagedown": 10}
#: The editor's actions that change its text: off in a choice field, whose values ← and → step through.
EDIT_ACTIONS = frozenset(
    {"delete_left", "delete_right", "delete_left_word", "delete_right_word", "delete_left_all", "delete_right_all"}
    | {"cut", "paste"}
)


class FieldEditor(InOrderInput):
    """The form's one editor, on the field under the form's cursor. Edits, and the keys that move it to another
    field or step through a choice field's values, are handled in the editor's own turn: a key typed right
    after a move edits the field moved to, and an edit is never applied to a field the editor has left."""

    def __init__(self, move: Callable[[int], bool], edit: Callable[[str], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._move = move
        self._edit = edit
        self._loading = False
        #: A choice field's values (← and → step through them); None while the field is typed freely.
        self.choices: tuple[str, ...] | None = None

    def load(self, text: str, choices: tuple[str, ...] | None, suggester: Suggester | None, placeholder: str) -> None:
        """Show a field's value, without reporting it as an edit."""
        self.choices = choices
        self.suggester = suggester
        self.placeholder = placeholder
        self._loading = True
        try:
            self.value = text
        finally:
            self._loading = False
        self.select_all()  # as focus selects it: typing replaces the value, → or end keeps it

    def _watch_value(self, value: str) -> None:
        super()._watch_value(value)
        if not self._loading:
            self._edit(value)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if self.choices is not None and action in EDIT_ACTIONS:
            return False
        return super().check_action(action, parameters)

    async def _on_key(self, event: events.Key) -> None:
        # Input's own handler runs after this one (Textual calls each class's), unless the default is prevented.
        if self.choices and event.key in ("left", "right"):
            self._choose(1 if event.key == "right" else -1)
        elif self.choices and event.is_printable and event.character is not None:
            self._choose(1, event.character.lower())  # a choice is never typed: a letter picks one, as in a menu
        elif not (event.key in MOVES and self._move(MOVES[event.key])):
            return
        event.stop()
        event.prevent_default()

    def _choose(self, step: int, prefix: str = "") -> None:
        """Go to the next choice ``step`` (1 or -1) away that starts with ``prefix``; stay if none does."""
        assert self.choices
        count = len(self.choices)
        here = self.choices.index(self.value) if self.value in self.choices else (-1 if step > 0 else 0)
        turn = (self.choices[(here + step * k) % count] for k in range(1, count + 1))
        self.value = next((choice for choice in turn if choice.startswith(prefix)), self.value)

    def _on_paste(self, event: events.Paste) -> None:
        if self.choices is not None:
            event.prevent_default()  # a choice is stepped through, not typed


class FieldLines(Static):
    """Fields of the form drawn as text: those above the field being edited, or those below it. A field costs
    a line here, not widgets of its own: each widget is laid out, shown and hidden with the panel
    (docs/perf-log.md, cause 32). A click on a field's line edits it."""

    class Picked(Message):
        def __init__(self, path: str) -> None:
            super().__init__()
            self.path = path

    def __init__(self, *, id: str) -> None:
        super().__init__("", id=id, classes="field-lines")
        #: The field each line shows; None for a section title or a blank line.
        self.paths: list[str | None] = []
        self._shown: tuple[str, Sequence[Span]] | None = None

    def show(self, lines: list[tuple[Content, str | None]]) -> None:
        content = Content("\n").join(line for line, _path in lines)
        shown = (content.plain, content.spans)  # Content's == compares the text only, not its styles
        if shown == self._shown:
            return
        self.paths = [path for _line, path in lines]
        self._shown = shown
        self.update(content)
        self.display = bool(lines)

    def on_click(self, event: events.Click) -> None:
        path = self.paths[event.y] if 0 <= event.y < len(self.paths) else None
        if path is not None:
            self.post_message(self.Picked(path))


class FormFrame(VerticalScroll):
    """The form's scrolling frame. Escape from the editor leaves the focus here, so that the panel's and the
    app's single keys act; Enter goes back into the field."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "edit", "Edit field", tooltip="Back into the field the editor is on"),
        # out of the field, as in it, ↑ and ↓ pick the field (a scroll would leave the editor behind, off screen)
        *(
            Binding(key, f"move({step})", "Pick a field", show=False, tooltip="Pick the field above or below")
            for key, step in MOVES.items()
            if key not in ("tab", "shift+tab")  # they move the focus out of the form
        ),
    ]

    def action_edit(self) -> None:
        focus_now(self.query_one(FieldEditor))

    def action_move(self, step: int) -> None:
        self.query_ancestor(ConfigPanel).pick_field(step)


class ConfigPanel(Vertical):
    """Edit the run config; each change goes through ``engine.config.validate_field``. The form is drawn as
    text around one editor, which moves from field to field."""

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
        #: Cells of the key column: the change mark, the longest name and a gap.
        self.key_width = max(len(s.name) for s in self.specs) + 4
        self.by_path = {s.path: s for s in self.specs}
        self.file_config = cfg
        self.config = cfg
        self.path = path
        #: A save or load that waits for its key again (it would replace a file, or drop edits): (action, path).
        self._pending: tuple[str, str] | None = None
        #: The field a "not saved: fix ... first" status names: the status goes once that field is fixed.
        self._status_waits_on: str | None = None
        #: Field path -> (the value the user typed, the engine's message about it).
        self.errors: dict[str, tuple[Any, str]] = {}
        #: Why the config's data source or model names nothing a run could read, by field (the value is in the
        #: config, and saved with it).
        self.path_problems: dict[str, str] = {}
        self._check_paths()
        #: Field path -> the text last typed in it, shown again while the engine refuses it.
        self._typed: dict[str, str] = {}
        self.form_built = False
        #: The field the editor is on, by its place in ``specs``.
        self.cursor = 0
        #: The source the Data panel loaded last, and its columns (see ``column_choices``).
        self._columns: tuple[str, list[str]] = ("", [])
        self._column_suggester = ChoiceSuggester(self.column_choices)

    @property
    def is_valid(self) -> bool:
        return not self.problems

    @property
    def problems(self) -> dict[str, str]:
        """Each field a run cannot start with, and why: the values the engine refused (kept out of the config),
        and a data source or model that names nothing a run could read."""
        out = {path: message for path, (_value, message) in self.errors.items()}
        for path, message in self.path_problems.items():
            out.setdefault(path, message)
        return out

    @property
    def current(self) -> FieldSpec:
        """The field the editor is on."""
        return self.specs[self.cursor]

    @property
    def editor(self) -> FieldEditor:
        return self.query_one("#config-editor", FieldEditor)

    # -- layout ---------------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield FixedText(TITLE, id="config-title", classes="panel-title")
        with Horizontal(id="config-file", classes="controls"):
            yield Label("file ", classes="field-key-short")
            yield InOrderInput(self.path, suggester=PathSuggester(), compact=True, id="config-path")
        yield Static("", id="config-status")
        with FormFrame(id="config-form"):
            yield FieldLines(id="config-above")
            with Horizontal(id="config-row", classes="field-row"):
                yield Label("", id="config-key", classes="field-key")
                yield FieldEditor(self._move, self._on_edit, compact=True, id="config-editor", classes="field-editor")
                yield Static(Content(REMOTE_CODE_NOTE), id="remote-code-note", classes="field-note warning")
            yield FieldLines(id="config-below")
        yield FixedText("", id="config-help", classes="hint")

    def on_mount(self) -> None:
        self.query_one("#config-status").display = False
        self.query_one("#config-key").styles.width = self.key_width
        self.form_built = True
        self._load_editor()
        self._refresh_marks()

    def _value_text(self, spec: FieldSpec) -> str:
        """What the field holds: the text of a value the engine refused, as typed; else the config's value."""
        pending = self.errors.get(spec.path)
        if pending is None:
            return format_value(get_value(self.config, spec.path))
        return self._typed.get(spec.path, format_value(pending[0]))

    def _draw(self, differs: set[str]) -> None:
        """The fields above and below the editor, each on a line, with its error under it; and the editor's key."""
        above: list[tuple[Content, str | None]] = []
        below: list[tuple[Content, str | None]] = []
        lines = above
        section = None
        problems = self.problems
        for spec in self.specs:
            if spec.section != section:
                if section is not None:
                    lines.append((Content(""), None))
                section = spec.section
                lines.append((Content.styled(section or "run", "bold $text-accent"), None))
            if spec is self.current:
                lines = below
            else:
                lines.append((self._field_line(spec, spec.path in differs, spec.path in problems), spec.path))
            if spec.path in problems:
                for part in self._wrapped(f"✗ {problems[spec.path]}"):
                    lines.append((Content.styled(" " * self.key_width + part, "$text-error"), spec.path))
        self.query_one("#config-above", FieldLines).show(above)
        self.query_one("#config-below", FieldLines).show(below)
        current = self.current
        self.query_one("#config-key", Label).update(self._key_text(current, current.path in differs))
        row = self.query_one("#config-row")
        row.set_class(current.path in differs, "-changed")
        row.set_class(current.path in problems, "-invalid")
        self.query_one("#remote-code-note").display = (
            current.path == REMOTE_CODE_PATH and self.config.model.trust_remote_code
        )

    def _wrapped(self, message: str) -> list[str]:
        """A message in lines that fit beside the key column: the form's lines are cut, not wrapped, so that
        a line is a field's line for a click."""
        width = self.query_one("#config-form").scrollable_content_region.width or 80
        return textwrap.wrap(message, max(width - self.key_width, 20), subsequent_indent="  ") or [message]

    def on_resize(self) -> None:
        self._refresh_marks()  # the error lines wrap at the form's width

    def _field_line(self, spec: FieldSpec, changed: bool, invalid: bool) -> Content:
        style = "bold $text-error" if invalid else "bold $text-warning" if changed else "$text-muted"
        value = self._value_text(spec)
        parts: list[tuple[str, str] | str] = [
            (self._key_text(spec, changed).ljust(self.key_width), style),
            value if value else ("null" if spec.optional else "", "dim"),
        ]
        if spec.path == REMOTE_CODE_PATH and self.config.model.trust_remote_code:
            parts.append(("  " + REMOTE_CODE_NOTE, "bold $text-warning"))
        return Content.assemble(*parts)

    @staticmethod
    def _key_text(spec: FieldSpec, changed: bool) -> str:
        return ("● " if changed else "  ") + spec.name

    def _load_editor(self) -> None:
        """Put the current field's value, completions and help in the editor."""
        spec = self.current
        text = self._value_text(spec)
        if spec.choices is not None and not text:
            text = "null"  # an optional switch's null is a choice of its own
        suggester = self._column_suggester if spec.path in COLUMN_FIELDS else None
        self.editor.load(text, spec.choices, suggester, "null" if spec.optional else "")
        if self.editor.has_focus:
            self._render_help(spec)

    def pick_field(self, step: int) -> None:
        """Out of the field: move the editor ``step`` fields on, the focus staying out of it."""
        if self._move(step):
            self._render_frame_help()

    def _render_frame_help(self) -> None:
        self.query_one("#config-help", Static).update(
            Content(f"out of the field: single keys act · enter edits {self.current.path} · shift+tab: the file")
        )

    def _move(self, step: int) -> bool:
        """Move the editor ``step`` fields on (back, when negative); False when it is at that end already."""
        target = min(max(self.cursor + step, 0), len(self.specs) - 1)
        if target == self.cursor:
            return False
        self._go_to(target)
        return True

    def _go_to(self, index: int) -> None:
        self.cursor = index
        self._load_editor()
        self._refresh_marks()
        self.call_after_refresh(self._scroll_to_editor)

    def _scroll_to_editor(self) -> None:
        """Scroll the form to the editor, with the section title above it and the line under it (its error)."""
        region = self.query_one("#config-row").virtual_region.grow((2, 0, 1, 0))
        self.query_one("#config-form", VerticalScroll).scroll_to_region(region, animate=False)

    @on(FieldLines.Picked)
    def _on_pick(self, event: FieldLines.Picked) -> None:
        self.focus_field(event.path)

    def focus_main(self) -> None:
        focused = self.app.focused
        if focused is None or self not in focused.ancestors:
            focus_now(self.editor)

    def focus_field(self, path: str) -> None:
        index = self.specs.index(self.by_path[path])
        if index != self.cursor:
            self._go_to(index)
        focus_now(self.editor)

    # -- editing --------------------------------------------------------------------------------------------
    def _on_edit(self, text: str) -> None:
        self._edit(self.current, text)

    def _edit(self, spec: FieldSpec, text: str) -> None:
        self._typed[spec.path] = text
        try:
            value = parse_text(spec, text)
        except ConfigError as exc:
            self.errors[spec.path] = (text, exc.message)
            self._after_edit((spec.path,))
            return
        if spec.path not in self.errors and value == get_value(self.config, spec.path):
            return  # the editor reporting the value it already shows
        self.set_field(spec.path, value)

    def set_field(self, path: str, value: Any) -> None:
        """Validate ``path = value`` against the current config; keep it or show the engine's message."""
        before = self.config
        try:
            self.config = validate_field(self.config, path, value)
            self.errors.pop(path, None)
        except ConfigError as exc:
            message = exc.message if exc.path in (path, "") else str(exc)
            self.errors[path] = (value, message)
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
                progress = True
        if (self.config.data.source, self.config.model.name_or_path) != (before.data.source, before.model.name_or_path):
            self._check_paths()
        changed = tuple(s.path for s in self.specs if get_value(before, s.path) != get_value(self.config, s.path))
        self._after_edit(changed)

    def _after_edit(self, changed: tuple[str, ...]) -> None:
        self._refresh_marks()
        if self._status_waits_on not in (None, PATH_FIELD) and self._status_waits_on not in self.problems:
            self._status("")
        if self.current.path in self.problems:
            self.call_after_refresh(self._scroll_to_editor)  # its message, under it, in view
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
        if self.form_built:
            self._draw(differs)
        problems = self.problems
        state = f"{len(problems)} invalid" if problems else "valid"
        changes = f"{len(differs)} changed from file" if differs else "as in file"
        origin = f" · from {self.config.output.parent}" if self.config.output.parent else ""
        # the path last: the line is cut at its end, and at 80 columns a long path would hide the state
        self.query_one("#config-title", Static).update(Content(f"{TITLE} · {state} · {changes} · {self.path}{origin}"))

    @on(DescendantFocus)
    def _show_help(self, event: DescendantFocus) -> None:
        if isinstance(event.widget, FormFrame):
            self._render_frame_help()
        else:
            self._render_help(self.current if event.widget.id == "config-editor" else None)

    def _render_help(self, spec: FieldSpec | None) -> None:
        if spec is None:
            self.query_one("#config-help", Static).update(
                Content("ctrl+l loads this file, ctrl+s saves the form to it · tab: the form")
            )
            return
        help_text = f"{spec.path}: {spec.doc}"
        if spec.choices is not None:
            help_text += " (← → or a value's first letter changes it)"
        elif spec.path in COLUMN_FIELDS and self.column_choices():
            help_text += f" Columns: {', '.join(self.column_choices())} (→ completes)"
        self.query_one("#config-help", Static).update(Content(help_text + " · ↑ ↓ other fields"))

    def column_choices(self) -> list[str]:
        """The columns of the config's dataset, once the Data panel has loaded it; else none."""
        source, columns = self._columns
        return columns if source == self.config.data.source else []

    def set_columns(self, source: str, columns: list[str]) -> None:
        """Offer these columns in the column fields while the config's source is ``source``."""
        self._columns = (source, columns)
        if self.editor.has_focus and self.current.path in COLUMN_FIELDS:
            self._render_help(self.current)

    # -- file -----------------------------------------------------------------------------------------------
    def _check_paths(self) -> None:
        """The checks a run makes on a local data source and model before it loads them, on the config's."""
        self.path_problems.clear()
        try:
            check_source(self.config.data.source)
        except DataError as exc:
            self.path_problems[SOURCE] = _path_message(exc, SOURCE)
        model = model_problem(self.config.model.name_or_path)
        if model is not None:
            self.path_problems[MODEL] = model

    def _path_status(self, text: str) -> None:
        """A mistake in the file field (or the file it names), said until the field changes."""
        self._status(text, error=True, waits_on=PATH_FIELD)

    @on(Input.Changed, "#config-path")
    def _on_path_typed(self) -> None:
        if self._status_waits_on == PATH_FIELD:
            self._status("")

    def _status(self, text: str, error: bool = False, *, waits_on: str | None = None) -> None:
        self._status_waits_on = waits_on
        status = self.query_one("#config-status", Static)
        status.update(Content(text))
        status.set_class(error, "error")
        status.display = bool(text)

    def _fill(self, cfg: RunConfig) -> None:
        """Show ``cfg`` in the form, with no pending errors (the caller has set ``self.config``)."""
        self.errors.clear()
        self._check_paths()
        self._typed.clear()
        if self.form_built:
            self._load_editor()

    def load_path(self, path: str) -> bool:
        """Load a YAML config into the form; False (with the message shown) when it cannot be used."""
        if _is_special(path):  # read here, a pipe would hold the UI until something writes to it
            self._path_status(f"{path}: not a regular file (a pipe or a device); give a .yaml config file")
            return False
        try:
            cfg = load_config(path)
        except ConfigError as exc:  # a key's mistake names the key: the file goes first, as its other errors say it
            self._path_status(f"{path}: {exc}" if exc.path else str(exc))
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

    def _confirmed(self, action: str, path: str) -> bool:
        """Whether ``action`` on ``path`` is the one the last key asked to confirm; either way nothing waits now."""
        pending, self._pending = self._pending, None
        return pending == (action, path)

    def unsaved(self) -> str:
        """ "2 unsaved change(s) (train.seed, train.learning_rate)", or "" when the form is as in its file."""
        edits = self.differs_from_file()
        if not edits:
            return ""
        shown = ", ".join(edits[:3]) + (f" and {len(edits) - 3} more" if len(edits) > 3 else "")
        return f"{len(edits)} unsaved change(s) ({shown})"

    def edits_to_drop(self, action: str, target: str) -> str:
        """What replacing the form by ``action`` on ``target`` would drop ("2 unsaved change(s) (...)"), to be
        said before the key that asked is pressed again; "" when nothing would be lost or it was pressed again."""
        unsaved = self.unsaved()
        if not unsaved or self._confirmed(action, target):
            self._pending = None
            return ""
        self._pending = (action, target)
        return unsaved

    def action_load(self) -> None:
        path = self.query_one("#config-path", Input).value.strip()
        if unsaved := self.edits_to_drop("load", path):
            self._status(f"{unsaved}; ctrl+l again drops them and loads {path}", error=True)
            return
        self.load_path(path)

    def action_save(self) -> None:
        if self.errors:
            first = next(iter(self.errors))
            self._status(f"not saved: fix {first} first ({self.errors[first][1]})", error=True, waits_on=first)
            return
        path = self.query_one("#config-path", Input).value.strip()
        if not path:
            self._path_status("not saved: type a file name in the path field (e.g. sample_configs/my-run.yaml)")
            return
        try:
            target = config_path(path)
        except ConfigError as exc:
            self._path_status(f"not saved: {exc}")
            return
        if target.is_dir():
            self._path_status(f"not saved: {path} is a folder; name a file in it (e.g. {path.rstrip('/')}/my-run.yaml)")
            return
        if is_run_record(target.resolve()):  # a link to a run's record would be written through
            self._path_status(
                f"not saved: {path} is the record of run {target.resolve().parent.name}; name a new file above "
                "(e.g. sample_configs/my-run.yaml)"
            )
            return
        if not self._replaces_another_file(target):
            self._pending = None
        elif not self._confirmed("save", path):
            self._pending = ("save", path)
            self._path_status(f"{path} exists and is not the file this form came from; ctrl+s again replaces it")
            return
        try:
            save_preset(self.config, path, like=self._file_text())
        except OSError as exc:
            why = not_a_folder(target.parent)  # the folder to save in
            reason = f"{target.parent} {why}" if why is not None else exc.strerror
            self._path_status(f"cannot save to {path} ({reason}); pick another path")
            return
        self.path = path
        self.file_config = self.config
        self._status(f"saved {path}")
        self._refresh_marks()

    def _file_text(self) -> str | None:
        """The text of the file the form came from: a save keeps its comments and layout. None where it cannot
        be read."""
        if _is_special(self.path):
            return None
        try:
            with open(Path(self.path).expanduser(), encoding="utf-8", newline="") as fh:  # its line ends kept
                return fh.read()
        except (OSError, UnicodeDecodeError, RuntimeError):
            return None

    def _replaces_another_file(self, target: Path) -> bool:
        """Whether saving to ``target`` would write over a file other than the one the form was loaded from or last
        saved to."""
        if not target.exists():
            return False
        try:
            return target.resolve() != Path(self.path).expanduser().resolve()
        except OSError:
            return True

    def action_queue(self) -> None:
        from engine import queue

        if self.problems:
            first, message = next(iter(self.problems.items()))
            self._status(f"not queued: fix {first} first ({message})", error=True, waits_on=first)
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
        if unsaved := self.edits_to_drop("reset", self.path):
            self._status(f"{unsaved}; ctrl+r again drops them", error=True)
            return
        before = self.config
        self.config = self.file_config
        self._fill(self.file_config)
        self._status(f"reset to {self.path}")
        changed = tuple(s.path for s in self.specs if get_value(before, s.path) != get_value(self.config, s.path))
        self._after_edit(changed)
