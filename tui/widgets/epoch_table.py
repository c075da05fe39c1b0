"""Per-epoch metrics, and the evaluations inside epochs (eval_strategy: steps): folded from engine events (live or
read back from events.jsonl) and shown as a table."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from engine.events import EpochEnded, Evaluated, Event, RunStarted, StepLogged, fmt_duration, fmt_epoch
from tui.widgets.paged_table import Column, PagedTable, RowList, column_widths

Point = tuple[float, float]


def fmt_number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


@dataclass
class EpochRow:
    """An epoch's end, or an evaluation inside an epoch: one optimizer step's train loss and scores."""

    epoch: float
    train_loss: float | None = None
    eval_loss: float | None = None
    accuracy: float | None = None
    macro_f1: float | None = None
    perplexity: float | None = None
    seconds: float = 0.0


@dataclass
class RunCurves:
    """Everything the chart and the epoch table need, built one event at a time."""

    task: str = ""
    steps: list[Point] = field(default_factory=list)
    epoch_train: list[Point] = field(default_factory=list)
    evals: list[Point] = field(default_factory=list)
    #: Rows by the optimizer step they belong to: an epoch's end and its evaluation share one.
    epochs: dict[int, EpochRow] = field(default_factory=dict)
    label_names: list[str] = field(default_factory=list)
    #: The classification evaluations that have a confusion matrix, in order (``ClassReport`` shows the last).
    confusions: list[Evaluated] = field(default_factory=list)

    @property
    def last_confusion(self) -> Evaluated | None:
        return self.confusions[-1] if self.confusions else None

    @classmethod
    def from_events(cls, events: Iterable[Event], task: str = "") -> RunCurves:
        curves = cls(task=task)
        for event in events:
            curves.add(event)
        return curves

    @property
    def is_lm(self) -> bool:
        return self.task in ("masked-lm", "causal-lm")

    def add_steps(self, logged: Iterable[StepLogged]) -> list[Point]:
        """What ``add`` does with each StepLogged, in one go (an attached run's history brings 100,000); returns
        the points added, for the chart to share."""
        points: list[Point] = [(event.step, event.loss) for event in logged]
        self.steps.extend(points)
        return points

    def _redo_after(self, step: int) -> bool:
        """A session that resumes at ``step`` (0: a killed run with no checkpoint starts over) trains the steps
        after it again: the earlier session's points past it go, so that each step has one."""
        before = self._sizes()
        self.steps = [p for p in self.steps if p[0] <= step]
        self.epoch_train = [p for p in self.epoch_train if p[0] <= step]
        self.evals = [p for p in self.evals if p[0] <= step]
        self.epochs = {s: row for s, row in self.epochs.items() if s <= step}
        self.confusions = [e for e in self.confusions if e.step <= step]
        return before != self._sizes()

    def _sizes(self) -> tuple[int, ...]:
        return len(self.steps), len(self.epoch_train), len(self.evals), len(self.epochs), len(self.confusions)

    def add(self, event: Event) -> bool:
        """Fold one event in; True when the chart or the table changed."""
        if isinstance(event, RunStarted):
            self.task = event.task
            self.label_names = event.label_names
            return self._redo_after(event.start_step)
        if isinstance(event, StepLogged):
            self.steps.append((event.step, event.loss))
            return True
        if isinstance(event, EpochEnded):
            row = self.epochs.setdefault(event.step, EpochRow(event.epoch))
            row.epoch = event.epoch
            row.train_loss = event.train_loss
            row.seconds += event.duration_seconds
            self.epoch_train.append((event.step, event.train_loss))
            return True
        if isinstance(event, Evaluated):
            row = self.epochs.setdefault(event.step, EpochRow(event.epoch))
            row.eval_loss = event.eval_loss
            row.accuracy = event.accuracy
            row.macro_f1 = event.macro_f1
            row.perplexity = event.perplexity
            row.seconds += event.duration_seconds
            self.evals.append((event.step, event.eval_loss))
            if event.confusion is not None:
                self.confusions.append(event)
            return True
        return False


class EpochTable(PagedTable[tuple[str, ...]]):
    """One row per epoch (and per evaluation inside one, its epoch a fraction): train loss, eval loss, accuracy and
    macro-F1 (or perplexity for LMs), and time. Drawn line by line like the Data panel's table: Textual's
    ``DataTable`` module then loads only when a sample's tokens or a comparison open (docs/perf-log.md, cause 46)."""

    FOCUS_STYLED = False

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(
            cells=lambda row: row, columns=self._columns_for(False, []), padding=1, zebra_stripes=True, id=id
        )

    @staticmethod
    def _columns_for(lm: bool, rows: Sequence[Sequence[str]]) -> list[Column]:
        titles = ("epoch", "train loss", "eval loss", "accuracy", "perplexity" if lm else "macro-F1", "time")
        return [Column(title, width) for title, width in zip(titles, column_widths(titles, rows), strict=True)]

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return action != "open"  # a row here opens nothing: no "Open" in the footer

    def show(self, curves: RunCurves) -> None:
        lm = curves.is_lm or any(r.perplexity is not None for r in curves.epochs.values())
        rows = [
            (
                fmt_epoch(row.epoch),
                fmt_number(row.train_loss),
                fmt_number(row.eval_loss),
                fmt_number(row.accuracy, 3),
                fmt_number(row.perplexity, 2) if lm else fmt_number(row.macro_f1, 3),
                fmt_duration(row.seconds),
            )
            for _step, row in sorted(curves.epochs.items())
        ]
        self.set_source(RowList(rows), self._columns_for(lm, rows))
        if rows:
            self.cursor = len(rows) - 1
