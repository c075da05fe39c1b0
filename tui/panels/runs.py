"""Runs panel: the runs folder as a list; open a run's curves and epochs; overlay marked runs; reuse a run."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, NamedTuple

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Static
from textual.worker import Worker, WorkerState

from engine import queue
from engine.config import metric_greater_is_better
from engine.errors import UserError, describe_failure
from engine.events import fmt_duration, fmt_memory, plural
from engine.runs import LIVE, RunDir, RunInfo, RunsCache, failure_of, lineage, list_runs
from tui.dialogs import ExportChoice, ExportScreen
from tui.panels import PANELS
from tui.widgets.class_report import ClassReport
from tui.widgets.epoch_table import EpochTable, RunCurves
from tui.widgets.fixed_text import FixedText
from tui.widgets.loss_chart import LossChart
from tui.widgets.paged_table import Column, PagedTable, RowList, column_widths
from tui.widgets.panel_bar import focus_now

if TYPE_CHECKING:
    from engine.export import NotEmptyError

TITLE = PANELS["runs"][1]


#: How often the list is read again while it shows a live run.
LIVE_REFRESH_SECONDS = 2.0
#: How often the runs folder is looked at while this panel is hidden and the workbench trains nothing itself, so
#: that a run a queue runner or another terminal trains there shows on the run bar (``RunDriver.render_run_bar``).
WATCH_SECONDS = 5.0
#: Listings after the folder changed, one a look, whether or not they found a live run: a run's process makes its
#: folder before it has imported torch and taken the run's lock, which makes the run live.
SETTLE_LOOKS = 6


@dataclass(frozen=True)
class SweepRow:
    """The heading of a sweep's runs in the list: enter or c compares them, m marks them all."""

    sweep: str
    runs: list[RunInfo]
    #: How its other runs stand (running, paused, queued): they are listed above, with the live runs and the queue.
    pending: tuple[str, ...] = ()

    @property
    def status_text(self) -> str:
        counts: dict[str, int] = {}
        for status in [*(r.status for r in self.runs), *self.pending]:
            counts[status] = counts.get(status, 0) + 1
        return ", ".join(f"{n} {status}" for status, n in counts.items())

    @property
    def best(self) -> RunInfo | None:
        """The run with the best best_value (of the first run's metric: a sweep's runs share it)."""
        rated = [r for r in self.runs if r.best_value is not None and r.best_metric == self.runs[0].best_metric]
        if not rated:
            return None
        higher = metric_greater_is_better(rated[0].best_metric or "")
        return (max if higher else min)(rated, key=lambda r: r.best_value or 0.0)


#: A row of the runs list: a run, an entry of the queue not yet a run, or a sweep's heading.
Row = RunInfo | queue.QueueEntry | SweepRow


def list_rows(runs: list[RunInfo], entries: list[queue.QueueEntry]) -> list[Row]:
    """The list as shown: live runs, then the queue's entries that are not runs yet (in queue order), then the
    other runs newest first, each sweep's runs together under a heading, where its newest run would be."""
    live = [r for r in runs if r.status in LIVE]
    waiting = [e for e in entries if e.state != queue.STARTED]
    rows: list[Row] = [*live, *waiting]
    rest = [r for r in runs if r.status not in LIVE]
    sweeps: dict[str, list[RunInfo]] = {}
    for r in rest:
        if r.sweep is not None:
            sweeps.setdefault(r.sweep, []).append(r)
    pending: dict[str, list[str]] = {}  # a sweep's runs still to end, listed above: its heading counts them
    for r in live:
        if r.sweep is not None:
            pending.setdefault(r.sweep, []).append(r.status)
    live_names = {r.name for r in live}
    for e in waiting:
        if e.sweep is not None and e.run not in live_names:  # a claimed entry whose run trains is that run
            state = {queue.QUEUED: "queued", queue.CLAIMED: "starting"}.get(e.state, "failed to start")
            pending.setdefault(e.sweep, []).append(state)
    for r in rest:
        if r.sweep is None:
            rows.append(r)
        elif (members := sweeps.pop(r.sweep, None)) is not None:  # at the sweep's newest run, once
            heading = SweepRow(r.sweep, members, tuple(pending.get(r.sweep, ())))
            rows += [heading, *members] if len(members) > 1 else members
    return rows


def row_key(row: Row) -> str:
    """What names a row from one listing to the next."""
    if isinstance(row, RunInfo):
        return row.name
    if isinstance(row, SweepRow):
        return f"sweep:{row.sweep}"
    return f"queue:{row.id}"


#: The columns after the mark's.
TITLES = ("run", "status", "best", "date", "time", "task", "model", "memory")
#: The narrowest the run column is cut to, to fit a narrow terminal: its date and the end of its name show.
RUN_COLUMN_LEAST = 24


#: A queued entry's label past a run name's width widens the list's first column past the screen.
ENTRY_CELL = 48


def _entry_cell(entry: queue.QueueEntry) -> str:
    """ "#7 quickstart.yaml … learning_rate=3e-5": a long label keeps its file and the last of its settings
    (the --set given last, what varies from one entry to the next most often), each by its key's last part."""
    text = f"#{entry.id} {entry.label}"
    if len(text) <= ENTRY_CELL:
        return text
    name, *settings = entry.label.split(" ")
    head = f"#{entry.id} {name} …"
    kept: list[str] = []
    for setting in reversed(settings):
        key, sep, value = setting.partition("=")
        short = f"{key.rpartition('.')[2]}{sep}{value}"
        if len(head) + len(" ".join([short, *kept])) + 1 > ENTRY_CELL:
            break
        kept.insert(0, short)
    if not kept:
        return text[: ENTRY_CELL - 1] + "…"
    return f"{head} {' '.join(kept)}"


def _not_empty(exc: NotEmptyError) -> str:
    return f"{exc.out} holds a model already: tick “replace the model already there”, or pick another folder"


def row_cells(rows: list[Row]) -> list[tuple[str, ...]]:
    """Each row's cells under ``TITLES``: a sweep's runs indented under its heading, queued entries numbered."""
    grouped = {r.name for row in rows if isinstance(row, SweepRow) for r in row.runs}
    place = 0
    out: list[tuple[str, ...]] = []
    for row in rows:
        if isinstance(row, RunInfo):
            out.append(
                (
                    ("  " if row.name in grouped else "") + row.name,
                    row.status_text,
                    row.best_text,
                    row.started_text,
                    fmt_duration(row.duration_seconds),
                    row.task or "-",
                    row.model or "-",
                    fmt_memory(row.peak_memory_mb),
                )
            )
        elif isinstance(row, SweepRow):
            best = row.best
            out.append(
                (
                    f"sweep {row.sweep}: {len(row.runs) + len(row.pending)} runs",
                    row.status_text,
                    best.best_text if best is not None else "-",
                    *[""] * 5,
                )
            )
        else:
            status = row.state
            if row.state == queue.QUEUED:
                place += 1
                status = f"queued {place}"
            elif row.state == queue.CLAIMED:
                status = "starting"
            out.append(
                (
                    _entry_cell(row),
                    status,
                    "-",
                    row.added_text,
                    "-",
                    str(row.config.get("task", "-")),
                    str((row.config.get("model") or {}).get("name_or_path", "-")),
                    "-",
                )
            )
    return out


class ListedRow(NamedTuple):
    """A row of the list with its cells' text (the mark's aside, which changes without a listing)."""

    row: Row
    cells: tuple[str, ...]


class RunsTable(PagedTable[ListedRow]):
    """The runs list, drawn a screenful at a time: a DataTable measured every cell of every run on each listing."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open", show=False, tooltip="Open the highlighted run: its curves and epochs"),
        Binding("left", "scroll_left", "Scroll left", show=False, tooltip="Scroll the columns left"),
        Binding("right", "scroll_right", "Scroll right", show=False, tooltip="Scroll the columns right"),
    ]
    OPEN_CLICKS = 1


class RunsPanel(Vertical):
    """Lists runs newest first. Enter opens one; m marks; o overlays the marked runs' loss curves; r resumes one."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("m", "mark", "Mark", tooltip="Mark the highlighted run (or unmark it)"),
        Binding(
            "c",
            "compare",
            "Compare",
            tooltip="Compare the marked runs; unmarked: the highlighted run's sweep, or the run and its parent",
        ),
        Binding("o", "overlay", "Overlay", show=False, tooltip="Overlay the loss curves of the marked runs"),
        Binding("n", "clone", "New from", tooltip="Start a new config from the highlighted run's (it records it)"),
        Binding("l", "load_config", "Load cfg", show=False, tooltip="Load the run's config into the Config panel"),
        Binding("p", "predict_with", "Predict", tooltip="Predict with the highlighted run's model as fine-tuned"),
        Binding("r", "resume", "Resume", tooltip="Resume the highlighted stopped, failed or killed run"),
        Binding("a", "attach", "Attach", tooltip="Follow the highlighted run on the Train panel, from its start"),
        Binding("e", "export", "Export", show=False, tooltip="Export the highlighted run's model to a folder"),
        # Off the footer, which is full at 80 columns; the open run's title names it, and F1 lists it.
        Binding("v", "toggle_classes", "Classes", show=False, tooltip="Swap the curves for the confusion matrix"),
        Binding("ctrl+r", "refresh", "Reload list", show=False, tooltip="Reload the list of runs"),
        Binding("K,shift+up", "move_queued(-1)", "Sooner", show=False, tooltip="Move the queued entry up the queue"),
        Binding("J,shift+down", "move_queued(1)", "Later", show=False, tooltip="Move the queued entry down the queue"),
        Binding("x,delete", "remove_queued", "Unqueue", show=False, tooltip="Take the queued entry off the queue"),
        Binding("Q", "toggle_runner", "Queue runner", show=False, tooltip="Start the queue runner, or stop it"),
    ]

    class Listed(Message):
        def __init__(
            self,
            runs: list[RunInfo],
            entries: list[queue.QueueEntry],
            runner: int | None,
            problem: str | None,
            lines: list[ListedRow],
            widths: list[int],
        ) -> None:
            super().__init__()
            self.runs = runs
            self.entries = entries
            #: The queue runner's pid, if one runs; why the queue cannot be read, if it cannot.
            self.runner = runner
            self.problem = problem
            #: The rows as listed, with their cells, and the width of each column that fits them.
            self.lines = lines
            self.widths = widths

    class Opened(Message):
        def __init__(
            self,
            names: list[str],
            curves: dict[str, RunCurves],
            failures: dict[str, str],
            notes: dict[str, str] | None = None,
        ) -> None:
            super().__init__()
            self.names = names
            self.curves = curves
            #: Why each run that failed did.
            self.failures = failures
            #: A finished run's note: "stopped early at step N ...", "model/ holds step N, the best ...".
            self.notes = notes or {}

    class LoadConfig(Message):
        """Load this run's config.yaml into the Config panel."""

        def __init__(self, path: Path) -> None:
            super().__init__()
            self.path = path

    class CloneRun(Message):
        """Start a new config from this run's, with the run as its parent."""

        def __init__(self, run_dir: Path) -> None:
            super().__init__()
            self.run_dir = run_dir

    class UseForPredict(Message):
        """Use this run's model as the fine-tuned side of the Predict panel."""

        def __init__(self, run_dir: Path) -> None:
            super().__init__()
            self.run_dir = run_dir

    class ResumeRun(Message):
        """Continue this stopped, failed or killed run in its own folder."""

        def __init__(self, run_dir: Path) -> None:
            super().__init__()
            self.run_dir = run_dir

    class AttachRun(Message):
        """Follow this run on the Train panel: its history, then live while it trains."""

        def __init__(self, run_dir: Path) -> None:
            super().__init__()
            self.run_dir = run_dir

    def __init__(self, runs_dir: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.runs_dir = runs_dir
        self.runs: list[RunInfo] = []
        self.rows: list[Row] = []
        self.entries: list[queue.QueueEntry] = []
        self.runner: int | None = None
        self.queue_problem: str | None = None
        self.marked: set[str] = set()
        #: Used by the listing's worker only: the live refresh reads again only the summaries that changed.
        self._runs_cache = RunsCache()
        #: The one pending re-listing while a live run is on the list (every listing would otherwise add one).
        self._live_timer: Timer | None = None
        #: The runs folder's modification time at the last look (a run folder or the runner's pid file added).
        self._folder_mark: int | None = -1
        self._looks_left = 0
        #: Off while the workbench's own run is active (``RunDriver.changed``).
        self.watch_folder = True
        self.opened: list[str] = []
        #: The open run's title, and whether it has a confusion matrix for v to show.
        self._detail_title = ""
        self._title_has_classes = False
        self._detail_failure: str | None = None
        self._detail_note: str | None = None
        #: The columns' widths as the rows need them, before the run column is fitted to the view.
        self._widths: list[int] | None = None

    def compose(self) -> ComposeResult:
        yield FixedText(TITLE, id="runs-title", classes="panel-title")
        yield RunsTable(
            self._cells, self._columns([len(t) for t in TITLES]), padding=1, zebra_stripes=True, id="runs-table"
        )
        yield Static("", id="runs-detail-title", classes="side-title")
        with Horizontal(id="runs-detail"):
            yield LossChart(empty_text="enter opens a run; m marks runs, o overlays them", id="runs-chart")
            yield ClassReport(id="runs-classes")
            yield EpochTable(id="runs-epochs")

    def on_mount(self) -> None:
        self.query_one(EpochTable).show(RunCurves())
        self.query_one(ClassReport).display = False
        self._render_title()
        self.set_interval(WATCH_SECONDS, self._watch_folder)
        self.call_after_refresh(self._watch_folder)  # laid out by then: the panel on screen lists on its own

    def _watch_folder(self) -> None:
        """List the runs again when the folder changed, or while one of its runs is live (its step moves)."""
        if not self.watch_folder or (self.display and self.region.area > 0):
            return  # the workbench's own run is on the run bar; on screen, the live refresh lists the folder
        try:
            mark: int | None = os.stat(os.path.expanduser(self.runs_dir)).st_mtime_ns
        except OSError:
            mark = None
        if mark != self._folder_mark:
            # The first look lists the folder once; a change after it, a few times (see SETTLE_LOOKS).
            self._looks_left = 1 if self._folder_mark == -1 else SETTLE_LOOKS
            self._folder_mark = mark
        if self._looks_left or self.live_runs():
            self._looks_left = max(self._looks_left - 1, 0)
            self.refresh_runs()

    def live_runs(self, but: str | None = None) -> list[RunInfo]:
        """The runs of the last listing that train or are paused, but the one named ``but``."""
        return [r for r in self.runs if r.status in LIVE and r.name != but]

    def focus_main(self) -> None:
        focus_now(self.query_one(RunsTable))

    def _columns(self, widths: list[int]) -> list[Column]:
        """The columns, the run's names cut in their middle where the whole line would not fit the view: at 80
        columns a run's name took the room of its status and best score."""
        room = self.query_one(RunsTable).size.width if self.is_mounted else 0
        line = sum(w + 2 for w in [1, *widths])  # each cell is padded by one on either side
        run = widths[0]
        if room and line > room:
            run = max(RUN_COLUMN_LEAST, run - (line - room))
        cut = run < widths[0]  # in the middle: a sweep's runs differ at the end of their names
        fitted = [run, *widths[1:]]
        columns = [Column(t, w, middle=cut and i == 0) for i, (t, w) in enumerate(zip(TITLES, fitted, strict=True))]
        return [Column(" ", 1), *columns]

    def on_resize(self) -> None:
        if self._widths is not None:
            self.query_one(RunsTable).set_columns(self._columns(self._widths))

    def _cells(self, line: ListedRow) -> tuple[str, ...]:
        row = line.row
        if isinstance(row, RunInfo):
            mark = row.name in self.marked
        elif isinstance(row, SweepRow):
            mark = all(r.name in self.marked for r in row.runs)
        else:
            mark = False
        return ("✓" if mark else " ", *line.cells)

    def set_runs_dir(self, runs_dir: str) -> None:
        if runs_dir != self.runs_dir:
            self.runs_dir = runs_dir
            self.marked.clear()
            self.refresh_runs()

    # -- listing --------------------------------------------------------------------------------------------
    def refresh_runs(self) -> None:
        self._list(self.runs_dir)

    @work(thread=True, exclusive=True, group="runs", exit_on_error=False, description="list runs")
    def _list(self, runs_dir: str) -> None:
        # Reading the folders and laying out the rows both scale with the runs: neither is done on the UI thread.
        try:
            entries, problem = queue.list_queue(runs_dir), None
        except UserError as exc:  # a queue file it cannot read: the runs still list
            entries, problem = [], str(exc)
        runs = list_runs(runs_dir, self._runs_cache)
        rows = list_rows(runs, entries)
        cells = row_cells(rows)
        lines = [ListedRow(row, texts) for row, texts in zip(rows, cells, strict=True)]
        listed = self.Listed(runs, entries, queue.runner_state(runs_dir), problem, lines, column_widths(TITLES, cells))
        self.post_message(listed)

    @on(Listed)
    def _on_listed(self, message: Listed) -> None:
        self.runs, self.entries, self.runner, self.queue_problem = (
            message.runs,
            message.entries,
            message.runner,
            message.problem,
        )
        highlighted = self.current_row()
        self.rows = [line.row for line in message.lines]
        self.marked &= {r.name for r in self.runs}
        table = self.query_one(RunsTable)
        self._widths = message.widths  # fitted to the view again as it is resized
        table.set_source(RowList(message.lines), self._columns(message.widths), keep_place=True)
        if highlighted is not None:  # the cursor stays on its run, entry or sweep where the rows around it moved
            key = row_key(highlighted)
            table.cursor = next((i for i, r in enumerate(self.rows) if row_key(r) == key), table.cursor)
        self._render_title()
        waiting = any(e.state in (queue.QUEUED, queue.CLAIMED) for e in self.entries)
        live = waiting or any(r.status in LIVE for r in self.runs)
        if live and self._live_timer is None:  # their step, ETA and turn move: list again while on screen
            self._live_timer = self.set_timer(LIVE_REFRESH_SECONDS, self._refresh_live)

    def _refresh_live(self) -> None:
        self._live_timer = None
        if self.display and self.region.area > 0:
            self.refresh_runs()

    def _render_title(self) -> None:
        parts = [TITLE, self.runs_dir, f"{len(self.runs)} run{'s' if len(self.runs) != 1 else ''}"]
        if self.marked:
            parts.append(f"{len(self.marked)} marked")
        waiting = sum(e.state == queue.QUEUED for e in self.entries)
        if self.queue_problem:
            parts.append("queue unreadable")
        elif waiting or self.runner is not None:
            runner = f"runner pid {self.runner}" if self.runner is not None else "no runner (Q starts it)"
            parts.append(f"{waiting} queued, {runner}")
        self.query_one("#runs-title", Static).update(Content(" · ".join(parts)))

    # -- selection ------------------------------------------------------------------------------------------
    def current_row(self) -> Row | None:
        cursor = self.query_one(RunsTable).cursor
        if not 0 <= cursor < len(self.rows):
            return None
        return self.rows[cursor]

    def current(self) -> RunInfo | None:
        """The highlighted run (None on a queued entry or a sweep's heading)."""
        row = self.current_row()
        return row if isinstance(row, RunInfo) else None

    def current_run(self, what: str) -> RunInfo | None:
        """The highlighted run for an action on a run; None, said, on a queued entry or a sweep's heading."""
        info = self.current()
        if info is None and self.current_row() is not None:
            self.app.notify(f"{what} acts on a run: highlight one, not a queued entry or a sweep", severity="warning")
        elif info is None:
            none = f"{self.runs_dir}/ has none yet; s on the Train panel (F4) starts one"
            self.app.notify(f"{what} acts on a run: {none}")
        return info

    def current_entry(self) -> queue.QueueEntry | None:
        row = self.current_row()
        return row if isinstance(row, queue.QueueEntry) else None

    @on(RunsTable.RowOpened, "#runs-table")
    def _on_selected(self, event: RunsTable.RowOpened) -> None:
        row = self.current_row()
        if isinstance(row, RunInfo):
            self.open_runs([row.name])
        elif isinstance(row, SweepRow):  # this sweep, whatever is marked (c compares the marked runs first)
            self._compare(*self._sweep_runs(row.sweep))

    @on(RunsTable.RowHighlighted, "#runs-table")
    def _on_highlighted(self, event: RunsTable.RowHighlighted) -> None:
        row = self.current_row()
        if isinstance(row, queue.QueueEntry):
            what = f"error: {row.error}" if row.error else row.state
            runner = "Q starts the runner" if self.runner is None else "Q stops the runner"
            self._title(
                Content(
                    f"queue entry #{row.id} ({what}) · K/J move it, x takes it off the queue, {runner} · {row.label}"
                )
            )
        elif isinstance(row, SweepRow):
            self._title(Content(f"sweep {row.sweep}: {len(row.runs)} runs · enter compares and ranks them"))
        else:  # a run: the detail shows what was opened last, not the row left
            self._render_detail_title()

    def action_mark(self) -> None:
        row = self.current_row()
        if isinstance(row, SweepRow):
            names = {r.name for r in row.runs}
            self.marked = self.marked - names if names <= self.marked else self.marked | names
        elif isinstance(row, RunInfo):
            self.marked ^= {row.name}
        else:
            self.current_run("m (mark)")  # says why nothing is marked
            return
        self.query_one(RunsTable).refresh()  # marks are drawn from self.marked
        self._render_title()

    def action_overlay(self) -> None:
        names = [r.name for r in self.runs if r.name in self.marked]
        if len(names) < 2:
            self.app.notify("mark two or more runs with m, then press o", severity="warning")
            return
        self.open_runs(names)

    def action_compare(self) -> None:
        marked = [r for r in self.runs if r.name in self.marked]
        row = self.current_row()
        info = self.current()
        sweep = row.sweep if isinstance(row, RunInfo | SweepRow) else None
        if len(marked) >= 2:
            runs, why = marked, f"{len(marked)} marked runs"
        elif sweep:
            runs, why = self._sweep_runs(sweep)
        elif info is not None and info.parent and (parent := self._run_named(info.parent)) is not None:
            runs, why = [parent, info], f"{info.name} and its parent"
        else:
            runs, why = [], ""
        self._compare(runs, why)

    def _sweep_runs(self, sweep: str) -> tuple[list[RunInfo], str]:
        runs = [r for r in self.runs if r.sweep == sweep][::-1]  # oldest first: the order queued
        return runs, f"sweep {sweep} ({len(runs)} runs)"

    def _compare(self, runs: list[RunInfo], why: str) -> None:
        from tui.compare import CompareScreen  # with its first use, not before the workbench's first frame

        if len(runs) < 2:
            self.app.notify(
                "mark two or more runs with m, then press c (a run of a sweep, or with a parent, compares without)",
                severity="warning",
            )
            return
        self.app.push_screen(CompareScreen([r.path for r in runs], why))

    def _run_named(self, name: str) -> RunInfo | None:
        return next((r for r in self.runs if r.name == name), None)

    def open_runs(self, names: list[str]) -> None:
        self._title(Content(f"reading {', '.join(names)}…"))
        self._read([Path(self.runs_dir) / n for n in names])

    @work(thread=True, exclusive=True, group="runs-open", exit_on_error=False, description="read run events")
    def _read(self, paths: list[Path]) -> None:
        curves: dict[str, RunCurves] = {}
        failures: dict[str, str] = {}
        notes: dict[str, str] = {}
        for path in paths:
            run = RunDir(path)
            summary = run.read_summary() or {}
            events = run.events()
            curves[path.name] = RunCurves.from_events(events, task=str(summary.get("task", "")))
            if (error := failure_of(summary, events)) is not None:
                failures[path.name] = error
            if summary.get("note"):
                notes[path.name] = str(summary["note"])
        self.post_message(self.Opened([p.name for p in paths], curves, failures, notes))

    @on(Opened)
    def _on_opened(self, message: Opened) -> None:
        self.opened = message.names
        chart = self.query_one("#runs-chart", LossChart)
        chart.clear()
        table = self.query_one(EpochTable)
        if len(message.names) == 1:
            name = message.names[0]
            curves = message.curves[name]
            chart.set_series("train loss (step)", curves.steps)
            chart.set_series("train loss (epoch)", curves.epoch_train, marker="dot")
            chart.set_series("eval loss", curves.evals, marker="dot")
            table.show(curves)
            self.query_one(ClassReport).show(curves)
            epochs = sum(float(row.epoch).is_integer() for row in curves.epochs.values())
            title = f"{name}: {plural(epochs, 'epoch')}, {plural(len(curves.steps), 'loss point')}"
            ancestors = lineage(name, self.runs)[1:]
            if ancestors:
                title += " · from " + " ← ".join(ancestors)
            self._title_has_classes = curves.last_confusion is not None
        else:
            for name in message.names:
                chart.set_series(name, message.curves[name].steps)
            table.show(RunCurves())
            self.query_one(ClassReport).show(RunCurves())
            title = f"train loss of {len(message.names)} runs: " + ", ".join(message.names)
            self._title_has_classes = False
        self._detail_title = title
        self._detail_failure = message.failures.get(message.names[0]) if len(message.names) == 1 else None
        self._detail_note = message.notes.get(message.names[0]) if len(message.names) == 1 else None
        self._render_detail_title()

    def _title(self, content: Content, *, lines_under: bool = False) -> None:
        """The detail's title line; ``lines_under``: a run's failure or note, on the lines under it."""
        title = self.query_one("#runs-detail-title", Static)
        title.set_class(lines_under, "-lines-under")
        title.update(content)

    def _render_detail_title(self) -> None:
        """The open run's title, what v swaps to from what shows now, and why the run failed if it did."""
        title = self._detail_title
        if self._title_has_classes:
            showing = self.query_one(ClassReport).display
            title += " · v: the curves" if showing else " · v: confusion matrix"
        if self._detail_failure is not None:
            title += f"\nfailed: {self._detail_failure}"
        elif self._detail_note is not None:
            title += f"\n{self._detail_note}"
        self._title(Content(title), lines_under=self._detail_failure is not None or self._detail_note is not None)

    def action_toggle_classes(self) -> None:
        """Swap the chart for the open run's class report, and back."""
        report = self.query_one(ClassReport)
        if not report.display and not self._title_has_classes:
            if not self.opened:
                self.app.notify("v shows an open run's confusion matrix: enter opens the highlighted run")
            else:
                self.app.notify("no confusion matrix here: a classification run's evaluations have one")
            return
        report.display = not report.display
        self.query_one("#runs-chart", LossChart).display = not report.display
        self._render_detail_title()

    def action_load_config(self) -> None:
        info = self.current_run("l (load its config)")
        if info is not None:
            self.post_message(self.LoadConfig(RunDir(info.path).config_path))

    def action_clone(self) -> None:
        info = self.current_run("n (new from it)")
        if info is not None:
            self.post_message(self.CloneRun(info.path))

    def action_predict_with(self) -> None:
        info = self.current_run("p (predict with it)")
        if info is not None:
            self.post_message(self.UseForPredict(info.path))

    def action_resume(self) -> None:
        # Whether the run can go on (stopped, failed or killed; not finished or live) is the engine's call.
        info = self.current_run("r (resume)")
        if info is not None:
            self.post_message(self.ResumeRun(info.path))

    def action_attach(self) -> None:
        info = self.current_run("a (attach)")
        if info is not None:
            self.post_message(self.AttachRun(info.path))

    def action_refresh(self) -> None:
        self.refresh_runs()

    def action_export(self) -> None:
        from engine.adapters import is_adapter_folder
        from engine.export import model_folder

        info = self.current_run("e (export)")
        if info is None:
            return
        run = RunDir(info.path)
        try:
            model_folder(run)  # a run without a model has nothing to ask a folder for
        except UserError as exc:
            self.app.notify(str(exc).removeprefix("export: "), severity="error")
            return
        self._ask_export(run, is_adapter_folder(run.model_dir))

    def _ask_export(self, run: RunDir, adapter: bool, choice: ExportChoice | None = None, error: str = "") -> None:
        def chosen(choice: ExportChoice | None) -> None:
            from engine.export import NotEmptyError, check_destination

            if choice is None:
                return
            try:  # a folder that cannot take the export: the dialog again at once, no "exporting…" first
                check_destination(Path(choice.out).expanduser(), run, force=choice.force)
            except NotEmptyError as exc:
                self._ask_export(run, adapter, choice, _not_empty(exc))
                return
            except UserError as exc:
                self._ask_export(run, adapter, choice, str(exc).removeprefix("export: "))
                return
            self.app.notify(f"exporting {run.name} to {choice.out}…")
            self._export(run, adapter, choice)

        self.app.push_screen(ExportScreen(run.name, adapter=adapter, choice=choice, error=error), chosen)

    @work(thread=True, exclusive=True, group="runs-export", exit_on_error=False, description="export a run")
    def _export(self, run: RunDir, adapter: bool, choice: ExportChoice) -> None:
        from engine.export import NotEmptyError, export

        try:
            done = export(run, Path(choice.out).expanduser(), merge=choice.merge, force=choice.force)
        except NotEmptyError as exc:
            why = _not_empty(exc)
        except UserError as exc:  # a folder that cannot be written, a run that trains again, ...
            why = str(exc).removeprefix("export: ")
        else:
            self.app.call_from_thread(self.app.notify, done.summary, title="exported", timeout=10)
            return
        # the dialog again, with what was typed and why it failed: the path or a box is what to fix
        self.app.call_from_thread(self._ask_export, run, adapter, choice, why)

    # -- the queue ------------------------------------------------------------------------------------------
    def action_move_queued(self, delta: int) -> None:
        entry = self.current_entry()
        if entry is None or entry.state != queue.QUEUED:
            self.app.notify("K/J move a queued entry: highlight one first", severity="warning")
            return
        try:
            queue.move(self.runs_dir, entry.id, delta)
        except UserError as exc:
            self.app.notify(str(exc), severity="warning")
            return
        self.refresh_runs()  # the new listing puts the cursor where the entry went

    def action_remove_queued(self) -> None:
        entry = self.current_entry()
        if entry is None:
            self.app.notify("x takes a queued entry off the queue: highlight one first", severity="warning")
            return
        try:
            queue.remove(self.runs_dir, [entry.id])
        except UserError as exc:
            self.app.notify(str(exc), severity="warning")
            return
        self.app.notify(f"took #{entry.id} off the queue")
        self.refresh_runs()

    def action_toggle_runner(self) -> None:
        self._toggle_runner(self.runs_dir, self.runner is None)

    @work(thread=True, exclusive=True, group="runs-runner", exit_on_error=False, description="queue runner")
    def _toggle_runner(self, runs_dir: str, start: bool) -> None:
        # Starting waits until the runner holds its lock, stopping until it exits: up to seconds, off the UI.
        try:
            if start:
                note = f"queue runner started (pid {queue.start_runner(runs_dir)}); it outlives the workbench"
            else:
                pid = queue.stop_runner(runs_dir)
                note = f"queue runner (pid {pid}) stopped; runs it started go on" if pid else "no queue runner runs"
        except UserError as exc:
            note = str(exc)
        self.app.call_from_thread(self._runner_toggled, note)

    def _runner_toggled(self, note: str) -> None:
        self.app.notify(note)
        self.refresh_runs()

    @on(Worker.StateChanged)
    def _on_worker(self, event: Worker.StateChanged) -> None:
        if event.worker.group.startswith("runs") and event.state == WorkerState.ERROR:
            assert event.worker.error is not None
            message, _tb = describe_failure(event.worker.error)
            self._title(Content(f"✗ {message}"))
