"""A ``TrainerCallback`` that turns a Hugging Face ``Trainer``'s hooks into Tunebench events and obeys RunControl.

``on_log`` → StepLogged, ``on_epoch_end`` → EpochEnded, ``on_evaluate`` → Evaluated, ``on_save`` →
CheckpointSaved. Stop sets ``control.should_training_stop``; pause blocks the worker in ``on_step_end``. Only
floats and ints cross into events, and only the main process emits.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.events import (
    CheckpointSaved,
    EpochEnded,
    Evaluated,
    Event,
    Paused,
    Resumed,
    RunStarted,
    StepLogged,
    StopRequested,
)

if TYPE_CHECKING:
    import torch
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from engine.control import RunControl

#: Builds the RunStarted event once the Trainer knows its step count: (total_steps, start_step) -> event.
RunStartedFactory = Callable[[int, int], RunStarted]


def _float(value: Any) -> float | None:
    """A plain float from a number or a 0-d tensor; None for anything else."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class EventCallback:
    """Streams a Trainer run as events and applies stop/pause requests at optimizer-step boundaries.

    The hooks live here without importing transformers; ``new_event_callback`` makes the instance a real
    ``TrainerCallback`` (so transformers loads only when a run starts).

    Args:
        emit: Receives every event; called from the training thread, must not block.
        control: The run's stop/pause flags.
        run_started: Builds RunStarted from the Trainer's total and starting step.
        batch_size: Samples per optimizer step over all devices (throughput is steps x this).
    """

    def __init__(
        self,
        emit: Callable[[Event], None],
        control: RunControl,
        *,
        run_started: RunStartedFactory,
        batch_size: int,
    ) -> None:
        self.emit = emit
        self.run_control = control
        self.run_started = run_started
        self.batch_size = batch_size
        self.stopped = False
        self.last_metrics: dict[str, float] = {}
        self._epoch_loss: torch.Tensor | None = None
        self._epoch_steps = 0
        self._epoch_start = time.perf_counter()
        self._window_start = time.perf_counter()
        self._window_step = 0
        self._start_step = 0
        self._train_seconds = 0.0

    # -- fed by the trainer -----------------------------------------------------------------------------------
    def record_loss(self, loss: torch.Tensor) -> None:
        """Add one micro-batch's (detached) training loss, as ``Trainer.training_step`` returns it, to the epoch
        sum; no device sync here. Those values add up to each optimizer step's loss, also under accumulation."""
        self._epoch_loss = loss if self._epoch_loss is None else self._epoch_loss + loss

    # -- Trainer hooks ----------------------------------------------------------------------------------------
    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._start_step = self._window_step = state.global_step
        self._epoch_start = self._window_start = time.perf_counter()
        if state.is_world_process_zero:
            self.emit(self.run_started(state.max_steps, state.global_step))

    def on_epoch_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._epoch_loss = None
        self._epoch_steps = 0
        self._epoch_start = time.perf_counter()

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self._epoch_steps += 1
        main = state.is_world_process_zero
        if self.run_control.pause.is_set() and not self.run_control.should_stop:
            paused_at = time.perf_counter()
            if main:
                self.emit(Paused(step=state.global_step))
            self.run_control.wait_while_paused()
            if main and not self.run_control.should_stop:
                self.emit(Resumed(step=state.global_step))
            # a pause is not training time: keep it out of throughput, ETA and epoch duration
            idle = time.perf_counter() - paused_at
            self._window_start += idle
            self._epoch_start += idle
        if self.run_control.should_stop and not self.stopped:
            self.stopped = True
            control.should_training_stop = True
            control.should_save = True  # a stopped run can be resumed from where it stopped
            if main:
                self.emit(StopRequested(step=state.global_step))

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        import torch

        logs = logs or {}
        loss = _float(logs.get("loss"))
        if loss is None or not state.is_world_process_zero:
            return  # eval logs arrive through on_evaluate; the end-of-training summary is not a step
        now = time.perf_counter()
        window = max(now - self._window_start, 1e-9)
        steps = max(state.global_step - self._window_step, 0)
        self._train_seconds += window
        done = max(state.global_step - self._start_step, 1)
        memory = torch.cuda.memory_allocated() / 2**20 if args.device.type == "cuda" else None
        self.emit(
            StepLogged(
                step=state.global_step,
                total_steps=state.max_steps,
                epoch=float(state.epoch or 0.0),
                loss=loss,
                learning_rate=_float(logs.get("learning_rate")) or 0.0,
                samples_per_second=steps * self.batch_size / window,
                elapsed_seconds=self._train_seconds,
                eta_seconds=self._train_seconds / done * max(state.max_steps - state.global_step, 0),
                device_memory_mb=memory,
            )
        )
        self._window_start = now
        self._window_step = state.global_step

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.stopped:
            # A stop mid-epoch is not an epoch: no epoch event and no eval of a partial pass (its checkpoint
            # was written at the stop).
            control.should_evaluate = False
            control.should_save = False
            return
        steps = max(self._epoch_steps, 1)
        train_loss = self._epoch_loss.item() / steps if self._epoch_loss is not None else math.nan
        self.last_metrics = {"train_loss": train_loss}
        if state.is_world_process_zero:
            self.emit(
                EpochEnded(
                    epoch=round(state.epoch or 0),
                    step=state.global_step,
                    train_loss=train_loss,
                    duration_seconds=time.perf_counter() - self._epoch_start,
                )
            )

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        metrics = metrics or {}
        eval_loss = _float(metrics.get("eval_loss"))
        if eval_loss is None:
            return
        # masked-token accuracy for MLM; TRL's next-token accuracy for causal LM
        accuracy = _float(metrics.get("eval_accuracy", metrics.get("eval_mean_token_accuracy")))
        perplexity = math.exp(min(eval_loss, 50.0))  # capped: a diverged run should not overflow to inf
        self.last_metrics.update({"eval_loss": eval_loss, "perplexity": perplexity})
        if accuracy is not None:
            self.last_metrics["accuracy"] = accuracy
        if state.is_world_process_zero:
            self.emit(
                Evaluated(
                    epoch=round(state.epoch or 0),
                    step=state.global_step,
                    eval_loss=eval_loss,
                    accuracy=accuracy,
                    perplexity=perplexity,
                    duration_seconds=_float(metrics.get("eval_runtime")) or 0.0,
                )
            )
        # eval time is not training time: keep it out of the next window's throughput
        self._window_start += _float(metrics.get("eval_runtime")) or 0.0

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            path = Path(args.output_dir or ".") / f"checkpoint-{state.global_step}"
            self.emit(CheckpointSaved(step=state.global_step, epoch=float(state.epoch or 0.0), path=str(path)))


@functools.cache
def _trainer_callback_class() -> type[EventCallback]:
    from transformers import TrainerCallback

    return type("TrainerEventCallback", (EventCallback, TrainerCallback), {})


def new_event_callback(
    emit: Callable[[Event], None],
    control: RunControl,
    *,
    run_started: RunStartedFactory,
    batch_size: int,
) -> EventCallback:
    """An EventCallback that is also a ``transformers.TrainerCallback``, ready for ``Trainer(callbacks=[...])``."""
    return _trainer_callback_class()(emit, control, run_started=run_started, batch_size=batch_size)
