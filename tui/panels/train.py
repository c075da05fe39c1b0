"""Train panel: run state, progress, live loss chart, per-epoch table and the log pane."""

from __future__ import annotations

import textwrap
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.widgets import Log, ProgressBar, Static

from engine.config import RunConfig
from engine.events import (
    CheckpointSaved,
    DeviceUsage,
    Event,
    LogMessage,
    Paused,
    Resumed,
    RunFailed,
    RunFinished,
    RunStarted,
    Status,
    StepDone,
    StepLogged,
    StopRequested,
    fmt_duration,
    fmt_memory,
)
from tui import heap
from tui.controller import RunState
from tui.panels import PANELS
from tui.widgets.epoch_table import EpochTable, RunCurves
from tui.widgets.fixed_text import FixedText
from tui.widgets.loss_chart import LossChart
from tui.widgets.panel_bar import focus_now

TITLE = PANELS["train"][1]


def usage_text(u: DeviceUsage) -> str:
    """ "NVIDIA H100 80GB HBM3 87% 12.3 GiB/79.6 GiB" or "CPU 195% 1.2 GiB RSS": the device as a user names it."""
    busy = "" if u.utilization_percent is None else f" {u.utilization_percent:.0f}%"
    if u.device == "CPU":
        return f"CPU{busy} {fmt_memory(u.memory_used_mb)} RSS"
    total = "" if u.memory_total_mb is None else f"/{fmt_memory(u.memory_total_mb)}"
    return f"{u.device}{busy} {fmt_memory(u.memory_used_mb)}{total}"


#: Shown in the status line while the config lets the model run code from its own repository.
REMOTE_CODE_MARK = "⚠ trust_remote_code ON"
#: Steps handed over at once beyond which they are a run's history read from its folder, not live steps.
HISTORY_FREEZE_STEPS = 10_000


def fmt_params(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.1f}B"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}k"
    return str(n)


class FollowingLog(Log):
    """Textual's Log, which goes on following new lines after a resize: a Log follows only while scrolled to its
    end, and a resize that makes it smaller leaves it short of the new end, so it stopped following for good."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._following = True

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._following = new_value >= self.max_scroll_y

    def on_resize(self) -> None:
        if self._following:
            self.scroll_end(animate=False, immediate=True, x_axis=False)


class TrainPanel(Vertical):
    """Shows one run at a time; the app owns the run and feeds this panel its events."""

    def __init__(self, cfg: RunConfig, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.cfg = cfg
        self.from_form = True
        self.state = RunState.IDLE
        self.detail = ""
        self.started: RunStarted | None = None
        self.last_step: StepLogged | None = None
        #: The last optimizer step done (StepDone comes every step; StepLogged only at logging steps).
        self.step_done = 0
        #: The run's device, as last read (DeviceUsage every few seconds while it trains).
        self.usage: DeviceUsage | None = None
        self.curves = RunCurves(task=cfg.task)
        self.error: str | None = None
        #: A resumed run's earlier events, folded in when its RunStarted says which step it resumes from.
        self.history: list[Event] = []

    def compose(self) -> ComposeResult:
        yield FixedText("", id="train-status", classes="panel-title")
        with Horizontal(id="train-progress-row", classes="status-row"):
            yield ProgressBar(total=1, show_eta=False, id="train-progress")
            yield FixedText("", id="train-speed")
        yield Static("", id="train-error", classes="error")
        with Horizontal(id="train-body"):
            # Steps reach the panel in batches (tui.bridge), so the chart is redrawn in the same frame as the
            # progress line: one screen update per batch of steps.
            yield LossChart(empty_text="loss: no steps yet (s starts a run)", id="train-chart")
            yield EpochTable(id="train-epochs")
        yield FollowingLog(max_lines=2000, id="train-log", auto_scroll=True)

    def on_mount(self) -> None:
        self.query_one("#train-error").display = False
        self.query_one(EpochTable).show(self.curves)
        self._render_status()
        self._render_progress()

    def focus_main(self) -> None:
        focus_now(self.query_one(EpochTable))

    def on_resize(self) -> None:
        self._render_progress()  # the progress line's long or short form, for its new width

    # -- state ----------------------------------------------------------------------------------------------
    def set_config(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        if not self.state.active:
            self._render_status()
            if self.started is None and self.curves.task != cfg.task:  # no run shown: the columns of the next
                self.curves.task = cfg.task
                self.query_one(EpochTable).show(self.curves)

    def set_state(self, state: RunState, detail: str = "") -> None:
        # The speed and ETA show while the run trains only: they go while it is paused or once it has ended.
        was_training = self.state is RunState.TRAINING
        self.state = state
        self.detail = detail
        self._render_status()
        if was_training != (state is RunState.TRAINING) or self.started is None:  # before RunStarted, it says why
            self._render_progress()

    def reset(self, cfg: RunConfig, what: str = "new run", *, from_form: bool = True) -> None:
        """Clear the previous run's chart, table and error for a new (or resumed) run; ``from_form``: started from
        the Config form (s), where its fix is made (a run attached or resumed has a config of its own)."""
        self.cfg = cfg
        self.from_form = from_form
        self.started = None
        self.last_step = None
        self.step_done = 0
        self.usage = None
        self.error = None
        self.history = []
        self.curves = RunCurves(task=cfg.task)
        self.query_one("#train-error").display = False
        chart = self.query_one(LossChart)
        chart.empty_text = "loss: waiting for the first logged step"
        chart.clear()
        self.query_one(EpochTable).show(self.curves)
        self.query_one("#train-progress", ProgressBar).update(total=1, progress=0)
        self.write_log(f"--- {what}: {cfg.task} · {cfg.model.name_or_path} · {cfg.data.source}")
        self._render_progress()

    def set_history(self, events: list[Event]) -> None:
        """The events of a resumed run's earlier sessions (UI thread; before its RunStarted arrives)."""
        self.history = events

    def _fold_history(self, started: RunStarted) -> None:
        """Show the curves and epochs up to where ``started`` resumes; the run redoes what came after it (its
        RunStarted drops those from the curves)."""
        history, self.history = self.history, []
        self.curves = RunCurves.from_events([*history, started], task=self.curves.task)
        chart = self.query_one(LossChart)
        chart.set_series("train loss (step)", self.curves.steps)
        if self.curves.epoch_train:
            chart.set_series("train loss (epoch)", self.curves.epoch_train, marker="dot")
        if self.curves.evals:
            chart.set_series("eval loss", self.curves.evals, marker="dot")
        self.query_one(EpochTable).show(self.curves)

    def write_log(self, text: str) -> None:
        """Text in the log, each of its lines wrapped to the log's width (Textual's Log cuts a long line at the
        edge); a wrapped line goes on indented under itself, so a traceback keeps its shape."""
        log = self.query_one(Log)
        width = log.scrollable_content_region.width
        for line in text.split("\n"):
            if width < 20 or len(line) <= width:  # not laid out yet, or fits
                log.write_line(line)
                continue
            indent = line[: len(line) - len(line.lstrip())] + "  "
            log.write_lines(textwrap.wrap(line, width, subsequent_indent=indent, break_on_hyphens=False))

    # -- events ---------------------------------------------------------------------------------------------
    def add_steps(self, steps: list[StepLogged | StepDone]) -> None:
        logged = [s for s in steps if isinstance(s, StepLogged)]
        last = self.last_step.step if self.last_step is not None else None
        for step in steps:
            if isinstance(step, StepLogged):
                if last is not None and step.step <= last:
                    self.step_done = 0  # a later session, resumed below the last one's steps (a killed run's)
                last = step.step
            self.step_done = max(self.step_done, step.step)
        if logged:
            points = self.curves.add_steps(logged)
            self.last_step = logged[-1]
            self.query_one(LossChart).extend("train loss (step)", points)
            if len(logged) > HISTORY_FREEZE_STEPS:
                # An attached run's history: it lives as long as the panel shows the run, so keep the collector's
                # passes from walking it again and again (tui/heap.py).
                heap.freeze()
        self._render_progress()

    def handle(self, event: Event) -> None:
        """Fold one engine event into the panel (UI thread)."""
        if isinstance(event, Paused | RunFinished | RunFailed) and self.usage is not None:
            self.usage = None  # a device reading is shown only while the run trains: the header names the device
            self._render_status()
        if isinstance(event, Paused | StopRequested | RunFinished) and event.step > self.step_done:
            # a follower's step count comes from the run's beacon, which may lag this event by a step; a run's
            # last steps may come in no StepDone before its end (the SFT engine's, shorter than logging_steps)
            self.step_done = event.step
            self._render_progress()
        if self.curves.add(event):
            self.query_one(EpochTable).show(self.curves)
            chart = self.query_one(LossChart)
            redone = isinstance(event, RunStarted)  # a later session's: the points past its start step went
            if redone:
                chart.set_series("train loss (step)", self.curves.steps)
            if self.curves.epoch_train or redone:
                chart.set_series("train loss (epoch)", self.curves.epoch_train, marker="dot")
            if self.curves.evals or redone:
                chart.set_series("eval loss", self.curves.evals, marker="dot")
        if isinstance(event, RunStarted):
            self.started = event
            # steps that followed it may have been taken from the bridge before this event is handled
            self.step_done = max(self.step_done, event.start_step)
            if self.history:
                self._fold_history(event)
            self.query_one("#train-progress", ProgressBar).update(
                total=max(event.total_steps, 1), progress=event.start_step
            )
            self.write_log(
                f"run {event.run_name}: {event.num_train_samples} train samples, "
                f"eval: {event.eval_set or f'{event.num_eval_samples} rows'}, "
                f"{event.total_steps} steps on {event.device} ({event.compute_text})"
                + (f"; resumed at step {event.start_step}" if event.start_step else "")
            )
            self._render_status()
            self._render_progress()
        elif isinstance(event, DeviceUsage):
            self.usage = event
            self._render_status()
        elif isinstance(event, Status):
            self.write_log(f"{event.stage} {event.detail}".rstrip())
        elif isinstance(event, LogMessage):
            self.write_log(f"{event.level}: {event.message}")
        elif isinstance(event, CheckpointSaved):
            self.write_log(f"checkpoint saved at step {event.step}: {event.path}")
        elif isinstance(event, Paused):
            self.write_log(f"paused at step {event.step}")
        elif isinstance(event, Resumed):
            self.write_log(f"resumed at step {event.step}")
        elif isinstance(event, StopRequested):
            self.write_log(f"stopping at step {event.step}; saving what the run has")
        elif isinstance(event, RunFinished):
            self.write_log(
                f"run {event.status} at step {event.step} after {fmt_duration(event.duration_seconds)}; "
                f"model: {event.model_dir or 'not saved'}"
            )
        elif isinstance(event, RunFailed):
            self.show_failure(event.error, event.traceback, user_error=event.user_error)

    def show_failure(self, message: str, tb: str | None = None, *, user_error: bool = False) -> None:
        """The failure above the chart, with what to do next: fix the config (a user error), read the traceback
        (a bug), or resume from the last checkpoint (a process killed or lost before the run could say why)."""
        self.error = message
        if user_error and self.from_form:
            then = "fix it in Config (F3) and press s to start again"
        elif user_error:  # s would start the Config form's file, not this run's
            then = "n in Runs (F6) starts a config from this run to fix"
        elif tb:
            then = "the log below has the traceback"
        else:
            then = "r in Runs resumes it from its last checkpoint"
        box = self.query_one("#train-error", Static)
        box.update(Content(f"✗ {message}  ({then})"))
        box.display = True
        self.write_log(f"error: {message}")
        if tb:
            for line in tb.rstrip().splitlines():
                self.write_log(line)

    # -- rendering ------------------------------------------------------------------------------------------
    def status_text(self) -> str:
        cfg = self.cfg
        parts = [f"{self.state.mark} {self.state}" + (f" ({self.detail})" if self.detail else "")]
        if cfg.model.trust_remote_code:  # early in the line, so that a narrow terminal cannot cut it off
            parts.append(REMOTE_CODE_MARK)
        s = self.started
        if s is not None:
            device = usage_text(self.usage) if self.usage is not None else s.device
            params = s.parameters_text if s.adapter else f"{fmt_params(s.num_parameters)} params"
            parts += [s.model, s.task, s.engine, device, s.compute_text, params]
            if s.num_processes > 1:
                parts.append(f"{s.num_processes} processes · {s.backend} · batch {s.batch_size}")
        else:
            parts += [cfg.model.name_or_path, cfg.task, cfg.engine, f"device {cfg.train.device}"]
            parts.append(f"precision {cfg.train.precision}")
        return " · ".join(parts)

    def _render_status(self) -> None:
        self.query_one("#train-status", Static).update(Content(f"{TITLE}  {self.status_text()}"))

    def progress_text(self, width: int = 0) -> str:
        """Epoch and step as the run counts them now; speed, ETA and loss as of the last logged step (only a run
        that trains has a speed and ETA: not a paused one, nor one that has ended). Longer than ``width``, the
        line takes its short form ("ep 1/3 · 69/450 · … · 12.3/s")."""
        s, logged = self.started, self.last_step
        if s is None:
            if self.state is RunState.IDLE:
                return "no run yet"
            return "preparing…" if self.state.active else "it ended before its first step"
        epoch, step = f"{s.epoch_at(self.step_done)}/{s.num_epochs}", f"{self.step_done}/{s.total_steps}"
        long, short = [f"epoch {epoch}", f"step {step}"], [f"ep {epoch}", step]
        if logged is not None:  # the loss before the speed: a line cut short still has it
            long.append(f"loss {logged.loss:.4f}")
            short.append(f"loss {logged.loss:.4f}")
            if self.state is RunState.TRAINING:
                eta, speed = f"ETA {fmt_duration(logged.eta_seconds)}", f"{logged.samples_per_second:.1f}"
                long += [eta, f"{speed} samples/s"]
                short += [eta, f"{speed}/s"]
        text = " · ".join(long)
        return " · ".join(short) if 0 < width < len(text) else text

    def _render_progress(self) -> None:
        if self.started is not None:
            self.query_one("#train-progress", ProgressBar).update(
                total=max(self.started.total_steps, 1), progress=self.step_done
            )
        speed = self.query_one("#train-speed", Static)
        speed.update(Content(self.progress_text(speed.size.width)))
