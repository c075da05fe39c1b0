"""Per-epoch metrics, and the evaluations inside epochs (eval_strategy: steps): folded from engine events (live or
read back from events.jsonl) and shown as a table."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from rich.text import Text

from engine.events import EpochEnded, Evaluated, Event, RunStarted, StepLogged, fmt_duration, fmt_epoch
from tui.widgets.sized_table import SizedTable

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
    #: The latest classification evaluation that has a confusion matrix (``ClassReport`` shows it).
    last_confusion: Evaluated | None = None

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

    def add(self, event: Event) -> bool:
        """Fold one event in; True when the chart or the table changed."""
        if isinstance(event, RunStarted):
            self.task = event.task
            self.label_names = event.label_names
            return False
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
                self.last_confusion = event
            return True
        return False


class EpochTable(SizedTable[Text]):
    """One row per epoch (and per evaluation inside one, its epoch a fraction): train loss, eval loss, accuracy and
    macro-F1 (or perplexity for LMs), and time."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._lm: bool | None = None

    def show(self, curves: RunCurves) -> None:
        lm = curves.is_lm or any(r.perplexity is not None for r in curves.epochs.values())
        if lm != self._lm:
            self.clear(columns=True)
            third = "perplexity" if lm else "macro-F1"
            # Text, not str: DataTable reads a str as markup, which loads Rich's emoji table (perf-log, cause 40).
            self.add_columns(*map(Text, ("epoch", "train loss", "eval loss", "accuracy", third, "time")))
            self._lm = lm
        else:
            self.clear()
        for step, row in sorted(curves.epochs.items()):
            third_value = fmt_number(row.perplexity, 2) if lm else fmt_number(row.macro_f1, 3)
            cells = (
                fmt_epoch(row.epoch),
                fmt_number(row.train_loss),
                fmt_number(row.eval_loss),
                fmt_number(row.accuracy, 3),
                third_value,
                fmt_duration(row.seconds),
            )
            self.add_row(*map(Text, cells), key=str(step))
        if self.row_count:
            self.move_cursor(row=self.row_count - 1, animate=False)
