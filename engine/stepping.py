"""Training bookkeeping shared by both engines: what happens at an optimizer step besides the math, and
around a training session (its first event, the checkpoint it resumes from, running out of memory).

The loop engine (engine.loop) calls it from its own loop, the Trainer engine from its callback's hooks
(engine.callbacks) and engine.sft. So both report progress with the same events, pause and stop at the same
step boundaries, keep pauses and evaluations out of throughput and ETA alike, add losses up on the device in
the same way, fail a diverged run and an out-of-memory run with the same messages, and give device memory
back alike.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.checkpoint import latest_checkpoint, remove_partial
from engine.config import eval_every
from engine.errors import OutOfMemory, TrainingDiverged
from engine.events import (
    Emit,
    EpochEnded,
    Evaluated,
    Event,
    Paused,
    Resumed,
    RunStarted,
    StepDone,
    StepLogged,
    StopRequested,
)
from engine.resources import READ_EVERY_SECONDS, DeviceProbe

if TYPE_CHECKING:
    import torch

    from engine.config import RunConfig, TrainConfig
    from engine.control import RunControl
    from engine.data import PreparedData
    from engine.runner import Outcome
    from engine.runs import RunDir

log = logging.getLogger("tunebench.stepping")

#: Combines a tensor over the processes of a run: a mean (loss sums) or a gather (the divergence record).
Collective = Callable[["torch.Tensor"], "torch.Tensor"]
#: Seconds a paused process of a many-process run waits between two looks at the others: well under the process
#: group's timeout, so that a long pause never times the group out.
PAUSED_SYNC_SECONDS = 0.5


def _silent(_event: Event) -> None:
    """The emit of a process that is not the main one: only the main process reports."""


class LossSum:
    """Losses added up in float32 on the device, in order and with no sync; read at logging intervals only.

    The order of the additions is part of an exact resume: a run resumed from a saved sum adds the same
    values in the same order as one never interrupted, so it rounds the same.
    """

    def __init__(self, device: torch.device) -> None:
        import torch

        self.tensor = torch.zeros((), dtype=torch.float32, device=device)

    def restart(self, start: float = 0.0) -> None:
        """Begin again from ``start`` (a sum saved in a checkpoint when resuming, else zero)."""
        import torch

        if start == 0.0:
            self.tensor.zero_()  # in place: no allocation and no host-to-device copy every window
        else:
            self.tensor = torch.tensor(start, dtype=torch.float32, device=self.tensor.device)

    def add(self, loss: torch.Tensor) -> None:
        self.tensor += loss


class DivergenceWatch:
    """The first step whose loss was NaN or infinite, kept on the device: checking it costs a sync only where
    one happens anyway (logging, checkpoints, epoch ends).

    Args:
        learning_rate: Named in the message, as the first thing to lower.
        precision: The run's (fp32, bf16, fp16): only a lower precision gets "use fp32" as the second fix.
        checkpoints_dir: Where the last good checkpoint, named in the message, is kept.
        device: Where the losses are.
        gather: Collects each process's record (None with one process).
    """

    def __init__(
        self,
        learning_rate: float,
        checkpoints_dir: Path,
        device: torch.device,
        gather: Collective | None = None,
        *,
        precision: str = "fp32",
    ) -> None:
        import torch

        self.learning_rate = learning_rate
        self.precision = precision
        self.checkpoints_dir = checkpoints_dir
        self._gather = gather
        self._step = torch.zeros((), dtype=torch.long, device=device)
        self._value = torch.zeros((), dtype=torch.float32, device=device)
        #: The process whose loss went bad first (0 with one process).
        self.bad_rank = 0

    def record(self, loss: torch.Tensor, step: int) -> None:
        """Remember ``loss`` (detached, float32), part of step ``step``, if it is the first non-finite one."""
        import torch

        loss = loss.reshape(())
        newly_bad = (self._step == 0) & ~torch.isfinite(loss)
        self._step = torch.where(newly_bad, step, self._step)
        self._value = torch.where(newly_bad, loss, self._value)

    def first(self) -> tuple[int, float] | None:
        """(step, loss) of the first non-finite loss on any process, or None; a device sync."""
        steps, values = self._step.reshape(1), self._value.reshape(1)
        if self._gather is not None:
            steps, values = self._gather(steps), self._gather(values)
        bad = [(n, v, rank) for rank, (n, v) in enumerate(zip(steps.tolist(), values.tolist(), strict=True)) if n]
        if not bad:
            return None
        step, value, self.bad_rank = min(bad)
        return step, value

    def check(self, logged: tuple[int, float] | None = None) -> None:
        """Raise TrainingDiverged if a loss so far was NaN or infinite; call it sparingly (a device sync).

        Args:
            logged: A (step, loss) the caller saw itself, for a loss this watch may not have recorded.
        """
        bad = self.first()
        if bad is None and logged is not None and not math.isfinite(logged[1]):
            bad = logged
        if bad is None:
            return
        step, value = bad
        what = "NaN" if math.isnan(value) else "infinite"
        kept = latest_checkpoint(self.checkpoints_dir)
        where = f"; the last good checkpoint, {kept.name}, is kept" if kept else ""
        on = f" on process {self.bad_rank}" if self._gather is not None else ""
        fix = f"lower train.learning_rate (now {self.learning_rate:g})"
        if self.precision != "fp32":
            fix += f" or use train.precision: fp32 (now {self.precision})"
        raise TrainingDiverged(f"loss became {what} at step {step}{on}; {fix}{where}", step)


class TrainClock:
    """Seconds spent training, pauses and evaluations left out: the base of throughput, elapsed time and ETA.

    Args:
        elapsed: Training seconds before this session (a resumed run's, from its checkpoint).
        timed_from: The step ``elapsed`` counts from (the ETA is seconds per step so far times steps left).
    """

    def __init__(self, elapsed: float = 0.0, timed_from: int = 0) -> None:
        self.elapsed = elapsed
        self.timed_from = timed_from
        self.window_start = self.epoch_start = time.perf_counter()

    def start_epoch(self, seconds_in: float = 0.0) -> None:
        """An epoch begins, or goes on after ``seconds_in`` seconds of it in an earlier session."""
        self.epoch_start = time.perf_counter() - seconds_in

    def restart_window(self) -> None:
        self.window_start = time.perf_counter()

    def close_window(self) -> float:
        """Count the open window as training time and start the next; returns its seconds."""
        now = time.perf_counter()
        seconds = now - self.window_start
        self.elapsed += seconds
        self.window_start = now
        return seconds

    def leave_out(self, seconds: float) -> None:
        """``seconds`` just spent not training (a pause, an evaluation) do not count."""
        self.window_start += seconds
        self.epoch_start += seconds

    def epoch_seconds(self) -> float:
        return time.perf_counter() - self.epoch_start

    def so_far(self) -> float:
        """Training seconds up to now, the open window included."""
        return self.elapsed + time.perf_counter() - self.window_start

    def eta(self, step: int, total_steps: int) -> float:
        return self.elapsed / max(step - self.timed_from, 1) * max(total_steps - step, 0)


class StepBook:
    """One session's step bookkeeping: progress events, pause and stop, the clock, loss sums and divergence.

    Args:
        emit: Receives the events; only the main process emits.
        control: The run's stop and pause flags, obeyed at optimizer-step boundaries.
        main: Whether this is the main process.
        total_steps: Optimizer steps of the whole run.
        device: Where the losses are; on a GPU StepLogged also reports allocated memory.
        divergence: The first non-finite loss, checked at logging, checkpoints and epoch ends.
        clock: Training time so far; a fresh clock for a fresh run.
        reduce: Mean of a loss sum over the processes (None with one process).
        metrics: The last finished epoch's metrics (a resumed run's, from its checkpoint).
        share: With many processes, the element-wise maximum of ``[stop, pause]`` over them (an all-reduce): the
            main process's commands reach every process at the same step, and a stop on any process stops all.
    """

    def __init__(
        self,
        emit: Emit,
        control: RunControl,
        *,
        main: bool,
        total_steps: int,
        device: torch.device,
        divergence: DivergenceWatch,
        clock: TrainClock | None = None,
        reduce: Collective | None = None,
        metrics: dict[str, float] | None = None,
        share: Callable[[list[int]], list[int]] | None = None,
    ) -> None:
        self._share = share
        self.say: Emit = emit if main else _silent
        self.control = control
        self.total_steps = total_steps
        self.divergence = divergence
        self.clock = clock or TrainClock()
        self.epoch_loss = LossSum(device)
        self.window_loss = LossSum(device)
        self.window_batches = 0
        self.window_samples = 0
        #: A stop was obeyed: StopRequested is emitted once.
        self.stopped = False
        #: Train loss and eval scores of the last finished epoch: what the run reports when it ends.
        self.metrics = dict(metrics or {})
        self._reduce = reduce
        self._on_gpu = device.type == "cuda"
        self._probe = DeviceProbe(device) if main else None

    # -- fed at every micro-batch -----------------------------------------------------------------------------
    def add_loss(self, loss: torch.Tensor, step: int) -> torch.Tensor:
        """Add a micro-batch's loss, part of optimizer step ``step``, to the epoch's sum and the divergence
        watch; no device sync. Returns it detached, in float32."""
        detached = loss.detach().float()
        self.divergence.record(detached, step)
        self.epoch_loss.add(detached)
        return detached

    def add_batch(self, loss: torch.Tensor, step: int, samples: int) -> None:
        """``add_loss``, and the loss and ``samples`` into the logging window too."""
        self.window_loss.add(self.add_loss(loss, step))
        self.window_batches += 1
        self.window_samples += samples

    def add_samples(self, samples: int) -> None:
        """Samples into the logging window, for an engine whose logged loss comes from elsewhere."""
        self.window_samples += samples

    # -- at optimizer-step boundaries -------------------------------------------------------------------------
    def step_done(self, step: int) -> None:
        """Call as soon as the step count reaches ``step``, before any pause: progress for every step, and the
        device's readings every few seconds."""
        self.say(StepDone(step=step, total_steps=self.total_steps))
        if self._probe is not None and self._probe.due():
            self.say(self._probe.read())

    def window_total(self) -> float:
        """The logging window's loss sum, over all processes (a device sync)."""
        total = self.window_loss.tensor if self._reduce is None else self._reduce(self.window_loss.tensor)
        return float(total.item())

    def window_mean(self) -> float:
        """Mean micro-batch loss of the logging window, over all processes (a device sync)."""
        return self.window_total() / max(self.window_batches, 1)

    def log(self, step: int, epoch: float, loss: float, learning_rate: float) -> None:
        """Emit StepLogged for the window that ends at ``step``, and start the next window."""
        seconds = self.clock.close_window()
        memory = None
        if self._on_gpu:
            import torch

            memory = torch.cuda.memory_allocated() / 2**20
        self.say(
            StepLogged(
                step=step,
                total_steps=self.total_steps,
                epoch=epoch,
                loss=loss,
                learning_rate=learning_rate,
                samples_per_second=self.window_samples / max(seconds, 1e-9),
                elapsed_seconds=self.clock.elapsed,
                eta_seconds=self.clock.eta(step, self.total_steps),
                device_memory_mb=memory,
            )
        )
        self.start_window()

    def obey(self, step: int) -> bool:
        """Wait out a pause (its time is not training time), then tell whether the run must stop at ``step``;
        True once, with StopRequested emitted. Every process of a run calls it at the same steps."""
        control = self.control
        stop, pause = self._flags()
        if pause and not stop:
            paused_at = time.perf_counter()
            self.say(Paused(step=step))
            # A single process looks again at each device reading, so that a paused run's CPU and memory do not
            # stand still on screen; many look every PAUSED_SYNC_SECONDS, all together (one all-reduce a round).
            every = READ_EVERY_SECONDS if self._share is None else PAUSED_SYNC_SECONDS
            while pause and not stop:
                control.wait_while_paused(every)
                if self._probe is not None and self._probe.due():
                    self.say(self._probe.read())
                stop, pause = self._flags()  # a stop may have ended the pause
            if not stop:
                self.say(Resumed(step=step))
            self.clock.leave_out(time.perf_counter() - paused_at)
        return self._stop_once(step, stop)

    def stop_requested(self, step: int) -> bool:
        """Whether the run must stop at ``step`` (also between steps: a stop that came during an evaluation);
        True once, with StopRequested emitted. Every process of a run calls it at the same steps."""
        stop, _pause = self._flags()
        return self._stop_once(step, stop)

    def _flags(self) -> tuple[bool, bool]:
        """(stop, pause), agreed on by every process; a stop any of them was asked for becomes each one's."""
        stop, pause = self.control.should_stop, self.control.pause.is_set()
        if self._share is not None:
            stop, pause = (bool(flag) for flag in self._share([int(stop), int(pause)]))
            if stop:
                self.control.request_stop()
        return stop, pause

    def _stop_once(self, step: int, stop: bool) -> bool:
        """``stop`` as agreed in ``_flags``, never the flag read again: a stop that arrives in between must wait
        for the next step on every process alike."""
        if stop and not self.stopped:
            self.stopped = True
            self.say(StopRequested(step=step))
            return True
        return False

    # -- windows and epochs -----------------------------------------------------------------------------------
    def start_window(self, loss_sum: float = 0.0, batches: int = 0, samples: int = 0) -> None:
        """A logging window begins now, holding what a checkpoint saved of it when resuming."""
        self.window_loss.restart(loss_sum)
        self.window_batches = batches
        self.window_samples = samples
        self.clock.restart_window()

    def start_epoch(self, loss_sum: float = 0.0, seconds_in: float = 0.0) -> None:
        """An epoch begins, or goes on with the loss sum and seconds a checkpoint saved of it."""
        self.epoch_loss.restart(loss_sum)
        self.clock.start_epoch(seconds_in)

    def end_epoch(self, epoch: int, step: int, count: int) -> None:
        """Emit EpochEnded with the epoch's train loss, its loss sum over ``count`` (a device sync)."""
        total = self.epoch_loss.tensor if self._reduce is None else self._reduce(self.epoch_loss.tensor)
        train_loss = total.item() / max(count, 1)
        self.metrics = {"train_loss": train_loss}
        self.say(EpochEnded(epoch=epoch, step=step, train_loss=train_loss, duration_seconds=self.clock.epoch_seconds()))

    def evaluated(
        self,
        epoch: float,
        step: int,
        seconds: float,
        *,
        left_out: bool = False,
        eval_loss: float,
        accuracy: float | None = None,
        macro_f1: float | None = None,
        perplexity: float | None = None,
        confusion: list[list[int]] | None = None,
    ) -> None:
        """Emit Evaluated and keep its scores with the epoch's metrics; evaluation time is not training time
        (``left_out``: the caller has already taken those seconds out of the clock)."""
        scores = {"eval_loss": eval_loss, "perplexity": perplexity, "accuracy": accuracy, "macro_f1": macro_f1}
        self.metrics.update({name: value for name, value in scores.items() if value is not None})
        self.say(
            Evaluated(
                epoch=epoch,
                step=step,
                eval_loss=eval_loss,
                accuracy=accuracy,
                macro_f1=macro_f1,
                perplexity=perplexity,
                duration_seconds=seconds,
                confusion=confusion,
            )
        )
        if not left_out:
            self.clock.leave_out(seconds)

    def loss_sums(self) -> tuple[float, float]:
        """(epoch, window) loss sums over all processes, for a checkpoint; one device sync."""
        import torch

        sums = torch.stack([self.epoch_loss.tensor, self.window_loss.tensor])
        epoch, window = (sums if self._reduce is None else self._reduce(sums)).tolist()
        return epoch, window


def max_over_processes(device: torch.device) -> Callable[[list[int]], list[int]]:
    """The element-wise maximum of a few integers over the run's processes (one all-reduce, through the process
    group the accelerator set up, under its timeout): how the main process's commands reach the others."""
    import torch
    import torch.distributed as dist

    def share(values: list[int]) -> list[int]:
        tensor = torch.tensor(values, dtype=torch.int32, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return [int(v) for v in tensor.tolist()]

    return share


def mean_over_processes(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` over the run's processes (an all-reduce), for an engine without accelerate's."""
    import torch.distributed as dist

    total = tensor.clone()
    dist.all_reduce(total)
    return total / dist.get_world_size()


def gather_over_processes(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's ``tensor``, concatenated in rank order."""
    import torch
    import torch.distributed as dist

    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def evaluation_due(train: TrainConfig, step: int, total_steps: int, *, epoch_end: bool) -> bool:
    """Whether an evaluation follows optimizer step ``step``, by transformers' schedule: at each epoch's end under
    eval_strategy epoch; under steps, every eval_steps steps and at the last step.

    One due at an epoch's last step comes after that epoch's EpochEnded in both engines, so that the epoch's row
    has its train loss when its scores arrive.
    """
    if train.eval_strategy == "epoch":
        return epoch_end
    return train.eval_strategy == "steps" and (step % eval_every(train) == 0 or step == total_steps)


def mid_epoch(epoch: float) -> float:
    """An evaluation's epoch inside an epoch, cut to two decimals: never rounded up to read as the epoch's end."""
    return math.floor(epoch * 100 + 1e-6) / 100  # 0.29 * 100 is 28.999...


def perplexity_of(eval_loss: float) -> float:
    """exp(loss), capped so that a diverged run's does not overflow to inf."""
    return math.exp(min(eval_loss, 50.0))


def samples_per_step(train: TrainConfig, world_size: int) -> int:
    """Samples in one optimizer step over all processes."""
    return train.per_device_train_batch_size * train.gradient_accumulation_steps * world_size


def run_started(
    cfg: RunConfig,
    run_dir: RunDir,
    data: PreparedData,
    total_steps: int,
    start_step: int,
    *,
    device: str,
    precision: str,
    num_parameters: int,
    world_size: int,
    trainable_parameters: int | None = None,
    adapter: str = "",
    backend: str = "",
) -> RunStarted:
    """The first event of a training session (the step it starts from is not 0 when resumed).

    Args:
        trainable_parameters: None when every parameter trains.
        adapter: "LoRA r=8" when adapters train instead of the model.
        backend: The process group's backend when ``world_size`` is over 1.
    """
    import torch

    return RunStarted(
        run_dir=str(run_dir.path),
        run_name=run_dir.name,
        task=cfg.task,
        engine=cfg.engine,
        model=cfg.model.name_or_path,
        device=device,
        precision=precision,
        num_parameters=num_parameters,
        num_train_samples=len(data.train),
        num_eval_samples=len(data.eval) if data.eval is not None else 0,
        num_epochs=cfg.train.num_train_epochs,
        total_steps=total_steps,
        batch_size=samples_per_step(cfg.train, world_size),
        label_names=data.label_names,
        start_step=start_step,
        eval_set=data.eval_set,
        trainable_parameters=trainable_parameters,
        adapter=adapter,
        num_processes=world_size,
        backend=backend if world_size > 1 else "",
        cpu_threads=torch.get_num_threads() if device.startswith("cpu") else 0,
    )


def checkpoint_to_resume(checkpoints_dir: Path, *, main: bool, barrier: Callable[[], Any]) -> Path | None:
    """The newest complete checkpoint, once the main process has removed any cut off mid-save; None (with a
    warning) when there is none, and the run starts over."""
    if main:
        remove_partial(checkpoints_dir)
    barrier()  # no process looks before the partial ones are gone
    latest = latest_checkpoint(checkpoints_dir)
    if latest is None:
        log.warning("no complete checkpoint in %s; the run starts over from step 0", checkpoints_dir)
    return latest


@dataclass
class Progress:
    """Where a run is, for the message when it runs out of memory: its stage and its last optimizer step."""

    stage: str = "loading the model and data"
    step: int = 0


def guard_memory(
    cfg: RunConfig,
    attempt: Callable[[RunConfig, Progress], Outcome],
    retry: Callable[[RunConfig, Progress, str], RunConfig | None] | None = None,
) -> Outcome:
    """Run ``attempt``; running out of accelerator memory gives the memory back and fails with OutOfMemory.

    Args:
        attempt: The run; it keeps ``Progress`` up to date.
        retry: For an engine that can retry: the config to start over with (a smaller batch), or None to fail.
    """
    import torch

    while True:
        progress = Progress()
        try:
            return attempt(cfg, progress)
        except torch.cuda.OutOfMemoryError as exc:
            detail = (str(exc).strip().splitlines() or ["out of memory"])[0][:160]  # one line for the message
        # Out of the except block the traceback is gone, and with it the frames that held the batch, the
        # activations and the model; only now can the memory really be returned.
        free_device_memory()
        again = retry(cfg, progress, detail) if retry is not None else None
        if again is None:
            message = oom_message(cfg, progress.stage, progress.step + 1, detail, can_shrink=retry is not None)
            raise OutOfMemory(message)
        cfg = again


def free_device_memory() -> None:
    """Release cached accelerator memory after the objects that held it are gone, so a new run fits."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        mps.empty_cache()


def oom_message(cfg: RunConfig, stage: str, step: int, detail: str, *, can_shrink: bool = False) -> str:
    """What ran out of memory where, and the settings that make it fit.

    Args:
        stage: What the run was doing ("training", "evaluating", "loading the model and data", ...).
        step: The optimizer step under way, when training.
        can_shrink: The engine can retry with a smaller batch (``train.auto_find_batch_size``).
    """
    t = cfg.train
    where = f"at step {step}" if stage == "training" else f"while {stage}"
    if stage == "evaluating":
        fix = f"lower train.per_device_eval_batch_size (now {t.per_device_eval_batch_size}) or data.max_length"
    else:
        fix = (
            f"lower train.per_device_train_batch_size (now {t.per_device_train_batch_size}; raise "
            f"gradient_accumulation_steps to keep the effective batch) or data.max_length "
            f"(now {cfg.data.max_length})"
        )
        if can_shrink:
            fix += ", or set train.auto_find_batch_size: true"
    return f"out of memory on the accelerator {where}; {fix} ({detail})"
