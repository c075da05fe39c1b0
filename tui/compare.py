"""The comparison of runs (the Runs panel's ``c``): what differs in their configs, their evaluations side by side
with each metric's best marked, their curves overlaid, and the ranking. ``engine.compare`` does the work; this
screen draws its ``Comparison``."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from rich.cells import cell_len
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static
from textual.worker import Worker, WorkerState

from engine.compare import (
    METRIC_LABELS,
    NAMING_KEYS,
    Comparison,
    compare,
    format_value,
    load_compared_run,
    setting_name,
)
from engine.errors import describe_failure
from engine.runs import RunDir
from tui.widgets.fixed_text import FixedText
from tui.widgets.footer import WorkbenchFooter
from tui.widgets.loss_chart import LossChart
from tui.widgets.paged_table import fit
from tui.widgets.sized_table import SizedTable

#: The cells a run's legend takes as the title of its column of evaluations, where that tells the runs apart.
RUN_TITLE = 16


def run_titles(legends: list[str], widest: list[int]) -> list[tuple[str, int]]:
    """Each run's column of evaluations: its title and width. As wide as its widest value (``widest``), its legend
    cut to RUN_TITLE cells, or to as many more as tell the cut legends apart, with "…" where it is cut: the
    chart's legend above says them whole, and the values must fit beside the settings."""
    title = RUN_TITLE
    longest = max((cell_len(legend) for legend in legends), default=0)
    while title < longest and len({fit(legend, title) for legend in legends}) < len(legends):
        title += 1
    widths = [max(values, min(cell_len(legend), title)) for legend, values in zip(legends, widest, strict=True)]
    return [
        (legend if cell_len(legend) <= width else fit(legend, width), width)
        for legend, width in zip(legends, widths, strict=True)
    ]


class CompareScreen(ModalScreen[None]):
    """Runs side by side; ``x`` swaps the chart between the train loss per step and the eval metric."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "dismiss", "Close", tooltip="Close the comparison"),
        Binding("x", "swap_chart", "Loss/eval", tooltip="Chart the eval metric per evaluation, or the train loss"),
    ]

    class Compared(Message):
        def __init__(self, comparison: Comparison) -> None:
            super().__init__()
            self.comparison = comparison

    def __init__(self, paths: list[Path], why: str) -> None:
        super().__init__()
        self.paths = paths
        #: What is compared: "3 marked runs", "sweep 4f2a", "RUN and its parent".
        self.why = why
        self.comparison: Comparison | None = None
        self.chart_shows = "loss"

    def compose(self) -> ComposeResult:
        with Vertical(id="compare-dialog"):
            yield FixedText(f"Compare {self.why}: reading…", id="compare-title", classes="panel-title")
            yield Static("", id="compare-warnings")
            yield FixedText("train loss per step", id="compare-chart-title", classes="side-title")
            yield LossChart(empty_text="reading the runs…", id="compare-chart")
            with Horizontal(id="compare-tables"):
                yield SizedTable[Text](id="compare-diff", cursor_type="row", zebra_stripes=True)
                yield SizedTable[Text](id="compare-evals", cursor_type="row", zebra_stripes=True)
            yield Static("", id="compare-ranking")
        yield WorkbenchFooter()

    def on_mount(self) -> None:
        self.query_one("#compare-warnings", Static).display = False
        self._read(self.paths)

    @work(thread=True, exclusive=True, group="compare", exit_on_error=False, description="read the compared runs")
    def _read(self, paths: list[Path]) -> None:
        self.post_message(self.Compared(compare([load_compared_run(RunDir(p)) for p in paths])))

    @on(Worker.StateChanged)
    def _on_worker(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "compare" and event.state == WorkerState.ERROR:
            assert event.worker.error is not None
            message, _tb = describe_failure(event.worker.error)
            self.query_one("#compare-title", Static).update(Content(f"Compare {self.why}: ✗ {message}"))

    @on(Compared)
    def _on_compared(self, message: Compared) -> None:
        c = self.comparison = message.comparison
        label = METRIC_LABELS.get(c.ranking_metric, c.ranking_metric)
        self.query_one("#compare-title", Static).update(
            Content(f"Compare {self.why} · ranked by {label} · x: loss/eval · Esc closes")
        )
        warnings = self.query_one("#compare-warnings", Static)
        warnings.update(Content("\n".join(f"⚠ {w}" for w in c.warnings)))
        warnings.display = bool(c.warnings)
        self._fill_diff(c)
        self._fill_evals(c)
        self._fill_ranking(c)
        self._draw_chart()
        self.query_one("#compare-evals", DataTable).focus()

    def _fill_diff(self, c: Comparison) -> None:
        table = self.query_one("#compare-diff", DataTable)
        table.clear(columns=True)
        # output.run_name names a run, which its column's legend already does (a sweep's differ in every run)
        rows = [row for row in c.diff if row.key not in NAMING_KEYS]
        if not rows:  # one narrow column, so that the evaluations beside it have the room
            table.add_column("setting")
            table.add_row(Text("the same config"))
            return
        cells = [[Text(format_value(v, compact=True)) for v in row.values] for row in rows]
        # titled as the evaluations' columns are: a whole legend ("batch=4 max_len=64 n_train=600") would push
        # the next run's values out of the table's half of the screen
        widest = [max(line[i].cell_len for line in cells) for i in range(len(c.legends))]
        table.add_column("setting")
        for title, width in run_titles(c.legends, widest):
            table.add_column(title, width=width)
        leaves = [setting_name(row.key) for row in rows]
        for row, leaf, values in zip(rows, leaves, cells, strict=True):
            # the key without its section where that names one setting alone ("learning_rate", "lora.r"): the
            # section takes a third of a narrow table
            table.add_row(Text(leaf if leaves.count(leaf) == 1 else row.key), *values)

    def _fill_evals(self, c: Comparison) -> None:
        table = self.query_one("#compare-evals", DataTable)
        table.clear(columns=True)
        rows: list[list[Text]] = []
        if not c.eval_rows:
            rows.append([Text("no evaluation yet"), Text(""), *(Text("") for _ in c.runs)])
        for m in c.metrics:
            name = f"{METRIC_LABELS.get(m, m)} {'↑' if c.greater_is_better(m) else '↓'}"
            for n, row in enumerate(c.eval_rows):
                cells = []
                for i in range(len(c.runs)):
                    value = row.value(m, i)
                    best = c.is_best(m, value)
                    text = "-" if value is None else f"{value:.4f}" + (" ★" if best else "")
                    cells.append(Text(text, style="bold green" if best else "", justify="right"))
                rows.append([Text(name if n == 0 else ""), Text(row.label), *cells])
        table.add_columns("metric", c.eval_key)
        widest = [max((cells[2 + i].cell_len for cells in rows), default=0) for i in range(len(c.legends))]
        for title, width in run_titles(c.legends, widest):
            table.add_column(title, width=width)
        for cells in rows:
            table.add_row(*cells)

    def _fill_ranking(self, c: Comparison) -> None:
        label = METRIC_LABELS.get(c.ranking_metric, c.ranking_metric)
        best = c.best_run
        if c.not_ranked:
            text = c.not_ranked
        elif best is None:
            text = f"no run has an evaluation of {label} yet: nothing to rank"
        else:
            places, place, before = [], 0, object()
            for n, r in enumerate(c.ranking, 1):
                place = place if r.value is not None and r.value == before else n  # a tie shares its place
                before = r.value
                places.append(f"{place}. {c.legends[r.run]} " + ("-" if r.value is None else f"{r.value:.4f}"))
            text = f"by {label}: " + " · ".join(places)
            if c.best_values:
                settings = ", ".join(f"{k}={format_value(v, compact=True)}" for k, v in c.best_values)
                text += f"\nbest settings: {settings}"
        self.query_one("#compare-ranking", Static).update(Content(text))

    def _draw_chart(self) -> None:
        c = self.comparison
        if c is None:
            return
        chart = self.query_one("#compare-chart", LossChart)
        chart.clear()
        for legend, run in zip(c.legends, c.runs, strict=True):
            if self.chart_shows == "loss":
                chart.set_series(legend, run.step_losses)
            else:
                metric = c.ranking_metric
                chart.set_series(legend, [(e.step, e.metrics[metric]) for e in run.evaluations if metric in e.metrics])
        label = METRIC_LABELS.get(c.ranking_metric, c.ranking_metric)
        chart.empty_text = "no steps logged yet" if self.chart_shows == "loss" else f"no {label} yet"
        title = "train loss per step" if self.chart_shows == "loss" else f"{label} per evaluation, by step"
        self.query_one("#compare-chart-title", Static).update(Content(f"{title} (x swaps)"))

    def action_swap_chart(self) -> None:
        self.chart_shows = "eval" if self.chart_shows == "loss" else "loss"
        self._draw_chart()
