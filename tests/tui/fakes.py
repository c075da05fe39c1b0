"""Deterministic stand-ins for the engine: a scripted run and a predictor with fixed answers."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from engine.config import RunConfig
from engine.control import RunControl
from engine.events import (
    EpochEnded,
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
    StopRequested,
)
from engine.runner import Emit, RunResult
from tui.panels.predict import ModelView, PredictionView, PredictRequest, ScoreGroup


def run_script(
    run_dir: str, *, task: str = "classification", epochs: int = 3, steps_per_epoch: int = 8, fail: str | None = None
) -> list[Event]:
    """The events of a short run, with fixed times and a loss that falls steadily."""
    total = epochs * steps_per_epoch
    events: list[Event] = [
        Status("loading model", "tiny-bert", time=0.0),
        RunStarted(
            run_dir=run_dir,
            run_name=Path(run_dir).name,
            task=task,
            engine="loop",
            model="tiny-bert",
            device="cpu",
            precision="fp32",
            num_parameters=1_234_567,
            num_train_samples=128,
            num_eval_samples=32,
            num_epochs=epochs,
            total_steps=total,
            batch_size=16,
            label_names=["negative", "positive"],
            time=0.0,
        ),
        LogMessage("warning", "a library warning shown in the log pane", "transformers", time=0.0),
    ]
    step = 0
    for epoch in range(1, epochs + 1):
        for _ in range(steps_per_epoch):
            step += 1
            loss = 1.2 / (1 + 0.15 * step)
            events.append(
                StepLogged(
                    step=step,
                    total_steps=total,
                    epoch=epoch - 1 + (step - (epoch - 1) * steps_per_epoch) / steps_per_epoch,
                    loss=loss,
                    learning_rate=1e-4,
                    samples_per_second=64.0,
                    elapsed_seconds=step * 0.25,
                    eta_seconds=(total - step) * 0.25,
                    time=0.0,
                )
            )
            if fail and step == steps_per_epoch // 2:
                events.append(RunFailed(error=fail, user_error=True, step=step, time=0.0))
                return events
        events.append(EpochEnded(epoch=epoch, step=step, train_loss=1.0 / epoch, duration_seconds=2.0, time=0.0))
        metrics: dict[str, Any] = {"eval_loss": 0.9 / epoch, "accuracy": 0.5 + 0.1 * epoch}
        metrics.update({"perplexity": 10.0 / epoch} if task != "classification" else {"macro_f1": 0.45 + 0.1 * epoch})
        events.append(Evaluated(epoch=epoch, step=step, duration_seconds=1.0, time=0.0, **metrics))
    events.append(
        RunFinished(status="finished", step=step, duration_seconds=9.0, model_dir=f"{run_dir}/model", time=0.0)
    )
    return events


class ScriptedRunner:
    """Plays a script of events on the run thread, honouring pause and stop at step boundaries like the loop.

    With a ``gate``, it waits after RunStarted until the gate opens (or a pause or stop arrives), so a test can
    act on a run that is certainly in progress.
    """

    def __init__(
        self, cfg: RunConfig, script: list[Event], subscribers: list[Emit], gate: threading.Event | None = None
    ) -> None:
        self.cfg = cfg
        self.script = script
        self.subscribers = subscribers
        self.gate = gate
        self.control = RunControl()
        self.finished = threading.Event()

    def _emit(self, event: Event) -> None:
        for fn in self.subscribers:
            fn(event)

    def _hold(self) -> None:
        while self.gate is not None and not self.gate.is_set():
            if self.control.pause.is_set() or self.control.stop.is_set():
                return
            self.gate.wait(0.01)

    def run(self) -> RunResult:
        try:
            return self._play()
        finally:
            self.finished.set()

    def _play(self) -> RunResult:
        run_dir = next((Path(e.run_dir) for e in self.script if isinstance(e, RunStarted)), None)
        step = 0
        for event in self.script:
            self._emit(event)
            if isinstance(event, RunFailed):
                return RunResult("failed", run_dir, error=event.error, user_error=event.user_error)
            if isinstance(event, RunFinished):
                return RunResult(event.status, run_dir)
            if isinstance(event, RunStarted):
                self._hold()
            if not isinstance(event, StepLogged):
                continue
            step = event.step
            while self.control.pause.is_set() and not self.control.stop.is_set():
                self._emit(Paused(step=step, time=0.0))
                self.control.wait_while_paused()
                if not self.control.stop.is_set():
                    self._emit(Resumed(step=step, time=0.0))
                    self._hold()
            if self.control.stop.is_set():
                self._emit(StopRequested(step=step, time=0.0))
                self._emit(RunFinished(status="stopped", step=step, duration_seconds=1.0, model_dir=None, time=0.0))
                return RunResult("stopped", run_dir)
        return RunResult("finished", run_dir)

    def pause(self) -> None:
        self.control.request_pause()

    def resume(self) -> None:
        self.control.request_resume()

    def stop(self) -> None:
        self.control.request_stop()

    def leave(self) -> None:
        self.control.request_stop()


class ScriptedEngine:
    """A runner factory for the app: every run plays ``script_for(cfg)``; the runners are kept for asserts."""

    def __init__(self, run_dir: str, *, gate: threading.Event | None = None, **script: Any) -> None:
        self.run_dir = run_dir
        self.gate = gate
        self.script = script
        self.runners: list[ScriptedRunner] = []
        self.configs: list[RunConfig] = []

    def __call__(self, cfg: RunConfig, subscribers: list[Emit]) -> ScriptedRunner:
        runner = ScriptedRunner(cfg, run_script(self.run_dir, task=cfg.task, **self.script), subscribers, self.gate)
        self.runners.append(runner)
        self.configs.append(cfg)
        return runner


class FakePredictor:
    """Fixed predictions in the shape of the config's task (at most ``top_k`` bars), recorded requests."""

    def __init__(self) -> None:
        self.requests: list[PredictRequest] = []

    def __call__(self, request: PredictRequest) -> PredictionView:
        self.requests.append(request)
        if request.task == "causal-lm":
            base_view = ModelView(request.base, "generate", text=" and then it rained", prompt=request.text)
            tuned_view = ModelView(request.tuned, "generate", text=" and it was good", prompt=request.text)
            return PredictionView(base_view, tuned_view if request.tuned else None)
        base_scores: tuple[tuple[str, float], ...]
        tuned_scores: tuple[tuple[str, float], ...]
        if request.task == "classification":
            heading, base_scores, tuned_scores = (
                "labels",
                (("positive", 0.52), ("negative", 0.48)),
                (("positive", 0.91), ("negative", 0.09)),
            )
            mode, warning = "classify", "this model's head was newly initialized, so its predictions are random"
        else:
            heading, base_scores, tuned_scores = (
                "[MASK]",
                (("good", 0.30), ("great", 0.20), ("bad", 0.10)),
                (("great", 0.62), ("wonderful", 0.21), ("good", 0.09)),
            )
            mode, warning = "fill-mask", "this model's MLM head was newly initialized, so its predictions are random"
        base_scores, tuned_scores = base_scores[: request.top_k], tuned_scores[: request.top_k]
        base = ModelView(
            request.base, mode, (ScoreGroup(heading, base_scores),), warnings=(warning,), untrained_head=True
        )
        tuned = None
        if request.tuned:
            tuned = ModelView(request.tuned, mode, (ScoreGroup(heading, tuned_scores),))
        return PredictionView(base, tuned)
