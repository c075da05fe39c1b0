"""Data panel: the config's dataset split by split, paged lazily; a sample's tokens; label counts; a filter."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, ClassVar, cast

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Input, ProgressBar, Select, Static
from textual.worker import Worker, WorkerState

from engine.browse import DatasetBrowser, FastTokenizer, LabelCount, Row, Sample, SplitView, TokenizedSample
from engine.config import DataConfig, RunConfig
from engine.errors import DataError, describe_failure
from engine.events import LogMessage, text_width
from engine.splits import choose_eval, describe_eval, train_rows
from tui import heap
from tui.bridge import LibraryLog
from tui.panels import PANELS
from tui.widgets.fixed_text import FixedText
from tui.widgets.footer import WorkbenchFooter
from tui.widgets.in_order_input import InOrderInput
from tui.widgets.paged_table import Column, PagedTable
from tui.widgets.panel_bar import focus_now
from tui.widgets.score_bars import ScoreBars

if TYPE_CHECKING:
    from textual.widgets import DataTable
    from transformers import PreTrainedTokenizerBase

TITLE = PANELS["data"][1]


def classes_key(data: DataConfig) -> tuple[str, str | None, str, str | None]:
    """What the classes of a source's label column, as a run numbers them, depend on in the data config."""
    return (data.source, data.label_field, data.train_split, data.eval_split)


class SamplesTable(PagedTable[Row]):
    """A split's rows: the sample's index, its label (where the split has labels) and a preview of its text."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "open", "Open sample")]
    FOCUS_STYLED = False

    def __init__(self, label_title: str, *, id: str | None = None) -> None:
        super().__init__(self._sample_cells, sample_columns(label_title, 5, 8), id=id)
        self.label_title = label_title
        self._labelled = True

    def show(self, view: SplitView | None, *, index_width: int = 5, label_width: int = 8) -> None:
        """Show ``view`` from its first row (``None`` empties the table); a ``label_width`` of 0 drops labels."""
        self._labelled = bool(label_width)
        self.set_source(view, sample_columns(self.label_title, index_width, label_width))

    def _sample_cells(self, row: Row) -> tuple[str, ...]:
        return (str(row.index), row.label, row.preview) if self._labelled else (str(row.index), row.preview)


def sample_columns(label_title: str, index_width: int, label_width: int) -> list[Column]:
    columns = [Column("#", max(index_width, 1), right=True, component="paged-table--index")]
    if label_width:
        columns.append(
            Column(label_title, max(label_width, text_width(label_title)), component="paged-table--label", middle=True)
        )
    return [*columns, Column("text")]


@functools.lru_cache(maxsize=4)
def cached_tokenizer(name_or_path: str, trust_remote_code: bool) -> PreTrainedTokenizerBase | FastTokenizer:
    """One tokenizer per model, loaded once per session (worker thread): the model's tokenizer.json where it has
    one (no transformers, no torch in this process), else transformers' (a hub id, custom code)."""
    from engine.logs import quiet_libraries
    from engine.models import load_tokenizer

    if not trust_remote_code and (fast := FastTokenizer.for_model(name_or_path)) is not None:
        return fast
    quiet_libraries()
    return load_tokenizer(name_or_path, trust_remote_code)


class DataPanel(Vertical):
    """Browse the dataset the config points at; Enter opens a sample with its tokenization."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "focus_filter", "Filter", key_display="/", tooltip="Filter the rows by a text"),
        Binding("t", "next_split", "Split", tooltip="Show the next split of the dataset"),
    ]

    class BrowserReady(Message):
        def __init__(self, browser: DatasetBrowser, key: tuple[str, str, str | None]) -> None:
            super().__init__()
            self.browser = browser
            self.key = key

    class ColumnsLoaded(Message):
        """The columns of the config's dataset are known (the Config panel offers them for its column fields)."""

        def __init__(self, source: str, columns: list[str]) -> None:
            super().__init__()
            self.source = source
            self.columns = columns

    class ClassesLoaded(Message):
        """The classes of the data's label column as a run numbers them (train and eval together, in class-id
        order), or None where a run would take none or the data did not load; ``key`` is the data config they were
        read for (``classes_key``). The Predict panel names a base model's untrained classifier's outputs with them."""

        def __init__(self, key: tuple[str, str | None, str, str | None], classes: list[str] | None) -> None:
            super().__init__()
            self.key = key
            self.classes = classes

    class ViewReady(Message):
        def __init__(self, view: SplitView, histogram: list[LabelCount], label_problem: str = "") -> None:
            super().__init__()
            self.view = view
            self.histogram = histogram
            #: Why the label column has no histogram: its values are no classes (a run refuses them).
            self.label_problem = label_problem

    def __init__(self, cfg: RunConfig, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.cfg = cfg
        self.browser: DatasetBrowser | None = None
        self.view: SplitView | None = None
        self._loaded_key: tuple[str, str, str | None] | None = None
        self.error: str | None = None
        #: The filter the rows show: the last one submitted with Enter, not what the field holds meanwhile.
        self.applied_filter = ""

    def compose(self) -> ComposeResult:
        yield FixedText(TITLE, id="data-title", classes="panel-title")
        with Horizontal(id="data-controls", classes="controls"):
            yield Select[str]([], prompt="split", compact=True, allow_blank=True, id="data-split")
            yield InOrderInput(placeholder="filter: text, then Enter", compact=True, id="data-filter")
        with Horizontal(id="data-status-row", classes="status-row"):
            yield ProgressBar(total=1, show_eta=False, show_percentage=False, id="data-progress")
            yield Static("", id="data-status")
        with Horizontal(id="data-body"):
            yield SamplesTable(self.cfg.data.label_field or "label", id="data-table")
            with Vertical(id="data-side"):
                yield Static("Labels", classes="side-title")
                yield ScoreBars(id="data-histogram", fit=True)  # "… N more" where its classes need more lines
                yield Static("", id="data-hint", classes="hint")

    def on_mount(self) -> None:
        self.query_one("#data-status-row").display = False
        self._render_title()

    # -- config ---------------------------------------------------------------------------------------------
    @property
    def wanted_key(self) -> tuple[str, str, str | None]:
        d = self.cfg.data
        return (d.source, d.text_field, d.label_field)

    @property
    def stale(self) -> bool:
        return self._loaded_key != self.wanted_key

    def set_config(self, cfg: RunConfig) -> None:
        """Take a new config; the data reloads when its source or columns changed and the panel is shown."""
        self.cfg = cfg
        if self.stale and self.is_on_screen:
            self.load()
        self._render_title()

    @property
    def is_on_screen(self) -> bool:
        return self.display and self.region.area > 0

    def ensure_loaded(self) -> None:
        """Load the data if the config changed since the last load (called when the panel is shown)."""
        if self.stale:
            self.load()

    def load(self) -> None:
        key = self.wanted_key
        if self._loaded_key is not None and key[0] != self._loaded_key[0]:  # another source: its own rows, unfiltered
            self.applied_filter = ""
            self.query_one("#data-filter", Input).value = ""
        self._loaded_key = key
        self.browser = None
        self.view = None
        self.error = None
        self.query_one(SamplesTable).show(None)
        self.query_one(ScoreBars).set_counts([])
        with self.prevent(Select.Changed):  # the last source's splits go with its rows
            self.query_one("#data-split", Select).set_options([])
        self._busy(f"loading {key[0]}…")
        self._open(key)

    @work(thread=True, exclusive=True, group="data", exit_on_error=False, description="open dataset")
    def _open(self, key: tuple[str, str, str | None]) -> None:
        browser = DatasetBrowser.open(*key)
        heap.freeze()  # the data, and datasets' imports where it took them, stay as long as the workbench
        self.post_message(self.BrowserReady(browser, key))
        # After the rows are on their way: counting the label column of a big source takes a while.
        data = self.cfg.data
        eval_split = choose_eval(data, browser.split_names, needs_labels=True).split
        classes = browser.class_names([data.train_split] + ([eval_split] if eval_split else []))
        self.post_message(self.ClassesLoaded(classes_key(data), classes))

    @on(BrowserReady)
    def _on_browser(self, message: BrowserReady) -> None:
        if message.key != self._loaded_key:
            return  # a newer load is on its way
        self.browser = message.browser
        names = message.browser.split_names
        select: Select[str] = self.query_one("#data-split", Select)
        with self.prevent(Select.Changed):
            select.set_options([(f"{n} · {len(message.browser.splits[n]):,} rows", n) for n in names])
        first = self.cfg.data.train_split if self.cfg.data.train_split in names else names[0]
        with self.prevent(Select.Changed):
            select.value = first
        self.post_message(self.ColumnsLoaded(message.key[0], list(message.browser.splits[first].column_names)))
        self.show_split(first, self.applied_filter)

    def show_split(self, name: str, query: str = "") -> None:
        if self.browser is None:
            return
        self._busy(f"filtering {name} for “{query}”…" if query else f"reading {name}…")
        self._make_view(self.browser, name, query)

    @work(thread=True, exclusive=True, group="data", exit_on_error=False, description="filter split")
    def _make_view(self, browser: DatasetBrowser, name: str, query: str) -> None:
        view = browser.split(name)
        if query:
            view = view.filter(query)
        try:
            self.post_message(self.ViewReady(view, view.label_histogram()))
        except DataError as exc:  # labels a run refuses (lists, records): the rows still browse
            self.post_message(self.ViewReady(view, [], str(exc)))

    @on(ViewReady)
    def _on_view(self, message: ViewReady) -> None:
        self.view = message.view
        view = message.view
        labels = [c.label for c in message.histogram]
        table = self.query_one(SamplesTable)
        table.show(
            view,
            index_width=len(str(max(view.total_rows - 1, 0))),
            # a filter that matches nothing keeps the label column: the table's shape does not jump
            label_width=min(max((text_width(x) for x in labels), default=1), 16) if view.label_field else 0,
        )
        self.query_one(ScoreBars).set_counts([(c.label, c.count) for c in message.histogram])
        self.query_one("#data-hint", Static).update(Content(self._hint(message)))
        self._idle()

    def _hint(self, shown: ViewReady) -> str:
        """What the side column says under the histogram: why it is empty, or why the table is."""
        view = shown.view
        if shown.label_problem:
            return shown.label_problem
        if self.browser is not None and self.browser.label_missing(view.name):
            missing = f'no column "{self.cfg.data.label_field}" in this split'
            needed = ": classification needs one (set data.label_field)" if self.cfg.task == "classification" else ""
            return missing + needed
        if view.query and not len(view):
            return f"no rows match “{view.query}”; / edits the filter"
        return "" if shown.histogram else "no labels"

    def _busy(self, text: str) -> None:
        self.query_one("#data-status-row").display = True
        self._pulse(True)
        self.query_one("#data-status", Static).update(Content(text))
        self.query_one("#data-status").remove_class("error")

    def _pulse(self, on: bool) -> None:
        """Show the bar of unknown length while the panel waits for a worker, if the app animates (without
        animations it would be a still bar, and the status line says what the panel waits for). A bar of
        unknown total refreshes itself 15 times a second, hidden or not: off, it holds a known total."""
        animate = on and self.app.animation_level != "none"
        bar = self.query_one("#data-progress", ProgressBar)
        bar.display = animate
        bar.update(total=None if animate else 1)

    def _idle(self) -> None:
        self.query_one("#data-status-row").display = False
        self._pulse(False)
        self.query_one("#data-status", Static).update("")
        self._render_title()

    @on(Worker.StateChanged)
    def _on_worker(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "data" or event.state != WorkerState.ERROR:
            return
        assert event.worker.error is not None
        message, tb = describe_failure(event.worker.error)
        self.error = message
        self.post_message(self.ClassesLoaded(classes_key(self.cfg.data), None))  # none to wait for
        self.query_one("#data-status-row").display = True
        self._pulse(False)
        status = self.query_one("#data-status", Static)
        status.update(Content(message))
        status.add_class("error")
        if tb:
            self.post_message(LibraryLog(LogMessage("error", f"{message}\n{tb}", "tunebench.tui")))
        self._render_title()

    def _render_title(self) -> None:
        parts = [TITLE, self.cfg.data.source]
        if self.view is not None:
            parts.append(self.view.name)
            shown = f"{len(self.view):,} of {self.view.total_rows:,} rows" if self.view.query else ""
            parts.append(shown or f"{self.view.total_rows:,} rows")
        if self.browser is not None:
            sizes = {name: len(split) for name, split in self.browser.splits.items()}
            labelled = self.cfg.task == "classification"
            trains = train_rows(self.cfg.data, sizes, needs_labels=labelled)
            if trains is None:  # what a run would refuse at once
                parts.append(f"no {self.cfg.data.train_split} split to train on: set data.train_split")
            elif trains <= 0:  # an empty split, or one the eval share takes whole
                parts.append("no row left to train on: the eval share takes them all (data.eval_fraction)")
            elif trains != sizes[self.cfg.data.train_split]:  # data.train_size, a held-out share
                parts.append(f"a run trains on {trains:,}")
            parts.append("eval: " + describe_eval(self.cfg.data, sizes, needs_labels=labelled))
        self.query_one("#data-title", Static).update(Content(" · ".join(parts)))

    # -- user actions ---------------------------------------------------------------------------------------

    @on(Select.Changed, "#data-split")
    def _on_split(self, event: Select.Changed) -> None:
        if isinstance(event.value, str):
            self.show_split(event.value, self.applied_filter)

    @on(Input.Submitted, "#data-filter")
    def _on_filter(self, event: Input.Submitted) -> None:
        if self.view is not None:
            self.applied_filter = event.value.strip()
            self.show_split(self.view.name, self.applied_filter)
            focus_now(self.query_one(SamplesTable))

    @on(Input.Blurred, "#data-filter")
    def _on_filter_left(self, event: Input.Blurred) -> None:
        # Left without Enter (Escape, Tab, a click): the field shows the filter in force again.
        if event.value.strip() != self.applied_filter:
            event.input.value = self.applied_filter

    def action_focus_filter(self) -> None:
        focus_now(self.query_one("#data-filter", Input))

    def action_next_split(self) -> None:
        if self.browser is None or self.view is None:
            return
        names = self.browser.split_names
        if len(names) == 1:
            self.app.notify(f"{self.cfg.data.source} has one split, {names[0]}: t has no other to show")
            return
        following = names[(names.index(self.view.name) + 1) % len(names)]
        self.query_one("#data-split", Select).value = following

    def focus_main(self) -> None:
        focus_now(self.query_one(SamplesTable))

    @on(PagedTable.RowOpened)
    def _on_open(self, event: PagedTable.RowOpened) -> None:
        if self.view is not None:
            self.app.push_screen(SampleScreen(self.view, event.position, self.cfg))


class SampleScreen(ModalScreen[None]):
    """One sample in full: its text, label and tokens, with the part past max_length marked."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "dismiss", "Close", tooltip="Close the sample"),
        Binding("left,p", "step(-1)", "Previous", tooltip="Previous sample"),
        Binding("right,n", "step(1)", "Next", tooltip="Next sample"),
        # priority: the token table's own home and end scroll sideways, which a table this narrow never needs
        Binding("home", "tokens_to('top')", "First token", show=False, priority=True, tooltip="The first token"),
        Binding("end", "tokens_to('bottom')", "Last token", show=False, priority=True, tooltip="The last token"),
    ]

    class Tokenized(Message):
        def __init__(self, position: int, tokens: TokenizedSample) -> None:
            super().__init__()
            self.position = position
            self.tokens = tokens

    def __init__(self, view: SplitView, position: int, cfg: RunConfig) -> None:
        super().__init__()
        self.view = view
        self.position = position
        self.cfg = cfg
        self.tokens: TokenizedSample | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="sample-dialog"):
            yield Static("", id="sample-title", classes="panel-title")
            with VerticalScroll(id="sample-text-box"):
                yield Static("", id="sample-text")
            yield Static("", id="sample-length")
            from tui.widgets.sized_table import SizedTable  # DataTable's module loads with the first sample opened

            yield SizedTable[str](id="sample-tokens", cursor_type="row", zebra_stripes=True)
        yield WorkbenchFooter()  # this view's keys, not the Data panel's under it

    @property
    def _tokens_table(self) -> DataTable[str | Text]:
        return cast("DataTable[str | Text]", self.query_one("#sample-tokens"))

    def action_tokens_to(self, end: str) -> None:
        table = self._tokens_table
        if end == "top":
            table.action_scroll_top()
        else:
            table.action_scroll_bottom()

    def on_mount(self) -> None:
        table = self._tokens_table
        table.add_columns("#", "token", "input_id", "attention_mask", "token_type_id")
        focus_now(table)
        self._show()

    def _show(self) -> None:
        sample: Sample = self.view.sample(self.position)
        label = f" · label {sample.label}" if sample.label else ""
        title = f"Sample {sample.index} · {self.view.name}{label}  (Esc closes, ←/→ browse)"
        self.query_one("#sample-title", Static).update(Content(title))
        self.query_one("#sample-text", Static).update(Content(sample.text))
        self._tokens_table.clear()
        length = self.query_one("#sample-length", Static)
        length.set_class(sample.missing, "error")
        if sample.missing:  # no tokens to show: the placeholder is not the data
            field_ = self.cfg.data.text_field
            length.update(Content(f'a run refuses this split: data.text_field "{field_}" is empty in this row'))
            return
        length.remove_class("warning")
        length.update(
            Content(f"tokenizing with {self.cfg.model.name_or_path} at max_length {self.cfg.data.max_length}…")
        )
        self._tokenize(self.position)

    @work(thread=True, exclusive=True, group="tokenize", exit_on_error=False, description="tokenize sample")
    def _tokenize(self, position: int) -> None:
        tokenizer = cached_tokenizer(self.cfg.model.name_or_path, self.cfg.model.trust_remote_code)
        self.post_message(self.Tokenized(position, self.view.tokenize(position, tokenizer, self.cfg.data.max_length)))

    @on(Tokenized)
    def _on_tokens(self, message: Tokenized) -> None:
        if message.position != self.position:
            return
        t = self.tokens = message.tokens
        summary = f"{t.length} tokens of max_length {t.max_length}"
        if t.truncated:
            summary += f"; the text needs {t.full_length}, so {len(t.dropped)} tokens are cut off (marked ✂ below)"
        else:
            summary += "; nothing is cut off"
        self.query_one("#sample-length", Static).update(Content(summary))
        self.query_one("#sample-length").set_class(t.truncated, "warning")
        table = self._tokens_table
        types = [str(k) for k in t.token_type_ids] if t.token_type_ids is not None else ["-"] * t.length
        for i, (token, ident, mask, kind) in enumerate(
            zip(t.tokens, t.input_ids, t.attention_mask, types, strict=True)
        ):
            table.add_row(
                str(i), Text(token), str(ident), str(mask), str(kind)
            )  # Text: tokens like [CLS] are not markup
        for j, token in enumerate(t.dropped):
            table.add_row(f"✂ {t.length + j}", Text(token, style="strike"), "-", "-", "-")

    @on(Worker.StateChanged)
    def _on_worker(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "tokenize" and event.state == WorkerState.ERROR:
            assert event.worker.error is not None
            message, _tb = describe_failure(event.worker.error)
            self.query_one("#sample-length", Static).update(Content(message))
            self.query_one("#sample-length").add_class("error")

    def action_step(self, delta: int) -> None:
        position = self.position + delta
        if 0 <= position < len(self.view):
            self.position = position
            self._show()
