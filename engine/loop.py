"""The plain PyTorch engine: tokenize → DataLoader → AdamW + schedule → train with per-epoch eval.

Runs on ``accelerate.Accelerator`` so that the same code runs on one CPU, one GPU, or under
``accelerate launch`` on many. Only the main process emits events and writes files.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.checkpoint import (
    TrainingState,
    latest_checkpoint,
    load_training_checkpoint,
    remove_partial,
    restore_rng_states,
    save_training_checkpoint,
    write_checkpoint,
)
from engine.config import ConfigError, RunConfig
from engine.control import RunControl
from engine.data import BatchSeededMasking, PreparedData, build_collator, prepare
from engine.errors import CheckpointError, OutOfMemory, TrainingDiverged
from engine.events import (
    CheckpointSaved,
    EpochEnded,
    Evaluated,
    Paused,
    Resumed,
    RunStarted,
    Status,
    StepLogged,
    StopRequested,
)
from engine.faults import kill_point
from engine.models import (
    check_vocab,
    count_parameters,
    load_model,
    load_tokenizer,
    pick_device,
    pick_precision,
    set_torch_threads,
    untrained_head_warning,
)
from engine.runner import Emit, Outcome
from engine.runs import RunDir, save_dir_atomically

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator
    from accelerate.optimizer import AcceleratedOptimizer
    from torch.utils.data import DataLoader

log = logging.getLogger("tunebench.loop")

MIXED_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def model_kwargs(cfg: RunConfig, data: PreparedData) -> dict[str, Any]:
    """from_pretrained arguments that come from the data: the classifier size and its label names."""
    if cfg.task != "classification":
        return {}
    names = data.label_names
    num_labels = cfg.model.num_labels or len(names)
    if num_labels < len(names):
        raise ConfigError(
            "model.num_labels",
            f"{num_labels} is fewer than the {len(names)} classes in the data; set it to {len(names)} or null",
        )
    names = names + [f"LABEL_{i}" for i in range(len(names), num_labels)]
    # id2label sets the classifier size; passing num_labels as well makes transformers warn when the
    # checkpoint's own label map has another size, which is the case the mismatch warning below explains.
    return {
        "id2label": dict(enumerate(names)),
        "label2id": {n: i for i, n in enumerate(names)},
    }


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
    device: str
    precision: str
    steps_per_epoch: int
    total_steps: int
    head_warning: str | None
    #: Shuffles the training data; its state at an epoch's start goes into checkpoints.
    train_generator: torch.Generator | None = None
    #: The training collator; a masked-LM one is re-positioned on resume (see BatchSeededMasking).
    train_collator: Any = None


def setup(cfg: RunConfig, emit: Emit) -> Setup:
    """Stage 1-4: device, tokenizer, data, model, optimizer and schedule, all placed by the accelerator."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader
    from transformers import get_scheduler

    t = cfg.train
    set_torch_threads(t.torch_threads)
    device = pick_device(t.device)
    precision = pick_precision(t.precision, device)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device.index)
    accelerator = Accelerator(
        cpu=device.type == "cpu",
        mixed_precision=MIXED_PRECISION[precision],
        gradient_accumulation_steps=t.gradient_accumulation_steps,
    )

    # 1. tokenizer and data
    emit(Status("loading tokenizer", cfg.model.name_or_path))
    tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model.trust_remote_code)
    emit(Status("loading data", cfg.data.source))
    data = prepare(cfg.data, tokenizer, cfg.task)

    # 2. model (seeded so the fresh head is the same on every run)
    set_seed(t.seed)
    emit(Status("loading model", cfg.model.name_or_path))
    loaded = load_model(
        cfg.task,
        cfg.model.name_or_path,
        trust_remote_code=cfg.model.trust_remote_code,
        **model_kwargs(cfg, data),
    )
    if loaded.mismatched:
        log.warning(
            "the checkpoint's head (%s) does not fit %d labels; it was re-initialized",
            ", ".join(loaded.mismatched),
            len(data.label_names),
        )
    head_warning = untrained_head_warning(loaded.newly_initialized, cfg.task)
    model = loaded.model
    check_vocab(tokenizer, model, cfg.model.name_or_path)
    if cfg.task == "causal-lm" and model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id

    # 3. batches
    train_collator = build_collator(cfg.task, tokenizer, t.mlm_probability)
    if cfg.task == "masked-lm":  # masks by batch position, so that a resumed run masks as the first one did
        train_collator = BatchSeededMasking(train_collator, t.seed, rank=accelerator.process_index)
    generator = torch.Generator().manual_seed(t.seed)
    train_loader = DataLoader(
        data.train,
        batch_size=t.per_device_train_batch_size,
        shuffle=True,
        collate_fn=train_collator,
        generator=generator,
    )
    # Eval masks come from the global RNG under a fixed seed (see evaluate), so eval has its own collator.
    eval_collator = build_collator(cfg.task, tokenizer, t.mlm_probability)
    eval_loader = (
        DataLoader(data.eval, batch_size=t.per_device_eval_batch_size, collate_fn=eval_collator)
        if data.eval is not None
        else None
    )

    # 4. optimizer and schedule; no weight decay on biases and LayerNorm weights, as in the HF examples
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    groups = [
        {
            "params": [p for n, p in model.named_parameters() if not any(nd in n for nd in no_decay)],
            "weight_decay": t.weight_decay,
        },
        {
            "params": [p for n, p in model.named_parameters() if any(nd in n for nd in no_decay)],
            "weight_decay": 0.0,
        },
    ]
    # Fused AdamW: one kernel over all the parameters instead of a dozen small ops per tensor, launched from Python
    # (a whole training step of bench/loop_overhead.py's small BERT on a CPU: 55-57 ms instead of 66-83); it is
    # also what transformers' Trainer, and so the SFT engine, uses. CPU and CUDA have it since torch 2.4.
    optimizer = torch.optim.AdamW(groups, lr=t.learning_rate, fused=device.type in ("cpu", "cuda"))
    steps_per_epoch = math.ceil(len(train_loader) / t.gradient_accumulation_steps)
    total_steps = steps_per_epoch * t.num_train_epochs
    scheduler = get_scheduler(
        t.lr_scheduler_type,
        optimizer=optimizer,
        num_warmup_steps=math.ceil(total_steps * t.warmup_ratio),
        num_training_steps=total_steps,
    )
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    if eval_loader is not None:
        eval_loader = accelerator.prepare(eval_loader)
    return Setup(
        accelerator,
        model,
        tokenizer,
        optimizer,
        scheduler,
        train_loader,
        eval_loader,
        data,
        str(accelerator.device),
        precision,
        steps_per_epoch,
        total_steps,
        head_warning,
        generator,
        train_collator,
    )


def evaluate(s: Setup, task: str, seed: int) -> dict[str, float]:
    """Eval loss plus accuracy and macro-F1 (classification) or perplexity and token accuracy (LMs)."""
    import torch

    assert s.eval_loader is not None
    acc = s.accelerator
    model = s.model
    model.eval()
    loss_sum = torch.zeros((), device=acc.device, dtype=torch.float64)
    weight_sum = torch.zeros((), device=acc.device, dtype=torch.float64)
    correct = torch.zeros((), device=acc.device, dtype=torch.long)
    counted = torch.zeros((), device=acc.device, dtype=torch.long)
    num_labels = len(s.data.label_names) or 1
    confusion = torch.zeros((num_labels, num_labels), device=acc.device, dtype=torch.long)
    # Masks for LM eval are random: fix them so epochs compare fairly, without disturbing training RNG.
    with torch.random.fork_rng(devices=[acc.device] if acc.device.type == "cuda" else []), torch.no_grad():
        torch.manual_seed(seed)
        for batch in s.eval_loader:
            out = model(**batch)
            kill_point("evaluate")
            labels = batch["labels"]
            if task == "classification":
                preds = out.logits.argmax(-1)
                preds, labels = acc.gather_for_metrics((preds, labels))
                n = labels.numel()
                correct += (preds == labels).sum()
                counted += n
                confusion += torch.bincount(labels * num_labels + preds, minlength=num_labels**2).view(
                    num_labels, num_labels
                )
                loss_sum += out.loss.double() * n
                weight_sum += n
            else:
                logits = out.logits
                if task == "causal-lm":
                    logits, labels = logits[:, :-1], labels[:, 1:]
                mask = labels != -100
                n = mask.sum()
                correct += ((logits.argmax(-1) == labels) & mask).sum()
                counted += n
                loss_sum += out.loss.double() * n
                weight_sum += n
    model.train()
    loss_sum, weight_sum, correct, counted = (acc.reduce(x, "sum") for x in (loss_sum, weight_sum, correct, counted))
    eval_loss = (loss_sum / weight_sum.clamp(min=1)).item()
    accuracy = (correct.double() / counted.clamp(min=1)).item()
    if task == "classification":
        tp = confusion.diag().double()
        precision = tp / confusion.sum(0).double().clamp(min=1)
        recall = tp / confusion.sum(1).double().clamp(min=1)
        f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
        present = (confusion.sum(0) + confusion.sum(1)) > 0  # classes absent from labels and preds don't count
        macro_f1 = f1[present].mean().item() if bool(present.any()) else 0.0
        return {"eval_loss": eval_loss, "accuracy": accuracy, "macro_f1": macro_f1}
    return {"eval_loss": eval_loss, "perplexity": math.exp(min(eval_loss, 50.0)), "accuracy": accuracy}


def save_model(s: Setup, run_dir: RunDir, emit: Emit) -> None:
    s.accelerator.wait_for_everyone()
    if not s.accelerator.is_main_process:
        return
    emit(Status("saving model", str(run_dir.model_dir)))
    model = s.accelerator.unwrap_model(s.model)

    def write(tmp: Any) -> None:
        model.save_pretrained(tmp)
        s.tokenizer.save_pretrained(tmp)

    save_dir_atomically(run_dir.model_dir, write)


@dataclass
class _Progress:
    """What the OOM handler needs to know about where the run was."""

    step: int = 0
    stage: str = "loading the model and data"


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


def run(cfg: RunConfig, emit: Emit, control: RunControl, run_dir: RunDir, *, resume: bool = False) -> Outcome:
    """Train ``cfg`` with the plain loop; see the run contract in ARCHITECTURE.md.

    With ``resume``, training continues from the latest complete checkpoint in ``run_dir`` (or from the
    start when there is none), with the same batches, masks, dropout and schedule as if never interrupted.
    """
    import dataclasses

    import torch

    attempt = cfg
    while True:
        progress = _Progress()
        try:
            return _run_once(attempt, emit, control, run_dir, resume, progress)
        except torch.cuda.OutOfMemoryError as exc:
            detail = (str(exc).strip().splitlines() or ["out of memory"])[0][:160]
        # Out of the except block the traceback is gone, and with it the frames that held the batch and the
        # activations; only now can the memory really be returned.
        free_device_memory()
        t = attempt.train
        batch = t.per_device_train_batch_size
        if t.auto_find_batch_size and batch > 1 and not resume and progress.stage != "evaluating":
            smaller = max(1, batch // 2)
            log.warning(
                "out of memory with per_device_train_batch_size=%d (%s); starting over with %d", batch, detail, smaller
            )
            attempt = dataclasses.replace(attempt, train=dataclasses.replace(t, per_device_train_batch_size=smaller))
            _start_over(attempt, run_dir)
            continue
        raise OutOfMemory(_oom_message(attempt, progress, detail))


def _oom_message(cfg: RunConfig, progress: _Progress, detail: str) -> str:
    t = cfg.train
    where = f"at step {progress.step + 1}" if progress.stage == "training" else f"while {progress.stage}"
    if progress.stage == "evaluating":
        fix = f"lower train.per_device_eval_batch_size (now {t.per_device_eval_batch_size}) or data.max_length"
    else:
        fix = (
            f"lower train.per_device_train_batch_size (now {t.per_device_train_batch_size}; raise "
            f"gradient_accumulation_steps to keep the effective batch) or data.max_length "
            f"(now {cfg.data.max_length}), or set train.auto_find_batch_size: true"
        )
    return f"out of memory on the accelerator {where}; {fix} ({detail})"


def _start_over(cfg: RunConfig, run_dir: RunDir) -> None:
    """Before a retry with a smaller batch: the saved config must say what runs, old checkpoints must go."""
    import shutil

    from accelerate import PartialState

    from engine.config import save_config

    if PartialState().is_main_process:
        save_config(cfg, run_dir.config_path)
        shutil.rmtree(run_dir.checkpoints_dir, ignore_errors=True)


def _run_once(
    cfg: RunConfig, emit: Emit, control: RunControl, run_dir: RunDir, resume: bool, progress: _Progress
) -> Outcome:
    s = setup(cfg, emit)
    try:
        return _train(cfg, s, emit, control, run_dir, resume, progress)
    finally:
        # The accelerator keeps references to everything it prepared; drop them so the memory can go.
        s.accelerator.free_memory()


def _train(
    cfg: RunConfig,
    s: Setup,
    emit: Emit,
    control: RunControl,
    run_dir: RunDir,
    resume: bool,
    progress: _Progress,
) -> Outcome:
    import torch
    from accelerate import skip_first_batches
    from accelerate.utils import DistributedType

    t = cfg.train
    acc = s.accelerator
    main = acc.is_main_process
    say: Emit = emit if main else (lambda _e: None)
    if s.head_warning and cfg.task != "classification":  # a fresh classifier is the point of fine-tuning
        log.warning(s.head_warning)
    batches_per_epoch = len(s.train_loader)
    state = TrainingState(
        step=0, epoch=1, batches_done=0, batches_per_epoch=batches_per_epoch, total_steps=s.total_steps
    )
    rng: dict[str, Any] | None = None
    if resume:
        state, rng = _load_latest(cfg, s, run_dir, say, state)
    say(
        RunStarted(
            run_dir=str(run_dir.path),
            run_name=run_dir.name,
            task=cfg.task,
            engine=cfg.engine,
            model=cfg.model.name_or_path,
            device=s.device,
            precision=s.precision,
            num_parameters=count_parameters(s.model),
            num_train_samples=len(s.data.train),
            num_eval_samples=len(s.data.eval) if s.data.eval is not None else 0,
            num_epochs=t.num_train_epochs,
            total_steps=s.total_steps,
            batch_size=t.per_device_train_batch_size * t.gradient_accumulation_steps * acc.num_processes,
            label_names=s.data.label_names,
            start_step=state.step,
        )
    )

    # 5. train
    model = s.model
    model.train()
    step = state.step
    metrics: dict[str, float] = dict(state.metrics)
    status = "finished"
    train_time = state.train_time  # seconds spent stepping, pauses excluded: the base of ETA and throughput
    on_gpu = acc.device.type == "cuda"
    # With one process and no gradient scaler, accelerate's optimizer, scheduler and clipping wrappers (and its
    # backward, without accumulation) only pass each call on, at about 0.5 ms a step on a CPU:
    # AcceleratedOptimizer.step looks an optional package up on disk at every call. Call torch directly then;
    # acc.sync_gradients still marks the end of an accumulation.
    direct = acc.num_processes == 1 and acc.scaler is None and acc.distributed_type == DistributedType.NO
    optimizer = s.optimizer.optimizer if direct else s.optimizer
    scheduler = s.scheduler.scheduler if direct else s.scheduler
    clip_grad_norm = torch.nn.utils.clip_grad_norm_ if direct else acc.clip_grad_norm_
    backward = acc.backward if not direct or t.gradient_accumulation_steps > 1 else torch.Tensor.backward
    generator = s.train_generator
    # First non-finite loss, tracked on the device: checking it costs a sync only where one happens anyway.
    bad_step = torch.zeros((), dtype=torch.long, device=acc.device)
    bad_value = torch.zeros((), device=acc.device)
    last_saved = step if resume and step else -1
    if rng is not None:  # last, so that nothing above consumes the restored random streams
        restore_rng_states(rng, generator)
    progress.stage = "training"

    def checkpoint(epoch_sampler_state: torch.Tensor | None, position: TrainingState) -> None:
        nonlocal last_saved
        _raise_if_diverged(acc, bad_step, bad_value, cfg, run_dir)
        acc.wait_for_everyone()
        if main:
            path = write_checkpoint(
                run_dir.checkpoints_dir,
                position.step,
                lambda folder: save_training_checkpoint(
                    folder,
                    model=acc.unwrap_model(model),
                    optimizer=s.optimizer,
                    scheduler=s.scheduler,
                    state=position,
                    epoch_sampler_state=epoch_sampler_state,
                    scaler=acc.scaler,
                ),
                keep=t.save_total_limit,
            )
            say(CheckpointSaved(step=position.step, epoch=position.epoch_float, path=str(path)))
        acc.wait_for_everyone()
        last_saved = position.step

    for epoch in range(state.epoch, t.num_train_epochs + 1):
        resumed_epoch = epoch == state.epoch
        skip = state.batches_done if resumed_epoch else 0
        epoch_sampler_state = generator.get_state() if generator is not None else None
        epoch_start = time.perf_counter()
        epoch_loss = torch.tensor(state.epoch_loss_sum if resumed_epoch else 0.0, device=acc.device)
        batches_done = skip
        window_loss = torch.tensor(state.window_loss_sum if resumed_epoch else 0.0, device=acc.device)
        window_batches = state.window_batches if resumed_epoch else 0
        window_samples = state.window_samples if resumed_epoch else 0
        window_start = time.perf_counter()
        if isinstance(s.train_collator, BatchSeededMasking):
            s.train_collator.position = (epoch - 1) * batches_per_epoch + skip
        if skip >= batches_per_epoch:
            batches: Any = ()  # only the end-of-epoch work was left; the checkpoint holds the next shuffle
        elif skip:
            batches = skip_first_batches(s.train_loader, skip)
        else:
            batches = s.train_loader
        for batch in batches:
            with acc.accumulate(model):
                loss = model(**batch).loss
                backward(loss)
                if acc.sync_gradients:
                    if t.max_grad_norm > 0:
                        clip_grad_norm(model.parameters(), t.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
            detached = loss.detach().float()
            newly_bad = (bad_step == 0) & ~torch.isfinite(detached)
            bad_step = torch.where(newly_bad, step + 1, bad_step)
            bad_value = torch.where(newly_bad, detached, bad_value)
            epoch_loss += detached
            window_loss += detached
            batches_done += 1
            window_batches += 1
            window_samples += batch["input_ids"].shape[0] * acc.num_processes
            if not acc.sync_gradients:
                continue
            step += 1
            progress.step = step
            if step % t.logging_steps == 0 or step == s.total_steps:
                _raise_if_diverged(acc, bad_step, bad_value, cfg, run_dir)
                now = time.perf_counter()
                window_time = now - window_start
                train_time += window_time
                mean_loss = acc.reduce(window_loss, "mean").item() / window_batches  # sync point, once a window
                say(
                    StepLogged(
                        step=step,
                        total_steps=s.total_steps,
                        epoch=epoch - 1 + batches_done / max(batches_per_epoch, 1),
                        loss=mean_loss,
                        learning_rate=float(s.scheduler.get_last_lr()[0]),
                        samples_per_second=window_samples / max(window_time, 1e-9),
                        elapsed_seconds=train_time,
                        eta_seconds=train_time / step * (s.total_steps - step),
                        device_memory_mb=torch.cuda.memory_allocated() / 2**20 if on_gpu else None,
                    )
                )
                window_loss.zero_()
                window_batches = window_samples = 0
                window_start = time.perf_counter()
            kill_point("step", step)
            if control.pause.is_set():
                paused_at = time.perf_counter()
                say(Paused(step=step))
                control.wait_while_paused()
                if not control.should_stop:
                    say(Resumed(step=step))
                window_start += time.perf_counter() - paused_at
                epoch_start += time.perf_counter() - paused_at
            scheduled = t.save_strategy == "steps" and step % t.save_steps == 0
            if control.should_stop:
                say(StopRequested(step=step))
                status = "stopped"
            if scheduled or status == "stopped":
                sums = acc.reduce(torch.stack([epoch_loss, window_loss]), "mean").tolist()
                epoch_done = batches_done >= batches_per_epoch
                checkpoint(
                    # After the epoch's last batch the loader has drawn all of its shuffle: what the generator
                    # holds now is the next epoch's start.
                    generator.get_state() if epoch_done and generator is not None else epoch_sampler_state,
                    TrainingState(
                        step=step,
                        epoch=epoch,
                        batches_done=batches_done,
                        batches_per_epoch=batches_per_epoch,
                        total_steps=s.total_steps,
                        epoch_loss_sum=sums[0],
                        epoch_batches=batches_done,
                        window_loss_sum=sums[1],
                        window_batches=window_batches,
                        window_samples=window_samples,
                        train_time=train_time + time.perf_counter() - window_start,
                        metrics=metrics,
                    ),
                )
            if status == "stopped":
                break
        if status == "stopped":
            break
        kill_point("epoch-end", step)
        _raise_if_diverged(acc, bad_step, bad_value, cfg, run_dir)
        train_time += time.perf_counter() - window_start
        train_loss = acc.reduce(epoch_loss, "mean").item() / max(batches_done, 1)
        say(
            EpochEnded(
                epoch=epoch,
                step=step,
                train_loss=train_loss,
                duration_seconds=time.perf_counter() - epoch_start,
            )
        )
        metrics = {"train_loss": train_loss}
        if s.eval_loader is not None:
            say(Status("evaluating", f"epoch {epoch}"))
            progress.stage = "evaluating"
            eval_start = time.perf_counter()
            scores = evaluate(s, cfg.task, t.seed)
            progress.stage = "training"
            say(Evaluated(epoch=epoch, step=step, duration_seconds=time.perf_counter() - eval_start, **scores))
            metrics.update(scores)
        if control.should_stop:
            status = "stopped"
        if (t.save_strategy == "epoch" or status == "stopped") and last_saved != step:
            # The next epoch starts afresh: its shuffle comes from the generator as it is now.
            checkpoint(
                generator.get_state() if generator is not None else None,
                TrainingState(
                    step=step,
                    epoch=epoch + 1,
                    batches_done=0,
                    batches_per_epoch=batches_per_epoch,
                    total_steps=s.total_steps,
                    train_time=train_time,
                    metrics=metrics,
                ),
            )
        if status == "stopped":
            break

    # 6. save what we have, also when stopped
    progress.stage = "saving the model"
    save_model(s, run_dir, say)
    return Outcome(status=status, step=step, model_dir=run_dir.model_dir, metrics=metrics)


def _load_latest(
    cfg: RunConfig, s: Setup, run_dir: RunDir, say: Emit, fresh: TrainingState
) -> tuple[TrainingState, dict[str, Any] | None]:
    """The counters and RNG states of the latest complete checkpoint, with its weights loaded into ``s``."""
    acc = s.accelerator
    if acc.is_main_process:
        remove_partial(run_dir.checkpoints_dir)
    acc.wait_for_everyone()
    latest = latest_checkpoint(run_dir.checkpoints_dir)
    if latest is None:
        log.warning("no complete checkpoint in %s; the run starts over from step 0", run_dir.checkpoints_dir)
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


def _raise_if_diverged(
    acc: Accelerator, bad_step: torch.Tensor, bad_value: torch.Tensor, cfg: RunConfig, run_dir: RunDir
) -> None:
    """Raise TrainingDiverged if any loss so far was NaN or infinite (one device sync; call it sparingly)."""
    if acc.num_processes > 1:
        bad_step, bad_value = acc.gather(bad_step.reshape(1)), acc.gather(bad_value.reshape(1))
    steps = bad_step.reshape(-1).tolist()
    values = bad_value.reshape(-1).tolist()
    bad = [(n, v) for n, v in zip(steps, values, strict=True) if n]
    if not bad:
        return
    n, value = min(bad)
    what = "NaN" if math.isnan(value) else "infinite"
    kept = latest_checkpoint(run_dir.checkpoints_dir)
    where = f"; the last good checkpoint, {kept.name}, is kept" if kept else ""
    raise TrainingDiverged(
        f"loss became {what} at step {n}; lower train.learning_rate (now {cfg.train.learning_rate:g}) or use "
        f"train.precision: fp32{where}"
    )
