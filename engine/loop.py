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

from engine.config import ConfigError, RunConfig
from engine.control import RunControl
from engine.data import PreparedData, build_collator, prepare
from engine.events import (
    EpochEnded,
    Evaluated,
    Paused,
    Resumed,
    RunStarted,
    Status,
    StepLogged,
    StopRequested,
)
from engine.models import (
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
    return {
        "num_labels": num_labels,
        "id2label": dict(enumerate(names)),
        "label2id": {n: i for i, n in enumerate(names)},
    }


@dataclass
class Setup:
    """Everything built before the first step; shared with the benchmarks."""

    accelerator: Accelerator
    model: torch.nn.Module
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_loader: DataLoader[Any]
    eval_loader: DataLoader[Any] | None
    data: PreparedData
    device: str
    precision: str
    steps_per_epoch: int
    total_steps: int
    head_warning: str | None


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
    if cfg.task == "causal-lm" and model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id

    # 3. batches
    collator = build_collator(cfg.task, tokenizer, t.mlm_probability)
    generator = torch.Generator().manual_seed(t.seed)
    train_loader = DataLoader(
        data.train,
        batch_size=t.per_device_train_batch_size,
        shuffle=True,
        collate_fn=collator,
        generator=generator,
    )
    eval_loader = (
        DataLoader(data.eval, batch_size=t.per_device_eval_batch_size, collate_fn=collator)
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
    optimizer = torch.optim.AdamW(groups, lr=t.learning_rate)
    accelerator = Accelerator(
        cpu=device.type == "cpu",
        mixed_precision=MIXED_PRECISION[precision],
        gradient_accumulation_steps=t.gradient_accumulation_steps,
    )
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


def run(cfg: RunConfig, emit: Emit, control: RunControl, run_dir: RunDir) -> Outcome:
    """Train ``cfg`` with the plain loop; see the run contract in ARCHITECTURE.md."""
    import torch

    t = cfg.train
    s = setup(cfg, emit)
    acc = s.accelerator
    main = acc.is_main_process
    say: Emit = emit if main else (lambda _e: None)
    if s.head_warning and cfg.task != "classification":  # a fresh classifier is the point of fine-tuning
        log.warning(s.head_warning)
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
        )
    )

    # 5. train
    model = s.model
    model.train()
    step = 0
    metrics: dict[str, float] = {}
    status = "finished"
    train_time = 0.0  # seconds spent stepping, pauses excluded: the base of ETA and throughput
    on_gpu = acc.device.type == "cuda"
    for epoch in range(1, t.num_train_epochs + 1):
        epoch_start = time.perf_counter()
        epoch_loss = torch.zeros((), device=acc.device)
        epoch_batches = 0
        window_loss = torch.zeros((), device=acc.device)
        window_batches = window_samples = 0
        window_start = time.perf_counter()
        for batch in s.train_loader:
            with acc.accumulate(model):
                out = model(**batch)
                loss = out.loss
                acc.backward(loss)
                if acc.sync_gradients and t.max_grad_norm > 0:
                    acc.clip_grad_norm_(model.parameters(), t.max_grad_norm)
                s.optimizer.step()
                s.scheduler.step()
                s.optimizer.zero_grad(set_to_none=True)
            detached = loss.detach()
            epoch_loss += detached
            window_loss += detached
            epoch_batches += 1
            window_batches += 1
            window_samples += batch["input_ids"].shape[0] * acc.num_processes
            if not acc.sync_gradients:
                continue
            step += 1
            if step % t.logging_steps == 0 or step == s.total_steps:
                now = time.perf_counter()
                window_time = now - window_start
                train_time += window_time
                mean_loss = acc.reduce(window_loss, "mean").item() / window_batches  # sync point, once a window
                say(
                    StepLogged(
                        step=step,
                        total_steps=s.total_steps,
                        epoch=epoch - 1 + epoch_batches / max(len(s.train_loader), 1),
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
            if control.pause.is_set():
                paused_at = time.perf_counter()
                say(Paused(step=step))
                control.wait_while_paused()
                if not control.should_stop:
                    say(Resumed(step=step))
                window_start += time.perf_counter() - paused_at
                epoch_start += time.perf_counter() - paused_at
            if control.should_stop:
                say(StopRequested(step=step))
                status = "stopped"
                break
        if status == "stopped":
            break
        train_time += time.perf_counter() - window_start
        train_loss = acc.reduce(epoch_loss, "mean").item() / max(epoch_batches, 1)
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
            eval_start = time.perf_counter()
            scores = evaluate(s, cfg.task, t.seed)
            say(Evaluated(epoch=epoch, step=step, duration_seconds=time.perf_counter() - eval_start, **scores))
            metrics.update(scores)
        if control.should_stop:
            status = "stopped"
            break

    # 6. save what we have, also when stopped
    save_model(s, run_dir, say)
    return Outcome(status=status, step=step, model_dir=run_dir.model_dir, metrics=metrics)
