"""Runs panel: the runs folder as a list; open a run's curves and epochs; overlay marked runs; reuse a run."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.message import Message
from textual.timer import Timer
from textual.widgets import DataTable, Static
from textual.worker import Worker, WorkerState

from engine.errors import describe_failure
from engine.events import fmt_duration, fmt_memory
from engine.runs import LIVE, RunDir, RunInfo, lineage, list_runs
from tui.panels import PANELS
from tui.widgets.class_report import ClassReport
from tui.widgets.epoch_table import EpochTable, RunCurves
from tui.widgets.fixed_text import FixedText
from tui.widgets.loss_chart import LossChart
from tui.widgets.sized_table import SizedTable

TITLE = PANELS["runs"][1]


#: How often the list is read again while it shows a live run.
LIVE_REFRESH_SECONDS = 2.0


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
        # Off the footer, which is full at 80 columns; the open run's title names it, and F1 lists it.
        Binding("v", "toggle_classes", "Classes", show=False, tooltip="Swap the curves for the confusion matrix"),
        Binding("ctrl+r", "refresh", "Reload list", show=False, tooltip="Reload the list of runs"),
    ]

    class Listed(Message):
        def __init__(self, runs: list[RunInfo]) -> None:
            super().__init__()
            self.runs = runs

    class Opened(Message):
        def __init__(self, names: list[str], curves: dict[str, RunCurves]) -> None:
            super().__init__()
            self.names = names
            self.curves = curves

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
        self.marked: set[str] = set()
        #: The one pending re-listing while a live run is on the list (every listing would otherwise add one).
        self._live_timer: Timer | None = None
        self.opened: list[str] = []

    def compose(self) -> ComposeResult:
        yield FixedText(TITLE, id="runs-title", classes="panel-title")
        yield SizedTable[str](id="runs-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="runs-detail-title", classes="side-title")
        with Horizontal(id="runs-detail"):
            yield LossChart(empty_text="enter opens a run; m marks runs, o overlays them", id="runs-chart")
            yield ClassReport(id="runs-classes")
            yield EpochTable(id="runs-epochs")

    def on_mount(self) -> None:
        table = self.query_one("#runs-table", DataTable)
        table.add_column(" ", key="mark", width=1)
        table.add_columns("run", "status", "best", "date", "time", "task", "model", "memory")
        self.query_one(EpochTable).show(RunCurves())
        self.query_one(ClassReport).display = False
        self._render_title()

    def focus_main(self) -> None:
        self.query_one("#runs-table", DataTable).focus()

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
        self.post_message(self.Listed(list_runs(runs_dir)))

    @on(Listed)
    def _on_listed(self, message: Listed) -> None:
        self.runs = message.runs
        names = {r.name for r in self.runs}
        self.marked &= names
        table = self.query_one("#runs-table", DataTable)
        cursor = table.cursor_row
        table.clear()
        for r in self.runs:
            table.add_row(
                "✓" if r.name in self.marked else " ",
                r.name,
                r.status_text,
                r.best_text,
                r.started_text,
                fmt_duration(r.duration_seconds),
                r.task or "-",
                r.model or "-",
                fmt_memory(r.peak_memory_mb),
                key=r.name,
            )
        if self.runs:
            table.move_cursor(row=min(max(cursor, 0), len(self.runs) - 1), animate=False)
        self._render_title()
        live = any(r.status in LIVE for r in self.runs)
        if live and self._live_timer is None:  # their step and ETA move: list again while on screen
            self._live_timer = self.set_timer(LIVE_REFRESH_SECONDS, self._refresh_live)

    def _refresh_live(self) -> None:
        self._live_timer = None
        if self.display and self.region.area > 0:
            self.refresh_runs()

    def _render_title(self) -> None:
        parts = [TITLE, self.runs_dir, f"{len(self.runs)} run{'s' if len(self.runs) != 1 else ''}"]
        if self.marked:
            parts.append(f"{len(self.marked)} marked")
        self.query_one("#runs-title", Static).update(Content(" · ".join(parts)))

    # -- selection ------------------------------------------------------------------------------------------
    def current(self) -> RunInfo | None:
        table = self.query_one("#runs-table", DataTable)
        if not self.runs or table.cursor_row < 0 or table.cursor_row >= len(self.runs):
            return None
        return self.runs[table.cursor_row]

    @on(DataTable.RowSelected, "#runs-table")
    def _on_selected(self, event: DataTable.RowSelected) -> None:
        info = self.current()
        if info is not None:
            self.open_runs([info.name])

    def action_mark(self) -> None:
        info = self.current()
        if info is None:
            return
        self.marked ^= {info.name}
        table = self.query_one("#runs-table", DataTable)
        table.update_cell(info.name, "mark", "✓" if info.name in self.marked else " ")
        self._render_title()

    def action_overlay(self) -> None:
        names = [r.name for r in self.runs if r.name in self.marked]
        if len(names) < 2:
            self.app.notify("mark two or more runs with m, then press o", severity="warning")
            return
        self.open_runs(names)

    def action_compare(self) -> None:
        from tui.compare import CompareScreen  # with its first use, not before the workbench's first frame

        marked = [r for r in self.runs if r.name in self.marked]
        info = self.current()
        if len(marked) >= 2:
            runs, why = marked, f"{len(marked)} marked runs"
        elif info is not None and info.sweep:
            runs = [r for r in self.runs if r.sweep == info.sweep]
            runs, why = runs[::-1], f"sweep {info.sweep} ({len(runs)} runs)"  # oldest first: the order queued
        elif info is not None and info.parent and (parent := self._run_named(info.parent)) is not None:
            runs, why = [parent, info], f"{info.name} and its parent"
        else:
            runs, why = [], ""
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
        self.query_one("#runs-detail-title", Static).update(Content(f"reading {', '.join(names)}…"))
        self._read([Path(self.runs_dir) / n for n in names])

    @work(thread=True, exclusive=True, group="runs-open", exit_on_error=False, description="read run events")
    def _read(self, paths: list[Path]) -> None:
        curves: dict[str, RunCurves] = {}
        for path in paths:
            run = RunDir(path)
            summary = run.read_summary() or {}
            curves[path.name] = RunCurves.from_events(run.events(), task=str(summary.get("task", "")))
        self.post_message(self.Opened([p.name for p in paths], curves))

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
            title = f"{name}: {epochs} epochs, {len(curves.steps)} loss points"
            ancestors = lineage(name, self.runs)[1:]
            if ancestors:
                title += " · from " + " ← ".join(ancestors)
            if curves.last_confusion is not None:
                title += " · v: confusion matrix"
        else:
            for name in message.names:
                chart.set_series(name, message.curves[name].steps)
            table.show(RunCurves())
            self.query_one(ClassReport).show(RunCurves())
            title = f"train loss of {len(message.names)} runs: " + ", ".join(message.names)
        self.query_one("#runs-detail-title", Static).update(Content(title))

    def action_toggle_classes(self) -> None:
        """Swap the chart for the open run's class report, and back."""
        report = self.query_one(ClassReport)
        report.display = not report.display
        self.query_one("#runs-chart", LossChart).display = not report.display

    def action_load_config(self) -> None:
        info = self.current()
        if info is not None:
            self.post_message(self.LoadConfig(RunDir(info.path).config_path))

    def action_clone(self) -> None:
        info = self.current()
        if info is not None:
            self.post_message(self.CloneRun(info.path))

    def action_predict_with(self) -> None:
        info = self.current()
        if info is not None:
            self.post_message(self.UseForPredict(info.path))

    def action_resume(self) -> None:
        # Whether the run can go on (stopped, failed or killed; not finished or live) is the engine's call.
        info = self.current()
        if info is not None:
            self.post_message(self.ResumeRun(info.path))

    def action_attach(self) -> None:
        info = self.current()
        if info is not None:
            self.post_message(self.AttachRun(info.path))

    def action_refresh(self) -> None:
        self.refresh_runs()

    @on(Worker.StateChanged)
    def _on_worker(self, event: Worker.StateChanged) -> None:
        if event.worker.group in ("runs", "runs-open") and event.state == WorkerState.ERROR:
            assert event.worker.error is not None
            message, _tb = describe_failure(event.worker.error)
            self.query_one("#runs-detail-title", Static).update(Content(f"✗ {message}"))
