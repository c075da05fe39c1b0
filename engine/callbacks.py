"""A ``TrainerCallback`` that turns a Hugging Face ``Trainer``'s hooks into Tunebench events and obeys RunControl.

``on_log`` → StepLogged, ``on_epoch_end`` → EpochEnded, ``on_evaluate`` → Evaluated, ``on_save`` →
CheckpointSaved. Stop sets ``control.should_training_stop``; pause blocks the worker in ``on_step_end``. A NaN or
infinite loss fails the run with TrainingDiverged before the next log or checkpoint. Only floats and ints cross into
events, and only the main process emits.

A checkpoint carries the callback's own running state (``checkpoint_state``): the current epoch's loss sum, and
whether the epoch ended at that step with its summary and evaluation still to do. The Trainer resumes a
checkpoint taken at an epoch's last step by starting the next epoch (or ending the run), so that pending work is
done here, when the resumed run begins.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.checkpoint import latest_checkpoint
from engine.errors import TrainingDiverged
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
from engine.faults import kill_point

if TYPE_CHECKING:
    import torch
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from engine.control import RunControl

#: Builds the RunStarted event once the Trainer knows its step count: (total_steps, start_step) -> event.
RunStartedFactory = Callable[[int, int], RunStarted]

#: The callback's running state inside a Trainer checkpoint folder (the Trainer's own files hold the rest).
STATE_FILE = "tunebench_state.json"


def batches_before(global_step: int, batches_per_epoch: int | None, accumulation_steps: int) -> int:
    """How many training batches a Trainer has consumed by ``global_step``; the last update of an epoch may
    accumulate fewer than ``accumulation_steps`` batches."""
    if not batches_per_epoch:
        return global_step * accumulation_steps
    updates_per_epoch = max(math.ceil(batches_per_epoch / accumulation_steps), 1)
    epochs, updates = divmod(global_step, updates_per_epoch)
    return epochs * batches_per_epoch + updates * accumulation_steps


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
        self._step = 0
        self._bad_step: torch.Tensor | None = None
        self._bad_value: torch.Tensor | None = None
        #: A masking collator with a ``position`` (engine.data.BatchSeededMasking), re-positioned on resume.
        self.seeded_masking: Any = None
        #: Runs an evaluation (the trainer's ``evaluate``); None when the run has no eval set.
        self.evaluate: Callable[[], Any] | None = None
        self._updates_per_epoch: int | None = None
        self._epoch_ended = False
        #: What the checkpoint a run resumes from says of its epoch (see ``checkpoint_state``).
        self._resumed: dict[str, Any] | None = None

    # -- checkpoints ------------------------------------------------------------------------------------------
    def checkpoint_state(self, state: TrainerState) -> dict[str, Any]:
        """What a checkpoint taken now must hold beyond the Trainer's files, for an exact resume.

        One device sync (the epoch's loss sum); checkpoints are rare.
        """
        at_epoch_end = bool(self._updates_per_epoch) and state.global_step % (self._updates_per_epoch or 1) == 0
        return {
            "step": state.global_step,
            "epoch_loss_sum": self._epoch_loss.item() if self._epoch_loss is not None else None,
            "epoch_steps": self._epoch_steps,
            "epoch_seconds": time.perf_counter() - self._epoch_start,
            "at_epoch_end": at_epoch_end,
            "epoch_end_pending": at_epoch_end and not self._epoch_ended,
            "last_metrics": dict(self.last_metrics),
        }

    def restore(self, saved: dict[str, Any]) -> None:
        """Continue from ``checkpoint_state``'s record, before the Trainer resumes from the same checkpoint."""
        self._resumed = saved
        self.last_metrics = {k: float(v) for k, v in saved.get("last_metrics", {}).items()}

    def _take_epoch_sums(self, saved: dict[str, Any]) -> None:
        import torch

        loss_sum = saved.get("epoch_loss_sum")
        # float32, as the sum was on the device: the next additions round exactly as in an uninterrupted run
        self._epoch_loss = torch.tensor(loss_sum, dtype=torch.float32) if loss_sum is not None else None
        self._epoch_steps = int(saved.get("epoch_steps", 0))
        self._epoch_start = time.perf_counter() - float(saved.get("epoch_seconds", 0.0))

    # -- fed by the trainer -----------------------------------------------------------------------------------
    def record_loss(self, loss: torch.Tensor) -> None:
        """Add one micro-batch's (detached) training loss, as ``Trainer.training_step`` returns it, to the epoch
        sum; no device sync here. Those values add up to each optimizer step's loss, also under accumulation."""
        self._epoch_loss = loss if self._epoch_loss is None else self._epoch_loss + loss
        self._track_divergence(loss)

    def _track_divergence(self, loss: torch.Tensor) -> None:
        """Remember, on the device, the first step whose loss was NaN or infinite (checked at log/save time)."""
        import torch

        detached = loss.detach().float().reshape(())
        if self._bad_step is None or self._bad_value is None:
            self._bad_step = torch.zeros((), dtype=torch.long, device=detached.device)
            self._bad_value = torch.zeros((), dtype=torch.float32, device=detached.device)
        newly_bad = (self._bad_step == 0) & ~torch.isfinite(detached)
        self._bad_step = torch.where(newly_bad, self._step, self._bad_step)
        self._bad_value = torch.where(newly_bad, detached, self._bad_value)

    def _raise_if_diverged(self, args: TrainingArguments, state: TrainerState, loss: float | None = None) -> None:
        """Fail the run if a loss so far was NaN or infinite (one device sync; called only at log/save/epoch end)."""
        step, value = 0, math.nan
        if self._bad_step is not None and self._bad_value is not None:
            step, value = int(self._bad_step.item()), float(self._bad_value.item())
        if not step and loss is not None and not math.isfinite(loss):
            step, value = state.global_step, loss
        if not step:
            return
        what = "NaN" if math.isnan(value) else "infinite"
        kept = latest_checkpoint(Path(args.output_dir or "."))
        where = f"; the last good checkpoint, {kept.name}, is kept" if kept else ""
        raise TrainingDiverged(
            f"loss became {what} at step {step}; lower train.learning_rate (now {args.learning_rate:g}) or use "
            f"train.precision: fp32{where}"
        )

    # -- Trainer hooks ----------------------------------------------------------------------------------------
    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._start_step = self._window_step = self._step = state.global_step
        self._epoch_start = self._window_start = time.perf_counter()
        dataloader = kwargs.get("train_dataloader")
        per_epoch = len(dataloader) if dataloader is not None and hasattr(dataloader, "__len__") else None
        if per_epoch:
            self._updates_per_epoch = max(math.ceil(per_epoch / args.gradient_accumulation_steps), 1)
        if self.seeded_masking is not None:
            # The n-th batch's masks depend on n only: start where the checkpoint left off (0 for a fresh run).
            self.seeded_masking.position = batches_before(
                state.global_step, per_epoch, args.gradient_accumulation_steps
            )
        if state.is_world_process_zero:
            self.emit(self.run_started(state.max_steps, state.global_step))
        resumed = self._resumed
        if resumed is not None and resumed.get("at_epoch_end"):
            # The Trainer goes on with the next epoch (or ends): the resumed epoch's end is this run's to do.
            self._resumed = None
            if resumed.get("epoch_end_pending"):
                self._take_epoch_sums(resumed)
                self._end_epoch(args, state)
                if self.evaluate is not None:
                    self.evaluate()

    def on_epoch_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._epoch_loss = None
        self._epoch_steps = 0
        self._epoch_start = time.perf_counter()
        self._epoch_ended = False
        if self._resumed is not None:  # the Trainer resumes inside this epoch: its sums so far go on
            self._take_epoch_sums(self._resumed)
            self._resumed = None

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._step = state.global_step + 1

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self._epoch_steps += 1
        kill_point("step", state.global_step)
        if control.should_save or control.should_log:
            self._raise_if_diverged(args, state)  # before a NaN model is written as a checkpoint
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
        if loss is not None and not math.isfinite(loss):
            self._raise_if_diverged(args, state, loss)
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
        kill_point("epoch-end", state.global_step)
        self._end_epoch(args, state)

    def _end_epoch(self, args: TrainingArguments, state: TrainerState) -> None:
        self._epoch_ended = True
        self._raise_if_diverged(args, state)
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
