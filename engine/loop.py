"""The plain PyTorch engine: tokenize → DataLoader → AdamW + schedule → train with per-epoch eval.

Runs on ``accelerate.Accelerator`` so that the same code runs on one CPU, one GPU, or under
``accelerate launch`` on many. Only the main process emits events and writes files.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.checkpoint import (
    TrainingState,
    checkpoint_name,
    complete_checkpoints,
    load_training_checkpoint,
    load_weights,
    prune,
    restore_rng_states,
    rng_of_rank,
    rng_states,
    save_training_checkpoint,
    write_checkpoint,
)
from engine.config import RunConfig, needs_evaluations, save_config
from engine.control import RunControl
from engine.data import (
    BatchSeededMasking,
    PreparedData,
    build_collator,
    length_grouped_sampler,
    prepare,
    sample_lengths,
)
from engine.early_stopping import EarlyStopping
from engine.errors import CheckpointError
from engine.evaluation import evaluate
from engine.events import FIRST_STAGE, CheckpointSaved, Status, fmt_epoch
from engine.faults import kill_point
from engine.models import (
    CompiledForward,
    base_name,
    check_compile,
    check_model_options,
    check_vocab,
    label_kwargs,
    load_model,
    load_tokenizer,
    parameter_fields,
    prepare_for_training,
    process_group_kwargs,
    quantization_kwargs,
    save_final_model,
    set_up_device,
    untrained_head_warning,
    weight_decay_groups,
)
from engine.runner import Emit, Outcome
from engine.runs import RunDir
from engine.stepping import (
    DivergenceWatch,
    Progress,
    StepBook,
    checkpoint_to_resume,
    evaluation_due,
    guard_memory,
    max_over_processes,
    mid_epoch,
    run_started,
)

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator
    from accelerate.optimizer import AcceleratedOptimizer
    from torch.utils.data import DataLoader

log = logging.getLogger("tunebench.loop")


@dataclass
class Setup:
    """Everything built before the first step; shared with the benchmarks."""

    accelerator: Accelerator
    model: torch.nn.Module
    tokenizer: Any
    #: accelerate's wrappers around the AdamW and the schedule built in setup
    optimizer: AcceleratedOptimizer
    scheduler: Any
    train_loader: DataLoader[Any]
    eval_loader: DataLoader[Any] | None
    data: PreparedData
    precision: str
    total_steps: int
    #: Shuffles the training data; its state at an epoch's start goes into checkpoints.
    train_generator: torch.Generator | None = None
    #: The training collator; a masked-LM one is re-positioned on resume (see BatchSeededMasking).
    train_collator: Any = None
    #: What the training step calls: the model, or its compiled form (train.torch_compile).
    forward: Callable[..., Any] | None = None
    #: The base model a LoRA adapter's folders name (engine.models.base_name).
    base: str = ""


def setup(cfg: RunConfig, emit: Emit) -> Setup:
    """Stage 1-4: device, tokenizer, data, model, optimizer and schedule, all placed by the accelerator."""
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader
    from transformers import get_scheduler

    t = cfg.train
    device, precision = set_up_device(t)
    check_model_options(cfg.model, device)
    if t.torch_compile:
        check_compile(device)
    # The mixed precision is process-wide state in accelerate: a process that trains several runs (the Runner
    # API) would keep the first run's; transformers' Trainer resets it the same way.
    AcceleratorState._reset_state()
    accelerator = Accelerator(
        cpu=device.type == "cpu",
        mixed_precision="no" if precision == "fp32" else precision,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        kwargs_handlers=process_group_kwargs(cfg.launch, device),
    )

    # 1. tokenizer and data
    emit(Status(FIRST_STAGE, cfg.model.name_or_path))
    tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model.trust_remote_code)
    emit(Status("loading data", cfg.data.source))
    data = prepare(cfg.data, tokenizer, cfg.task, emit, needs_eval=needs_evaluations(t))

    # 2. model (seeded so the fresh head is the same on every run)
    set_seed(t.seed)
    emit(Status("loading model", cfg.model.name_or_path))
    loaded = load_model(
        cfg.task,
        cfg.model.name_or_path,
        trust_remote_code=cfg.model.trust_remote_code,
        **label_kwargs(cfg.task, data.label_names, cfg.model.num_labels),
        **quantization_kwargs(cfg.model, device, precision),
    )
    if loaded.mismatched:
        log.warning(
            "the checkpoint's head (%s) does not fit %d labels; it was re-initialized",
            ", ".join(loaded.mismatched),
            len(data.label_names),
        )
    head_warning = untrained_head_warning(loaded.newly_initialized, cfg.task)
    if head_warning and cfg.task != "classification":  # a fresh classifier is the point of fine-tuning
        log.warning(head_warning)
    model = loaded.model
    check_vocab(tokenizer, model, cfg.model.name_or_path)
    if cfg.task == "causal-lm" and model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model = prepare_for_training(loaded, cfg, emit)  # gradient checkpointing, LoRA adapters

    # 3. batches
    # GPUs' tensor cores take sequences in multiples of 8 tokens. A CPU computes padding like any other token, so
    # there each batch pads to its longest sample only (docs/perf-log.md, cause 39).
    multiple = 8 if device.type == "cuda" else None
    train_collator = build_collator(cfg.task, tokenizer, t.mlm_probability, pad_to_multiple_of=multiple)
    if cfg.task == "masked-lm":  # masks by batch position, so that a resumed run masks as the first one did
        train_collator = BatchSeededMasking(train_collator, t.seed, rank=accelerator.process_index)
    generator = torch.Generator().manual_seed(t.seed)
    sampler = None
    if t.group_by_length:  # the same generator shuffles, so a checkpoint's sampler state still places a resume
        step_batch = t.per_device_train_batch_size * accelerator.num_processes * t.gradient_accumulation_steps
        sampler = length_grouped_sampler(data.train, step_batch, generator)
    train_loader = DataLoader(
        data.train,
        batch_size=t.per_device_train_batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        collate_fn=train_collator,
        generator=generator,
    )
    # Eval masks come from the global RNG under a fixed seed (see evaluate), so eval has its own collator.
    eval_collator = build_collator(cfg.task, tokenizer, t.mlm_probability, pad_to_multiple_of=multiple)
    eval_loader = None
    if data.eval is not None:
        # Shortest first: what eval counts does not depend on the order, and batches of similar length pad least.
        lengths = sample_lengths(data.eval)
        eval_loader = DataLoader(
            data.eval,
            batch_size=t.per_device_eval_batch_size,
            sampler=sorted(range(len(lengths)), key=lengths.__getitem__),
            collate_fn=eval_collator,
        )

    # 4. optimizer and schedule
    groups = weight_decay_groups(model, t.weight_decay)
    # Fused AdamW: one kernel over all the parameters instead of a dozen small ops per tensor, launched from Python
    # (docs/perf-log.md, cause 8, has what it saves a step); it is also what transformers' Trainer, and so the
    # SFT engine, uses. CPU and CUDA have it since torch 2.4.
    optimizer = torch.optim.AdamW(groups, lr=t.learning_rate, fused=device.type in ("cpu", "cuda"))
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    # Counted on the prepared loader: each process's share of the batches, so the schedule counts global steps.
    steps_per_epoch = math.ceil(len(train_loader) / t.gradient_accumulation_steps)
    total_steps = steps_per_epoch * t.num_train_epochs
    scheduler = get_scheduler(
        t.lr_scheduler_type,
        optimizer=optimizer.optimizer,
        num_warmup_steps=math.ceil(total_steps * t.warmup_ratio),
        num_training_steps=total_steps,
    )
    scheduler = accelerator.prepare(scheduler)
    if eval_loader is not None:
        eval_loader = accelerator.prepare(eval_loader)
    forward = CompiledForward(model) if t.torch_compile else model
    return Setup(
        accelerator,
        model,
        tokenizer,
        optimizer,
        scheduler,
        train_loader,
        eval_loader,
        data,
        precision,
        total_steps,
        generator,
        train_collator,
        forward,
        base_name(cfg.model.name_or_path),
    )


def run(cfg: RunConfig, emit: Emit, control: RunControl, run_dir: RunDir, *, resume: bool = False) -> Outcome:
    """Train ``cfg`` with the plain loop; see the run contract in ARCHITECTURE.md.

    With ``resume``, training continues from the latest complete checkpoint in ``run_dir`` (or from the
    start when there is none), with the same batches, masks, dropout and schedule as if never interrupted.
    """
    attempt = functools.partial(_run_once, emit=emit, control=control, run_dir=run_dir, resume=resume)
    return guard_memory(cfg, attempt, functools.partial(_smaller_batch, run_dir=run_dir, resume=resume))


def _smaller_batch(
    cfg: RunConfig, progress: Progress, detail: str, *, run_dir: RunDir, resume: bool
) -> RunConfig | None:
    """With ``train.auto_find_batch_size``, after running out of memory in training: the config with half the
    batch, its checkpoints gone and the saved config saying what runs now. None when that cannot help."""
    from accelerate import PartialState

    t = cfg.train
    batch = t.per_device_train_batch_size
    if not t.auto_find_batch_size or batch <= 1 or resume or progress.stage == "evaluating":
        return None
    smaller = max(1, batch // 2)
    log.warning("out of memory with per_device_train_batch_size=%d (%s); starting over with %d", batch, detail, smaller)
    retry = dataclasses.replace(cfg, train=dataclasses.replace(t, per_device_train_batch_size=smaller))
    if PartialState().is_main_process:
        save_config(retry, run_dir.config_path)
        shutil.rmtree(run_dir.checkpoints_dir, ignore_errors=True)
    return retry


def _run_once(
    cfg: RunConfig, progress: Progress, *, emit: Emit, control: RunControl, run_dir: RunDir, resume: bool
) -> Outcome:
    s = setup(cfg, emit)
    acc = s.accelerator
    many = acc.num_processes > 1
    try:
        book = StepBook(
            emit,
            control,
            main=acc.is_main_process,
            total_steps=s.total_steps,
            device=acc.device,
            divergence=DivergenceWatch(
                cfg.train.learning_rate,
                run_dir.checkpoints_dir,
                acc.device,
                acc.gather if many else None,
                precision=s.precision,
            ),
            reduce=(lambda x: acc.reduce(x, "mean")) if many else None,
            share=max_over_processes(acc.device) if many else None,
        )
        return _train(cfg, s, control, run_dir, resume, progress, book)
    except RuntimeError as exc:
        if many and _peer_lost(exc):
            raise ProcessLost(
                f"another process of this run ended at step {progress.step + 1} ({str(exc).splitlines()[0][:160]}); "
                f"the launcher's lines in {run_dir.path / 'stderr.log'} name its rank, and tunebench run --resume "
                f"{run_dir.path} continues from the last checkpoint"
            ) from exc
        raise
    finally:
        # The accelerator keeps references to everything it prepared; drop them so the memory can go.
        s.accelerator.free_memory()


class ProcessLost(RuntimeError):
    """A collective failed because another process of a many-process run is gone."""


def _peer_lost(exc: RuntimeError) -> bool:
    """Whether ``exc`` is a collective that lost its peer (a dead rank), rather than a bug of this process."""
    import torch.distributed as dist

    text = str(exc)
    # gloo reports a dead peer as a plain RuntimeError with the socket's error; NCCL as a DistError
    return isinstance(exc, dist.DistError) or "Connection reset by peer" in text or "Connection closed by peer" in text


def _train(
    cfg: RunConfig, s: Setup, control: RunControl, run_dir: RunDir, resume: bool, progress: Progress, book: StepBook
) -> Outcome:
    """Stage 5-6: the epochs, each with its evaluation and checkpoints, then the model."""
    t = cfg.train
    acc = s.accelerator
    per_epoch = len(s.train_loader)
    state = TrainingState(step=0, epoch=1, batches_done=0, batches_per_epoch=per_epoch, total_steps=s.total_steps)
    rng: dict[str, Any] | None = None
    if resume:
        state, rng = _load_latest(s, run_dir, book.say, state)
        book.clock.elapsed = state.train_time  # the ETA's seconds per step include the earlier sessions'
        book.metrics = dict(state.metrics)  # what the run reports, should it end at once
    book.say(
        run_started(
            cfg,
            run_dir,
            s.data,
            s.total_steps,
            state.step,
            device=str(acc.device),
            precision=s.precision,
            world_size=acc.num_processes,
            backend=str(acc.state.backend or ""),
            **parameter_fields(acc.unwrap_model(s.model), cfg),
        )
    )

    # The early-stopping count of a resumed run comes from the evaluations it made before its checkpoint. One
    # written at an epoch's last step, before that epoch's evaluation, resumes by evaluating again: that
    # evaluation is the resumed run's, not one to count twice.
    epoch_end_pending = 0 < state.batches_per_epoch <= state.batches_done
    early = EarlyStopping.for_run(t, run_dir.events() if resume else (), state.step - epoch_end_pending)
    stopped_early = False

    def evaluate_at(epoch_at: float, step: int) -> bool:
        """Evaluate now and report it; True when early stopping ends the run here."""
        book.say(Status("evaluating", f"epoch {fmt_epoch(epoch_at)}"))
        progress.stage = "evaluating"
        eval_start = time.perf_counter()
        scores = evaluate(s, cfg.task, t.seed)
        progress.stage = "training"
        book.evaluated(epoch_at, step, time.perf_counter() - eval_start, **scores)
        return early.see(scores, step) and step < s.total_steps

    # 5. train
    model = s.model
    model.train()
    forward = s.forward or model
    optimizer, scheduler, clip_grad_norm, backward = _step_calls(s, t.gradient_accumulation_steps)
    step, stopped = state.step, False
    last_saved = step if resume and step else -1
    generator = s.train_generator
    if rng is not None:  # last, so that nothing above consumes the restored random streams
        restore_rng_states(rng_of_rank(rng, acc.process_index, acc.num_processes), generator)
    progress.stage = "training"
    for epoch in range(state.epoch, t.num_train_epochs + 1):  # ``state``: where this epoch starts (or resumes)
        batches_done = state.batches_done
        epoch_sampler_state = generator.get_state() if generator is not None else None
        book.start_epoch(state.epoch_loss_sum, state.epoch_seconds)
        book.start_window(state.window_loss_sum, state.window_batches, state.window_samples)
        for batch in _epoch_batches(s, epoch, batches_done):
            with acc.accumulate(model):
                loss = forward(**batch).loss
                backward(loss)
                if acc.sync_gradients:
                    if t.max_grad_norm > 0:
                        clip_grad_norm(model.parameters(), t.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
            book.add_batch(loss, step + 1, batch["input_ids"].shape[0] * acc.num_processes)
            batches_done += 1
            if not acc.sync_gradients:
                continue
            step += 1
            progress.step = step
            book.step_done(step)
            if step % t.logging_steps == 0 or step == s.total_steps:
                book.divergence.check()
                epoch_float = epoch - 1 + batches_done / max(per_epoch, 1)
                book.log(step, epoch_float, book.window_mean(), float(s.scheduler.get_last_lr()[0]))
            inside = batches_done < per_epoch  # an evaluation due at an epoch's end comes after EpochEnded
            if s.eval_loader is not None and inside and evaluation_due(t, step, s.total_steps, epoch_end=False):
                stopped_early = evaluate_at(mid_epoch(epoch - 1 + batches_done / per_epoch), step)
            kill_point("step", step)
            stopped = book.obey(step)
            if stopped or (t.save_strategy == "steps" and step % t.save_steps == 0):
                # After the epoch's last batch the loader has drawn all of its shuffle: what the generator
                # holds now is the next epoch's start.
                epoch_done = batches_done >= per_epoch
                sampler = generator.get_state() if epoch_done and generator is not None else epoch_sampler_state
                position = _position(s, book, step, epoch, batches_done)
                last_saved = _save_checkpoint(s, run_dir, book, t.save_total_limit, sampler, position, early)
            if stopped or stopped_early:
                break
        if stopped or stopped_early:
            break
        kill_point("epoch-end", step)
        book.divergence.check()
        book.clock.close_window()
        book.end_epoch(epoch, step, batches_done)
        if s.eval_loader is not None and evaluation_due(t, step, s.total_steps, epoch_end=True):
            stopped_early = evaluate_at(epoch, step)
        stopped = book.stop_requested(step)
        state = _position(s, book, step, epoch + 1)  # the next epoch starts afresh
        if (t.save_strategy == "epoch" or stopped) and last_saved != step:
            # Its shuffle comes from the generator as it is now.
            sampler = generator.get_state() if generator is not None else None
            last_saved = _save_checkpoint(s, run_dir, book, t.save_total_limit, sampler, state, early)
        if stopped or stopped_early:
            break

    # 6. save what we have, also when stopped
    progress.stage = "saving the model"
    acc.wait_for_everyone()
    model_step = None
    if acc.is_main_process:
        if not stopped:  # a stopped run keeps its last weights and checkpoints, to be resumed
            if t.load_best_model_at_end:
                model_step = _load_best(acc.unwrap_model(model), run_dir, early, step, book.say)
            if t.save_total_limit is not None:  # the newest is no longer needed to resume (as in transformers)
                prune(run_dir.checkpoints_dir, t.save_total_limit, protected={_best_checkpoint(run_dir, early)})
        save_final_model(acc.unwrap_model(model), s.tokenizer, run_dir, book.say, s.base)
    status = "stopped" if stopped else "finished"
    return Outcome(
        status=status,
        step=step,
        model_dir=run_dir.model_dir,
        metrics=dict(book.metrics),
        stopped_early=stopped_early,
        model_step=model_step,
    )


def _best_checkpoint(run_dir: RunDir, early: EarlyStopping) -> Path | None:
    """Where the best evaluation's checkpoint is (or would be); None before any evaluation."""
    return run_dir.checkpoints_dir / checkpoint_name(early.best_step) if early.best is not None else None


def _load_best(model: torch.nn.Module, run_dir: RunDir, early: EarlyStopping, step: int, say: Emit) -> int | None:
    """``train.load_best_model_at_end``: the best evaluated checkpoint's weights into ``model``; returns its step,
    or None when the model keeps the last weights (no evaluation, or its checkpoint is gone)."""
    best = _best_checkpoint(run_dir, early)
    if best is None:
        return None
    if early.best_step != step:
        if best not in complete_checkpoints(run_dir.checkpoints_dir):
            log.warning("the best checkpoint, %s, is gone; model/ holds the weights of step %d", best.name, step)
            return None
        say(Status("loading the best model", best.name))
        load_weights(best, model)
    return early.best_step


def _step_calls(s: Setup, accumulation_steps: int) -> tuple[Any, Any, Callable[..., Any], Callable[..., Any]]:
    """(optimizer, scheduler, clip_grad_norm, backward) for the training step.

    With one process and no gradient scaler, accelerate's optimizer, scheduler and clipping wrappers (and its
    backward, without accumulation) only pass each call on, at a cost per step (docs/perf-log.md, cause 8):
    AcceleratedOptimizer.step looks an optional package up on disk at every call. Call torch directly then;
    acc.sync_gradients still marks the end of an accumulation.
    """
    import torch
    from accelerate.utils import DistributedType

    acc = s.accelerator
    direct = acc.num_processes == 1 and acc.scaler is None and acc.distributed_type == DistributedType.NO
    if not direct:
        # accelerate's scheduler wrapper steps once per process and step (its schedule counts per-process
        # batches); this one counts global steps (setup), so it steps once.
        scheduler = s.scheduler.scheduler if acc.num_processes > 1 else s.scheduler
        return s.optimizer, scheduler, acc.clip_grad_norm_, acc.backward
    backward = acc.backward if accumulation_steps > 1 else torch.Tensor.backward
    return s.optimizer.optimizer, s.scheduler.scheduler, torch.nn.utils.clip_grad_norm_, backward


def _epoch_batches(s: Setup, epoch: int, skip: int) -> Iterable[Any]:
    """The batches of ``epoch`` after the first ``skip`` (a resumed epoch), with the masking collator placed."""
    from accelerate import skip_first_batches

    per_epoch = len(s.train_loader)
    if isinstance(s.train_collator, BatchSeededMasking):
        s.train_collator.position = (epoch - 1) * per_epoch + skip
    if skip >= per_epoch:
        return ()  # only the end-of-epoch work was left; the checkpoint holds the next shuffle
    if skip:
        return skip_first_batches(s.train_loader, skip)
    return s.train_loader


def _position(s: Setup, book: StepBook, step: int, epoch: int, batches_done: int = 0) -> TrainingState:
    """Where the run stands after ``step``: ``batches_done`` batches into ``epoch``, with the epoch's and the
    window's sums (a device sync), or at the start of ``epoch``."""
    start = TrainingState(
        step=step,
        epoch=epoch,
        batches_done=0,
        batches_per_epoch=len(s.train_loader),
        total_steps=s.total_steps,
        train_time=book.clock.elapsed,
        metrics=dict(book.metrics),
    )
    if not batches_done:
        return start
    epoch_loss_sum, window_loss_sum = book.loss_sums()
    return dataclasses.replace(
        start,
        batches_done=batches_done,
        epoch_loss_sum=epoch_loss_sum,
        epoch_batches=batches_done,
        window_loss_sum=window_loss_sum,
        window_batches=book.window_batches,
        window_samples=book.window_samples,
        train_time=book.clock.so_far(),
        epoch_seconds=book.clock.epoch_seconds(),
    )


def _save_checkpoint(
    s: Setup,
    run_dir: RunDir,
    book: StepBook,
    keep: int | None,
    sampler_state: torch.Tensor | None,
    at: TrainingState,
    early: EarlyStopping,
) -> int:
    """Write a checkpoint of the run as it stands ``at`` (the main process writes, all wait); returns its step.
    Rotation keeps the best evaluation's checkpoint (``early`` knows which)."""
    acc = s.accelerator
    book.divergence.check()  # a NaN model is never written as a checkpoint
    acc.wait_for_everyone()
    rank_rngs: list[Any] | None = None
    if acc.num_processes > 1:  # each process's dropout stream is its own: rank 0 writes them all
        import torch.distributed as dist

        rank_rngs = [None] * acc.num_processes
        dist.all_gather_object(rank_rngs, rng_states())
    if acc.is_main_process:
        path = write_checkpoint(
            run_dir.checkpoints_dir,
            at.step,
            lambda folder: save_training_checkpoint(
                folder,
                model=acc.unwrap_model(s.model),
                optimizer=s.optimizer,
                scheduler=s.scheduler,
                state=at,
                epoch_sampler_state=sampler_state,
                scaler=acc.scaler,
                tokenizer=s.tokenizer,
                base=s.base,
                rank_rngs=rank_rngs,
            ),
            keep=keep,
            best=_best_checkpoint(run_dir, early),
        )
        book.say(CheckpointSaved(step=at.step, epoch=at.epoch_float, path=str(path)))
    acc.wait_for_everyone()
    return at.step


def _load_latest(
    s: Setup, run_dir: RunDir, say: Emit, fresh: TrainingState
) -> tuple[TrainingState, dict[str, Any] | None]:
    """The counters and RNG states of the latest complete checkpoint, with its weights loaded into ``s``."""
    acc = s.accelerator
    latest = checkpoint_to_resume(run_dir.checkpoints_dir, main=acc.is_main_process, barrier=acc.wait_for_everyone)
    if latest is None:
        return fresh, None
    say(Status("loading checkpoint", str(latest)))
    state, rng = load_training_checkpoint(
        latest,
        model=acc.unwrap_model(s.model),
        optimizer=s.optimizer,
        scheduler=s.scheduler,
        scaler=acc.scaler,
    )
    if (state.total_steps, state.batches_per_epoch) != (fresh.total_steps, fresh.batches_per_epoch):
        raise CheckpointError(
            f"{latest} was written for {state.total_steps} steps of {state.batches_per_epoch} batches per epoch, "
            f"but config.yaml now gives {fresh.total_steps} of {fresh.batches_per_epoch}; undo the edit to "
            "config.yaml (data and batch settings) or start a new run"
        )
    return state, rng
