"""Runner: one run in a background thread; fans events out to subscribers and owns the RunControl.

The CLI, the TUI and the tests all drive runs through this class::

    runner = Runner(cfg, subscribers=[events.append])
    runner.start(); runner.pause(); runner.resume(); runner.stop(); result = runner.join()
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from engine.config import RunConfig
from engine.control import RunControl
from engine.errors import UserError
from engine.events import (
    Evaluated,
    Event,
    LogMessage,
    RunFailed,
    RunFinished,
    RunStarted,
    StepLogged,
)
from engine.logs import capture_library_logs
from engine.runs import EventLog, RunDir, create_run_dir

log = logging.getLogger(__name__)

Emit = Callable[[Event], None]


@dataclass
class Outcome:
    """What an engine path returns when it ends without raising."""

    status: str  # "finished" | "stopped"
    step: int
    model_dir: Path | None
    metrics: dict[str, float] = field(default_factory=dict)


class EnginePath(Protocol):
    def __call__(self, cfg: RunConfig, emit: Emit, control: RunControl, run_dir: RunDir) -> Outcome: ...


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


class _Summary:
    """Folds the event stream into summary.json fields."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.started = time.time()
        self.device = ""
        self.precision = ""
        self.step = 0
        self.evals: list[Evaluated] = []

    def see(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.device, self.precision = event.device, event.precision
        elif isinstance(event, StepLogged):
            self.step = event.step
        elif isinstance(event, Evaluated):
            self.evals.append(event)

    def best(self) -> tuple[str | None, float | None]:
        if not self.evals:
            return None, None
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
            "device": self.device,
            "precision": self.precision,
            "started": self.started,
            "ended": time.time(),
            "duration_seconds": time.time() - self.started,
            "step": self.step,
            "best_metric": metric,
            "best_value": value,
            "final_metrics": final,
            "error": error,
        }


class Runner:
    """Runs one config in a worker thread and streams its events."""

    def __init__(
        self,
        cfg: RunConfig,
        *,
        subscribers: list[Emit] | tuple[Emit, ...] = (),
        runs_dir: str | Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.control = RunControl()
        self.runs_dir = runs_dir
        self.run_dir: RunDir | None = None
        self.result: RunResult | None = None
        self._subscribers: list[Emit] = list(subscribers)
        self._thread: threading.Thread | None = None

    # -- subscribers ----------------------------------------------------------------------------------------
    def subscribe(self, fn: Emit) -> None:
        self._subscribers.append(fn)

    def _fan_out(self, event: Event) -> None:
        for fn in self._subscribers:
            try:
                fn(event)
            except Exception:  # a broken subscriber must not take the run down
                log.exception("event subscriber %r failed on %s", fn, event.type)

    # -- control --------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the run in a background thread and return at once."""
        if self._thread is not None:
            raise RuntimeError("a Runner runs once; make a new one for the next run")
        self._thread = threading.Thread(target=self.run, name="tunebench-run", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.control.request_stop()

    def pause(self) -> None:
        self.control.request_pause()

    def resume(self) -> None:
        self.control.request_resume()

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float | None = None) -> RunResult | None:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.result

    # -- the run --------------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        """Run to the end in the calling thread; never raises for a failed run (see ``RunResult``)."""
        summary = _Summary(self.cfg)
        try:
            self.run_dir = create_run_dir(self.cfg, self.runs_dir)
        except UserError as exc:
            self._fan_out(RunFailed(error=str(exc), user_error=True))
            self.result = RunResult("failed", None, error=str(exc), user_error=True)
            return self.result

        run_dir = self.run_dir
        event_log = EventLog(run_dir.events_path)

        def emit(event: Event) -> None:
            summary.see(event)
            if not isinstance(event, LogMessage) or event.level in ("warning", "error", "critical"):
                event_log.write(event)
            self._fan_out(event)

        try:
            with capture_library_logs(emit, run_dir.log_path):
                outcome = engine_path(self.cfg.engine)(self.cfg, emit, self.control, run_dir)
            emit(
                RunFinished(
                    status=outcome.status,
                    step=outcome.step,
                    duration_seconds=time.time() - summary.started,
                    model_dir=str(outcome.model_dir) if outcome.model_dir else None,
                    metrics=outcome.metrics,
                )
            )
            run_dir.write_summary(summary.as_dict(outcome.status))
            self.result = RunResult(outcome.status, run_dir.path, outcome.metrics)
        except UserError as exc:
            self._fail(emit, summary, run_dir, str(exc), user_error=True)
        except Exception as exc:
            tb = traceback.format_exc()
            self._fail(emit, summary, run_dir, f"internal error: {type(exc).__name__}: {exc}", False, tb)
        finally:
            event_log.close()
        assert self.result is not None
        return self.result

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
