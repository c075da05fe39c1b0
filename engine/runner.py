"""Runner: one run in a background thread; fans events out to subscribers and owns the RunControl.

The CLI, the TUI and the tests all drive runs through this class::

    runner = Runner(cfg, subscribers=[events.append])
    runner.start(); runner.pause(); runner.resume(); runner.stop(); result = runner.join()

``RunHandle`` is what a front needs of a run: ``Runner`` (this process) and ``engine.detached.DetachedRun`` (a
process of its own, through the run's folder) both are one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import importlib
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from engine.config import RunConfig, TrainConfig, load_config
from engine.control import RunControl
from engine.early_stopping import EarlyStopping
from engine.errors import DISK_ERRNOS, RunFolderError, TrainingDiverged, UserError, describe_failure, os_error_of
from engine.events import (
    EPHEMERAL,
    FIRST_STAGE,
    Emit,
    Evaluated,
    Event,
    LogMessage,
    Paused,
    Resumed,
    RunFailed,
    RunFinished,
    RunStarted,
    Status,
    StepLogged,
)
from engine.live import Beacon
from engine.logs import capture_library_logs
from engine.metrics import class_scores, label_of
from engine.reporting import Reporter, check_installed
from engine.resources import peak_memory_mb
from engine.runs import EventLog, RunDir, create_run_dir, open_run_dir, read_events, remove_run_dir

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What an engine path returns when it ends without raising."""

    status: str  # "finished" | "stopped"
    step: int
    model_dir: Path | None
    metrics: dict[str, float] = field(default_factory=dict)
    #: Early stopping ended the run before its last epoch (the Runner says why, from the evaluations).
    stopped_early: bool = False
    #: ``train.load_best_model_at_end``: the step of the best evaluation, whose weights model/ holds.
    model_step: int | None = None


class EnginePath(Protocol):
    """An engine's ``run``: trains ``cfg`` in ``run_dir``, or continues it from its latest checkpoint (resume)."""

    def __call__(
        self, cfg: RunConfig, emit: Emit, control: RunControl, run_dir: RunDir, *, resume: bool = False
    ) -> Outcome: ...


ENGINES = {"loop": "engine.loop", "sft": "engine.sft"}


def engine_path(name: str) -> EnginePath:
    """The ``run`` function of an engine, imported on first use (torch and friends load here, not earlier)."""
    module = importlib.import_module(ENGINES[name])
    fn: EnginePath = module.run
    return fn


@dataclass
class RunResult:
    status: str  # finished | stopped | failed
    run_dir: Path | None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    user_error: bool = False


class RunHandle(Protocol):
    """A run a front starts and controls: ``run()`` blocks until it has ended; the rest may come from any thread."""

    #: The config the run trains (a resumed run's is the one saved in its folder).
    cfg: RunConfig

    def run(self) -> RunResult: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def stop(self) -> None: ...
    def leave(self) -> None:
        """The front goes away: a detached run trains on (``run()`` returns); a run in the front's own process
        or child stops at its next step and saves."""


class _Summary:
    """Folds the event stream into summary.json fields."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        #: When the run first started (an earlier session's start, once replayed) and when this session did.
        self.started = self.session_started = time.time()
        #: Seconds the run's earlier sessions ran: a resumed run's duration leaves out the time it lay stopped.
        self.earlier_seconds = 0.0
        #: This session's pauses: a pause waits for the user, and is no time the run took.
        self.pauses = _Pauses()
        self.device = ""
        self.precision = ""
        self.step = 0
        self.evals: list[Evaluated] = []
        self.label_names: list[str] = []
        self.note = ""
        #: The most memory any earlier session of the run held (their RunFinished); this one's is read at the end.
        self.peak_memory_mb: float | None = None
        #: The step whose weights model/ holds when it is not the last (train.load_best_model_at_end).
        self.model_step: int | None = None

    def see(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.device, self.precision = event.device, event.precision
            self.step = event.start_step
            self.label_names = event.label_names
        elif isinstance(event, StepLogged | RunFinished):
            self.step = event.step  # RunFinished: the last optimizer step, logged or not
            if isinstance(event, RunFinished):
                self.note = event.note
                if event.peak_memory_mb is not None:
                    self.peak_memory_mb = max(self.peak_memory_mb or 0.0, event.peak_memory_mb)
        elif isinstance(event, Paused | Resumed):
            self.pauses.see(event)
        elif isinstance(event, Evaluated):
            # A run resumed from a checkpoint taken before an evaluation that then happened evaluates again:
            # the same step, the same result. It counts once.
            self.evals = [e for e in self.evals if e.step != event.step]
            self.evals.append(event)

    def replay(self, history: list[Event]) -> None:
        """Fold in the events of the run's earlier sessions (a resumed run's summary covers all of them).

        Evaluations after the step the run resumes from are dropped again when its RunStarted arrives.
        """
        starts = [e for e in history if isinstance(e, RunStarted)]
        if starts:
            self.started = starts[0].time
        self.earlier_seconds = sum(_session_seconds(session) for session in _sessions(history))
        for event in history:
            self.see(event)
        self.pauses = _Pauses()  # the earlier sessions' pauses are out of their seconds already

    def duration(self) -> float:
        """Seconds the run has run, over all its sessions: the gaps between them and its pauses do not count."""
        now = time.time()
        return self.earlier_seconds + now - self.session_started - self.pauses.seconds(now)

    def resumed_at(self, step: int) -> None:
        """Forget evaluations from after ``step``: the resumed run redoes that part."""
        self.evals = [e for e in self.evals if e.step <= step]

    def end_note(self, outcome: Outcome) -> str:
        """Why the run stopped early, and which step model/ holds when it is the best rather than the last, from
        the run's evaluations (earlier sessions' included)."""
        rule = EarlyStopping.for_run(self.cfg.train, self.evals, outcome.step)
        notes = [rule.note(outcome.step)] if outcome.stopped_early else []
        if outcome.model_step is not None:
            notes.append(f"model/ holds step {outcome.model_step}, the best {rule.metric_name} ({rule.best:.4f})")
        return "; ".join(notes)

    def best_model(self) -> dict[str, Any] | None:
        """The best evaluation by train.metric_for_best_model, and whether model/ holds its weights."""
        rule = EarlyStopping.for_run(self.cfg.train, self.evals, self.step)
        if rule.best is None:
            return None
        loaded = self.model_step is not None and self.model_step == rule.best_step
        return {"metric": rule.metric_name, "value": rule.best, "step": rule.best_step, "in_model_dir": loaded}

    def best(self) -> tuple[str | None, float | None]:
        """The run's headline score: its best by ``train.metric_for_best_model`` when the config names one, else
        the best accuracy of a classifier or the lowest eval loss."""
        if not self.evals:
            return None, None
        if self.cfg.train.metric_for_best_model != TrainConfig.metric_for_best_model:
            rule = EarlyStopping.for_run(self.cfg.train, self.evals, max(e.step for e in self.evals))
            if rule.best is not None:
                return rule.metric_name, rule.best
        if self.cfg.task == "classification":
            accs = [e.accuracy for e in self.evals if e.accuracy is not None]
            if accs:
                return "accuracy", max(accs)
        return "eval_loss", min(e.eval_loss for e in self.evals)

    def as_dict(self, status: str, error: str | None = None) -> dict[str, Any]:
        metric, value = self.best()
        last = self.evals[-1] if self.evals else None
        final = {k: v for k, v in (last.__dict__ if last else {}).items() if isinstance(v, float) and k != "time"}
        return {
            "status": status,
            "task": self.cfg.task,
            "engine": self.cfg.engine,
            "model": self.cfg.model.name_or_path,
            "data": self.cfg.data.source,
            "parent": self.cfg.output.parent,
            "sweep": self.cfg.output.sweep,
            "device": self.device,
            "precision": self.precision,
            "started": self.started,
            "ended": time.time(),
            "duration_seconds": self.duration(),
            "step": self.step,
            "best_metric": metric,
            "best_value": value,
            "final_metrics": final,
            "note": self.note,
            "peak_memory_mb": max(self.peak_memory_mb or 0.0, peak_memory_mb()),
            "evaluations": [evaluation_dict(e, self.label_names) for e in self.evals],
            "best_model": self.best_model(),
            "error": error,
        }


class _Pauses:
    """The seconds a session lay paused: from each Paused to its Resumed, or on to ``now`` while it still is."""

    def __init__(self) -> None:
        self.done = 0.0
        self.since: float | None = None

    def see(self, event: Event) -> None:
        if isinstance(event, Paused) and self.since is None:
            self.since = event.time
        elif isinstance(event, Resumed) and self.since is not None:
            self.done, self.since = self.done + event.time - self.since, None

    def seconds(self, now: float) -> float:
        return self.done + (now - self.since if self.since is not None else 0.0)


def _session_seconds(session: list[Event]) -> float:
    """A session's seconds from its first event to its last, less the time it lay paused."""
    pauses = _Pauses()
    for event in session:
        pauses.see(event)
    return session[-1].time - session[0].time - pauses.seconds(session[-1].time)


def _sessions(history: list[Event]) -> list[list[Event]]:
    """A run's events cut into the sessions of its processes: one begins at its engine's first status
    (FIRST_STAGE), or with whatever comes after a session's end (a resume that failed before its engine began)."""
    sessions: list[list[Event]] = []
    for event in history:
        ended = bool(sessions) and isinstance(sessions[-1][-1], RunFinished | RunFailed)
        if not sessions or ended or (isinstance(event, Status) and event.stage == FIRST_STAGE):
            sessions.append([])
        sessions[-1].append(event)
    return sessions


def evaluation_dict(event: Evaluated, label_names: list[str]) -> dict[str, Any]:
    """One evaluation in summary.json: its scores and, for classification, the confusion matrix (rows = true
    labels, columns = predicted, in ``labels`` order) and each class's precision, recall and F1."""
    out: dict[str, Any] = {
        k: v for k, v in event.to_dict().items() if k not in ("type", "time", "confusion") and v is not None
    }
    if event.confusion is not None:
        out["labels"] = [label_of(label_names, i) for i in range(len(event.confusion))]
        out["confusion"] = event.confusion
        out["per_class"] = [dataclasses.asdict(c) for c in class_scores(event.confusion, label_names)]
    return out


def fan_out_many(subscribers: list[Emit], events: list[Event]) -> None:
    """``fan_out`` for a burst (a run's history read from its folder): a subscriber with a ``many`` method takes
    the list in one call, any other gets the events one by one."""
    for fn in subscribers:
        many = getattr(fn, "many", None)
        if many is None:
            for event in events:
                fan_out([fn], event)
            continue
        try:
            many(events)
        except Exception:
            log.exception("event subscriber %r failed on a burst of %d events", fn, len(events))


def fan_out(subscribers: list[Emit], event: Event) -> None:
    """Call each subscriber with ``event``; a broken subscriber must not take the run down."""
    for fn in subscribers:
        try:
            fn(event)
        except Exception:
            log.exception("event subscriber %r failed on %s", fn, event.type)


class Runner:
    """Runs one config in a worker thread and streams its events."""

    def __init__(
        self,
        cfg: RunConfig,
        *,
        subscribers: list[Emit] | tuple[Emit, ...] = (),
        runs_dir: str | Path | None = None,
        resume_dir: str | Path | None = None,
        fresh_dir: str | Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.control = RunControl()
        self.runs_dir = runs_dir
        #: An existing run folder to continue instead of creating a new one (see ``from_run_dir``).
        self.resume_dir = Path(resume_dir) if resume_dir is not None else None
        #: A new run's folder, made (by create_run_dir) before this process started: a detached run's.
        self.fresh_dir = Path(fresh_dir) if fresh_dir is not None else None
        self.run_dir: RunDir | None = None
        self.result: RunResult | None = None
        self._subscribers: list[Emit] = list(subscribers)
        self._thread: threading.Thread | None = None
        #: Set by a process that exists for this run (engine.detached) and turned the cyclic collector off while
        #: it loads: the run turns it back on at its first step (docs/perf-log.md, cause 44).
        self.collector_held = False

    @classmethod
    def from_run_dir(cls, path: str | Path, *, subscribers: list[Emit] | tuple[Emit, ...] = ()) -> Runner:
        """A Runner that continues the stopped, failed or killed run in ``path`` with its saved config.

        Raises UserError when ``path`` is not a run folder, already finished, or is being trained right now.
        """
        run = open_run_dir(path)
        cfg = load_config(run.config_path)
        return cls(cfg, subscribers=subscribers, resume_dir=run.path)

    # -- subscribers ----------------------------------------------------------------------------------------
    def subscribe(self, fn: Emit) -> None:
        self._subscribers.append(fn)

    def _fan_out(self, event: Event) -> None:
        fan_out(self._subscribers, event)

    # -- control --------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the run in a background thread and return at once."""
        if self._thread is not None:
            raise RuntimeError("a Runner runs once; make a new one for the next run")
        self._thread = threading.Thread(target=self._thread_main, name="tunebench-run", daemon=True)
        self._thread.start()

    def _thread_main(self) -> None:
        try:
            self.run()
        except BaseException as exc:
            message, tb = describe_failure(exc)
            self._fan_out(RunFailed(error=message, user_error=False, traceback=tb))
            self.result = RunResult("failed", self.run_dir.path if self.run_dir else None, error=message)

    def stop(self) -> None:
        self.control.request_stop()

    def pause(self) -> None:
        self.control.request_pause()

    def resume(self) -> None:
        self.control.request_resume()

    def leave(self) -> None:
        self.control.request_stop()  # a run in this process cannot outlive it

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float | None = None) -> RunResult | None:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.result

    # -- the run --------------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        """Run to the end in the calling thread; never raises for a failed run (see ``RunResult``).

        A fresh run that fails on a user error before its first training step leaves no folder behind: there
        is nothing in it to keep, and the event carries the message. A resumed run's folder is never removed.
        """
        summary = _Summary(self.cfg)
        resuming = self.resume_dir is not None
        try:
            if self.resume_dir is not None:
                self.run_dir = open_run_dir(self.resume_dir)
                summary.replay(read_events(self.run_dir.events_path))
            elif self.fresh_dir is not None:
                self.run_dir = RunDir(self.fresh_dir)
            else:
                self.run_dir = create_run_dir(self.cfg, self.runs_dir)
        except UserError as exc:
            self._fan_out(RunFailed(error=str(exc), user_error=True))
            self.result = RunResult("failed", None, error=str(exc), user_error=True)
            return self.result

        run_dir = self.run_dir
        try:
            with run_dir.lock():
                beacon = Beacon(run_dir, self.control, summary.duration)  # pid, heartbeat, commands: for viewers
                beacon.start()
                try:
                    self._run_locked(run_dir, summary, resuming, beacon)
                finally:
                    beacon.close()
        except RunFolderError as exc:  # the lock: another process took the run in the meantime
            self._fan_out(RunFailed(error=str(exc), user_error=True))
            self.result = RunResult("failed", run_dir.path, error=str(exc), user_error=True)
        assert self.result is not None
        return self.result

    def _run_locked(self, run_dir: RunDir, summary: _Summary, resuming: bool, beacon: Beacon) -> None:
        event_log = EventLog(run_dir.events_path)
        started = False
        reporter: Reporter | None = None

        def emit(event: Event) -> None:
            nonlocal started
            if isinstance(event, RunStarted):
                if not started:
                    # Loading torch, transformers and the data leaves millions of long-lived objects; a full
                    # cyclic collection walks them all (docs/perf-log.md, cause 3: a stall of this thread and
                    # of the UI beside it). Frozen from the first step, collections only see what training allocates;
                    # unfrozen when the run ends, so whatever became garbage meanwhile is collected then.
                    gc.freeze()
                    if self.collector_held:  # what setup left as garbage is frozen too, until the run ends
                        gc.enable()
                started = True
                if resuming:
                    summary.resumed_at(event.start_step)
            summary.see(event)
            beacon.see(event)
            if isinstance(event, Evaluated | RunStarted):  # a resumed run's earlier evaluations count from its start
                metric, value = summary.best()
                if metric is not None and value is not None:
                    beacon.set_best(metric, value)
            kept = not isinstance(event, LogMessage) or event.level in ("warning", "error", "critical")
            if kept and not isinstance(event, EPHEMERAL):
                event_log.write(event)
                if event_log.write_error is not None and not self.control.should_stop:
                    # A run whose events cannot be written is invisible to every viewer: stop it at the next
                    # step, saving what it can, and fail with the disk's message (raised below).
                    self.control.request_stop()
                if reporter is not None:
                    reporter.see(event)
            self._fan_out(event)

        if resuming:
            # A stale summary would list the run as stopped or failed while it trains again.
            with contextlib.suppress(OSError):
                run_dir.summary_path.unlink(missing_ok=True)
        try:
            if self.cfg.output.report_to:
                check_installed(self.cfg.output.report_to)
                reporter = Reporter(self.cfg, run_dir, emit)
            with capture_library_logs(emit, run_dir.log_path):
                engine = engine_path(self.cfg.engine)
                outcome = engine(self.cfg, emit, self.control, run_dir, resume=resuming)
            if event_log.write_error is not None:
                raise event_log.write_error
            emit(
                RunFinished(
                    status=outcome.status,
                    step=outcome.step,
                    duration_seconds=summary.duration(),
                    model_dir=str(outcome.model_dir) if outcome.model_dir else None,
                    metrics=outcome.metrics,
                    peak_memory_mb=peak_memory_mb(),
                    note=summary.end_note(outcome),
                )
            )
            summary.model_step = outcome.model_step
            run_dir.write_summary(summary.as_dict(outcome.status))
            self.result = RunResult(outcome.status, run_dir.path, outcome.metrics)
        except UserError as exc:
            if not started and not resuming:
                self._discard(emit, event_log, run_dir, str(exc))
            else:
                if isinstance(exc, TrainingDiverged):  # the step it failed at, logged or not
                    summary.step = max(summary.step, exc.step)
                self._fail(emit, summary, run_dir, str(exc), user_error=True)
        except Exception as exc:
            disk = os_error_of(exc)  # an OSError, or a library's own error for one (safetensors')
            if disk is not None and disk.errno in DISK_ERRNOS:
                message = (
                    f"cannot write to the run folder {run_dir.path} ({disk.strerror}); free disk space or fix its "
                    f"permissions, then resume with tunebench run --resume {run_dir.path}"
                )
                self._fail(emit, summary, run_dir, message, user_error=True)
            else:
                self._fail_internal(emit, summary, run_dir, exc)
        finally:
            if started:
                gc.unfreeze()
            if self.collector_held:
                gc.enable()
            if reporter is not None:
                reporter.close()
            event_log.close()

    def _discard(self, emit: Emit, event_log: EventLog, run_dir: RunDir, message: str) -> None:
        emit(RunFailed(error=message, user_error=True))
        event_log.close()
        remove_run_dir(run_dir)
        self.run_dir = None
        self.result = RunResult("failed", None, error=message, user_error=True)

    def _fail_internal(self, emit: Emit, summary: _Summary, run_dir: RunDir, exc: BaseException) -> None:
        message, tb = describe_failure(exc)
        self._fail(emit, summary, run_dir, message, False, tb)

    def _fail(
        self,
        emit: Emit,
        summary: _Summary,
        run_dir: RunDir,
        message: str,
        user_error: bool,
        tb: str | None = None,
    ) -> None:
        emit(RunFailed(error=message, user_error=user_error, step=summary.step, traceback=tb))
        with contextlib.suppress(OSError):  # the disk may be what failed; the event carries the message
            run_dir.write_summary(summary.as_dict("failed", message))
        self.result = RunResult("failed", run_dir.path, error=message, user_error=user_error)
