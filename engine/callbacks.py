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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.events import CheckpointSaved, Event, RunStarted
from engine.faults import kill_point
from engine.stepping import (
    DivergenceWatch,
    StepBook,
    TrainClock,
    gather_over_processes,
    max_over_processes,
    mean_over_processes,
    mid_epoch,
    perplexity_of,
)

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
    ``TrainerCallback`` (so transformers loads only when a run starts). The bookkeeping the loop engine shares
    (progress events, pause and stop, clock, loss sums, divergence) is an engine.stepping.StepBook, made when
    training begins.

    Args:
        emit: Receives every event; called from the training thread, must not block.
        control: The run's stop/pause flags.
        run_started: Builds RunStarted from the Trainer's total and starting step.
        batch_size: Samples per optimizer step over all devices (throughput is steps x this).
        precision: The run's (fp32, bf16, fp16), for the advice a NaN loss gets.
    """

    def __init__(
        self,
        emit: Callable[[Event], None],
        control: RunControl,
        *,
        run_started: RunStartedFactory,
        batch_size: int,
        precision: str = "fp32",
    ) -> None:
        self.emit = emit
        self.run_control = control
        self.run_started = run_started
        self.batch_size = batch_size
        self.precision = precision
        self._book: StepBook | None = None
        self._epoch_steps = 0
        #: Optimizer steps in the logging window (the logged loss is its sum over them, as the Trainer's is).
        self._window_steps = 0
        #: The optimizer step the training losses now computed belong to.
        self._step = 0
        #: A masking collator with a ``position`` (engine.data.BatchSeededMasking), re-positioned on resume.
        self.seeded_masking: Any = None
        #: Evaluates after the epoch that ended at the given step, when the eval schedule says so; None when the
        #: run has no eval set.
        self.evaluate: Callable[[int], Any] | None = None
        self._updates_per_epoch: int | None = None
        self._epoch_ended = False
        #: An evaluation due at an epoch's last step (eval_strategy: steps), held back until the epoch has ended.
        self._eval_after_epoch = False
        #: What the checkpoint a run resumes from says of its epoch (see ``checkpoint_state``).
        self._resumed: dict[str, Any] | None = None
        self._resumed_metrics: dict[str, float] = {}

    @property
    def book(self) -> StepBook:
        """The step bookkeeping of the training under way."""
        if self._book is None:
            raise RuntimeError("the Trainer has not begun training")
        return self._book

    @property
    def last_metrics(self) -> dict[str, float]:
        """Train loss and eval scores of the last finished epoch."""
        return self._book.metrics if self._book is not None else self._resumed_metrics

    @property
    def stopped(self) -> bool:
        """The run stopped on request (and wrote a checkpoint to resume from)."""
        return self._book is not None and self._book.stopped

    # -- checkpoints ------------------------------------------------------------------------------------------
    def checkpoint_state(self, state: TrainerState) -> dict[str, Any]:
        """What a checkpoint taken now must hold beyond the Trainer's files, for an exact resume.

        One device sync (the loss sums, over all processes: every process calls it); checkpoints are rare.
        """
        at_epoch_end = self._at_epoch_end(state.global_step)
        epoch_loss_sum, window_loss_sum = self.book.loss_sums()
        return {
            "step": state.global_step,
            "epoch_loss_sum": epoch_loss_sum,
            # the logging window so far: a resumed run logs the loss of the window it was killed in
            "window_loss_sum": window_loss_sum,
            "window_steps": self._window_steps,
            "epoch_steps": self._epoch_steps,
            "epoch_seconds": self.book.clock.epoch_seconds(),
            "at_epoch_end": at_epoch_end,
            "epoch_end_pending": at_epoch_end and not self._epoch_ended,
            "last_metrics": dict(self.last_metrics),
        }

    def _at_epoch_end(self, step: int) -> bool:
        """``step`` is the last of an epoch."""
        return bool(self._updates_per_epoch) and step % (self._updates_per_epoch or 1) == 0

    def restore(self, saved: dict[str, Any]) -> None:
        """Continue from ``checkpoint_state``'s record, before the Trainer resumes from the same checkpoint."""
        self._resumed = saved
        self._resumed_metrics = {k: float(v) for k, v in saved.get("last_metrics", {}).items()}

    def _take_epoch_sums(self, saved: dict[str, Any]) -> None:
        self.book.start_epoch(float(saved.get("epoch_loss_sum") or 0.0), float(saved.get("epoch_seconds", 0.0)))
        self._epoch_steps = int(saved.get("epoch_steps", 0))

    # -- fed by the trainer -----------------------------------------------------------------------------------
    def record_loss(self, loss: torch.Tensor) -> None:
        """Add one micro-batch's (detached) training loss, as ``Trainer.training_step`` returns it, to the epoch
        and logging window sums; no device sync here. Those values add up to each optimizer step's loss, also
        under accumulation."""
        self.book.add_batch(loss, self._step, 0)  # the samples are counted per optimizer step

    # -- Trainer hooks ----------------------------------------------------------------------------------------
    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        many = args.world_size > 1
        self._book = StepBook(
            self.emit,
            self.run_control,
            main=state.is_world_process_zero,
            total_steps=state.max_steps,
            device=args.device,
            divergence=DivergenceWatch(
                args.learning_rate,
                Path(args.output_dir or "."),
                args.device,
                gather_over_processes if many else None,
                precision=self.precision,
            ),
            clock=TrainClock(timed_from=state.global_step),
            metrics=self._resumed_metrics,
            # the epoch's train loss over every process, and the commands of the main one on all of them
            reduce=mean_over_processes if many else None,
            share=max_over_processes(args.device) if many else None,
        )
        self._step = state.global_step
        self._window_steps = 0
        if self._resumed is not None:  # the logging window the checkpoint was taken in goes on
            self.book.start_window(float(self._resumed.get("window_loss_sum") or 0.0))
            self._window_steps = int(self._resumed.get("window_steps", 0))
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
                    self.evaluate(state.global_step)

    def on_epoch_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.book.start_epoch()
        self._epoch_steps = 0
        self._epoch_ended = False
        if self._resumed is not None:  # the Trainer resumes inside this epoch: its sums so far go on
            self._take_epoch_sums(self._resumed)
            self._resumed = None

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._step = state.global_step + 1

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        book = self.book
        self._epoch_steps += 1
        self._window_steps += 1
        book.step_done(state.global_step)
        book.add_samples(self.batch_size)
        kill_point("step", state.global_step)
        if control.should_evaluate and self._at_epoch_end(state.global_step):
            # Evaluated after EpochEnded, as in the loop engine (engine.stepping.evaluation_due).
            control.should_evaluate = False
            self._eval_after_epoch = True
        if control.should_save or control.should_log:
            book.divergence.check()  # before a NaN model is written as a checkpoint
        if book.obey(state.global_step):
            control.should_training_stop = True
            control.should_save = True  # a stopped run can be resumed from where it stopped

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        logs = logs or {}
        if _float(logs.get("loss")) is None:
            return  # eval logs arrive through on_evaluate; the end-of-training summary is not a step
        # The Trainer's own figure, but from this callback's window: a resumed Trainer starts its window at the
        # checkpoint, where this one goes on with what the checkpoint held of it.
        loss = self.book.window_total() / max(self._window_steps, 1)
        self._window_steps = 0
        if not math.isfinite(loss):
            self.book.divergence.check((state.global_step, loss))
        learning_rate = _float(logs.get("learning_rate")) or 0.0
        self.book.log(state.global_step, float(state.epoch or 0.0), loss, learning_rate)

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        mid_epoch = bool(self._updates_per_epoch) and not self._at_epoch_end(state.global_step)
        if self.stopped or (control.should_training_stop and mid_epoch):
            # A stop mid-epoch (asked for, or early stopping after an evaluation between epochs' ends) is not an
            # epoch: no epoch event and no eval of a partial pass (a stop's checkpoint was written at the stop).
            control.should_evaluate = False
            control.should_save = False
            return
        kill_point("epoch-end", state.global_step)
        self._end_epoch(args, state)
        if self._eval_after_epoch:
            control.should_evaluate = True
            self._eval_after_epoch = False

    def _end_epoch(self, args: TrainingArguments, state: TrainerState) -> None:
        self._epoch_ended = True
        self.book.divergence.check()
        self.book.end_epoch(round(state.epoch or 0), state.global_step, self._epoch_steps)

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
        epoch = float(state.epoch or 0.0)
        self.book.evaluated(
            round(epoch) if self._at_epoch_end(state.global_step) else mid_epoch(epoch),
            state.global_step,
            _float(metrics.get("eval_runtime")) or 0.0,
            eval_loss=eval_loss,
            accuracy=accuracy,
            perplexity=perplexity_of(eval_loss),
        )

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        path = Path(args.output_dir or ".") / f"checkpoint-{state.global_step}"
        self.book.say(CheckpointSaved(step=state.global_step, epoch=float(state.epoch or 0.0), path=str(path)))


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
    precision: str = "fp32",
) -> EventCallback:
    """An EventCallback that is also a ``transformers.TrainerCallback``, ready for ``Trainer(callbacks=[...])``."""
    return _trainer_callback_class()(emit, control, run_started=run_started, batch_size=batch_size, precision=precision)
