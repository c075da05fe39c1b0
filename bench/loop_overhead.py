"""Engine overhead of the loop engine: Runner (with the TUI's subscribers) against a plain PyTorch loop.

A is the loop a user would write by hand (datasets → tokenize → DataLoader → AdamW + linear schedule →
train → eval → save), with the engine's fused AdamW so that both sides do the same math (one more run of A
with torch's default AdamW shows what that choice is worth). B is ``engine.runner.Runner`` on the loop
engine with the subscribers the TUI attaches. Same model, data, seed, batch, length and epoch; run back to
back in one process, A B eight times, after one untimed warm-up run, with one torch thread on both sides
(``--threads``; see THREADS_OPTION).
max_length is 32: nearly every review is longer, so every batch has the same shape on both sides whatever
order the two DataLoaders draw in (with dynamic padding, batch order changes the work per step).
Both log every step (B: one StepLogged event per step, the heaviest event
rate the UI can ask for; A: a ``.item()`` per step), so each step's wall time is seen from outside: A at
its log point, B when its event reaches the subscriber. Each run is summed up by its median step time.
On this shared VM the speed of the whole machine drifts by up to 20% over tens of seconds, on both sides
alike (CPU time moves with wall time), so runs are short (one epoch) and paired: the ratio is the median,
over the eight pairs, of A's median step over B's in the same pair. The best run of each side, medians over
all runs, CPU time per step and whole-epoch throughput are printed beside it.

    python bench/loop_overhead.py            # ~1 minute on 2 CPU cores
    python bench/loop_overhead.py --smoke    # seconds; proves the script works
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import (
    SAMPLES,
    machine_line,
    make_bert,
    median,
    parse_args,
    print_table,
    quiet_transformers,
    ratio_line,
    run_in_thread,
    scratch_dir,
)
from tui_subscribers import run_as_the_workbench

GOAL = 0.98
PAIRS = 8
#: Both sides train with one torch thread unless told otherwise. On a shared 2-core machine two OpenMP threads
#: turn any other process's activity into barrier stalls that swing step times several-fold (bench/threads.py),
#: which buries a 2% difference; the engine's own per-step work does not depend on the thread count.
THREADS_OPTION = (
    "--threads",
    {"type": int, "default": 1, "help": "torch threads on both sides (default 1; 0 = torch's default)"},
)


@dataclass
class Setting:
    """What both sides train: identical for A and B."""

    model_dir: Path
    data_dir: Path
    max_length: int
    batch_size: int
    eval_batch_size: int
    epochs: int
    train_size: int
    eval_size: int
    learning_rate: float = 1e-4
    seed: int = 42
    logging_steps: int = 1
    max_grad_norm: float = 1.0
    #: torch intra-op threads on both sides; None = torch's default (one per core)
    threads: int | None = None
    #: A's optimizer: fused AdamW as the engine's (the ratio compares the same math), or torch's default
    #: implementation (a loop of small ops per tensor), to show what the engine's choice is worth
    fused_adamw: bool = True


@dataclass
class Measured:
    """One run: step times, per-epoch training time and samples, plus end-to-end wall time."""

    side: str
    #: Wall time of each step but the first of an epoch (that one also starts the DataLoader).
    step_seconds: list[float] = field(default_factory=list)
    #: CPU time of the training thread in those steps: work done, whatever else the machine runs.
    step_cpu_seconds: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    epoch_samples: list[int] = field(default_factory=list)
    eval_seconds: float = 0.0
    wall_seconds: float = 0.0
    final_train_loss: float = float("nan")
    accuracy: float = float("nan")

    @property
    def epoch_throughputs(self) -> list[float]:
        return [n / s for n, s in zip(self.epoch_samples, self.epoch_seconds, strict=True)]

    @property
    def samples_per_second(self) -> float:
        return sum(self.epoch_samples) / sum(self.epoch_seconds)

    @property
    def median_step_ms(self) -> float:
        return median(self.step_seconds) * 1000

    @property
    def median_step_cpu_ms(self) -> float:
        return median(self.step_cpu_seconds) * 1000


# ---------------------------------------------------------------------------------------------------------
# A: the plain loop, as a user writes it by hand


def plain_loop(s: Setting) -> Measured:
    """Tokenize, DataLoader, AdamW, linear schedule, train, eval per epoch, save: no engine code at all."""
    import datasets
    import torch
    from torch.utils.data import DataLoader
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        get_scheduler,
        set_seed,
    )

    m = Measured("A plain loop")
    if s.threads:
        torch.set_num_threads(s.threads)
    wall_start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(s.model_dir)
    raw = datasets.load_dataset(
        "json",
        data_files={"train": str(s.data_dir / "train.jsonl"), "test": str(s.data_dir / "test.jsonl")},
    )
    train = raw["train"].shuffle(seed=s.seed).select(range(s.train_size))
    test = raw["test"].shuffle(seed=s.seed).select(range(s.eval_size))
    label_values = sorted(set(train.unique("label")) | set(test.unique("label")))
    label_ids = {v: i for i, v in enumerate(label_values)}

    def encode(batch: dict[str, list[Any]]) -> Any:
        out = tokenizer(batch["text"], truncation=True, max_length=s.max_length)
        out["labels"] = [label_ids[v] for v in batch["label"]]
        return out

    train = train.map(encode, batched=True, remove_columns=train.column_names)
    test = test.map(encode, batched=True, remove_columns=test.column_names)
    train.set_format("torch")
    test.set_format("torch")

    set_seed(s.seed)
    model = AutoModelForSequenceClassification.from_pretrained(s.model_dir, num_labels=len(label_values))
    collator = DataCollatorWithPadding(tokenizer)  # to each batch's longest sample, as the engine pads on the CPU
    train_loader = DataLoader(
        train,
        batch_size=s.batch_size,
        shuffle=True,
        collate_fn=collator,
        generator=torch.Generator().manual_seed(s.seed),
    )
    test_loader = DataLoader(test, batch_size=s.eval_batch_size, collate_fn=collator)
    # as in transformers' run_glue_no_trainer.py: no decay on biases and LayerNorm weights
    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {
            "params": [p for n, p in model.named_parameters() if not any(nd in n for nd in no_decay)],
            "weight_decay": 0.0,
        },
        {"params": [p for n, p in model.named_parameters() if any(nd in n for nd in no_decay)], "weight_decay": 0.0},
    ]
    # weight decay 0.0: the engine's default; fused as the engine's unless the bench asks for torch's default
    optimizer = torch.optim.AdamW(groups, lr=s.learning_rate, fused=s.fused_adamw)
    total_steps = len(train_loader) * s.epochs
    scheduler = get_scheduler("linear", optimizer=optimizer, num_warmup_steps=0, num_training_steps=total_steps)

    step = 0
    for _epoch in range(s.epochs):
        model.train()
        start = last = time.perf_counter()
        last_cpu = time.thread_time()
        samples = 0
        running = torch.zeros(())
        for n, batch in enumerate(train_loader):
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), s.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            running += loss.detach()
            samples += batch["input_ids"].shape[0]
            step += 1
            if step % s.logging_steps == 0:
                m.final_train_loss = running.item() / s.logging_steps
                running.zero_()
                now, now_cpu = time.perf_counter(), time.thread_time()
                if n:
                    m.step_seconds.append((now - last) / s.logging_steps)
                    m.step_cpu_seconds.append((now_cpu - last_cpu) / s.logging_steps)
                last, last_cpu = now, now_cpu
        m.epoch_seconds.append(time.perf_counter() - start)
        m.epoch_samples.append(samples)

        eval_start = time.perf_counter()
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for batch in test_loader:
                preds = model(**batch).logits.argmax(-1)
                correct += int((preds == batch["labels"]).sum())
                total += len(preds)
        m.accuracy = correct / total
        m.eval_seconds += time.perf_counter() - eval_start
    with scratch_dir("plain-save") as out:
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    m.wall_seconds = time.perf_counter() - wall_start
    return m


# ---------------------------------------------------------------------------------------------------------
# B: the engine


def engine_config(s: Setting, runs_dir: Path) -> Any:
    from engine.config import from_dict

    return from_dict(
        {
            "task": "classification",
            "engine": "loop",
            "model": {"name_or_path": str(s.model_dir)},
            "data": {
                "source": str(s.data_dir),
                "eval_split": "test",
                "train_size": s.train_size,
                "eval_size": s.eval_size,
                "max_length": s.max_length,
                "shuffle_seed": s.seed,
            },
            "train": {
                "learning_rate": s.learning_rate,
                "num_train_epochs": s.epochs,
                "per_device_train_batch_size": s.batch_size,
                "per_device_eval_batch_size": s.eval_batch_size,
                "logging_steps": s.logging_steps,
                "max_grad_norm": s.max_grad_norm,
                "seed": s.seed,
                "device": "cpu",
                "torch_threads": s.threads,
                "group_by_length": False,  # the baseline shuffles; bench/padding.py measures grouping
                "precision": "fp32",  # the baseline's math (auto is bf16 on a CPU with native bf16)
                "save_strategy": "no",
            },
            "output": {"runs_dir": str(runs_dir)},
        }
    )


class PhaseClock:
    """A subscriber that timestamps training phases as the events arrive (outside the engine's own clocks)."""

    def __init__(self, side: str) -> None:
        self.measured = Measured(side)
        self._phase_start = 0.0
        self._eval_start = 0.0
        self._samples = 0
        self._last_step: tuple[int, float, float] | None = None

    def __call__(self, event: Any) -> None:
        now = time.perf_counter()
        kind = type(event).__name__
        if kind == "RunStarted":
            self._phase_start = now
            self._samples = event.num_train_samples
        elif kind == "StepLogged":
            cpu = time.thread_time()  # called on the run's thread: its CPU time
            if self._last_step is not None:
                step, at, at_cpu = self._last_step
                self.measured.step_seconds.append((now - at) / (event.step - step))
                self.measured.step_cpu_seconds.append((cpu - at_cpu) / (event.step - step))
            self._last_step = (event.step, now, cpu)
        elif kind == "EpochEnded":
            self._last_step = None
            self.measured.epoch_seconds.append(now - self._phase_start)
            self.measured.epoch_samples.append(self._samples)
            self.measured.final_train_loss = event.train_loss
        elif kind == "Status" and event.stage == "evaluating":
            self._eval_start = now
        elif kind == "Evaluated":
            self.measured.eval_seconds += now - self._eval_start
            self.measured.accuracy = event.accuracy if event.accuracy is not None else float("nan")
            self._phase_start = now


def engine_run(s: Setting, runs_dir: Path) -> Measured:
    """Runner in its worker thread; this (main) thread plays the UI and drains the TUI's messages."""
    clock = PhaseClock("B engine")
    clock.measured.wall_seconds = run_as_the_workbench(engine_config(s, runs_dir), clock)
    return clock.measured


# ---------------------------------------------------------------------------------------------------------


def write_data(folder: Path, source: str) -> Path:
    """Copy a bundled sample into ``folder`` so both sides read the same local files."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        rows = (SAMPLES / source / f"{split}.jsonl").read_text(encoding="utf-8")
        (folder / f"{split}.jsonl").write_text(rows, encoding="utf-8")
    json.loads(rows.splitlines()[0])  # a readable sample, or fail here rather than inside a run
    return folder


def main() -> None:
    args = parse_args(__doc__ or "", [THREADS_OPTION])
    quiet_transformers()
    print(machine_line())
    with scratch_dir("loop-overhead") as tmp:
        size = "tiny" if args.smoke else "small"
        setting = Setting(
            model_dir=make_bert(tmp / "model", size, max_positions=128),
            data_dir=write_data(tmp / "data", "reviews-sample"),
            max_length=32,
            batch_size=16,
            eval_batch_size=32,
            epochs=1,
            train_size=32 if args.smoke else 512,
            eval_size=32 if args.smoke else 64,
            threads=args.threads or None,
        )
        print(
            f"model: random BERT ({size}), reviews-sample, {setting.train_size} train / {setting.eval_size} eval, "
            f"max_length {setting.max_length}, batch {setting.batch_size}, {setting.epochs} epochs, "
            f"logging every {setting.logging_steps} steps, torch threads {setting.threads or 'default'}"
        )
        warm = Setting(**{**setting.__dict__, "epochs": 1, "train_size": min(64, setting.train_size)})
        run_in_thread(lambda: plain_loop(warm))  # untimed: first-use costs (allocator, kernels, lazy imports) land here

        runs: list[Measured] = []
        order: list[Callable[[], Measured]] = [
            lambda: run_in_thread(lambda: plain_loop(setting)),  # a worker thread, as the engine's
            lambda: engine_run(setting, tmp / "runs"),
        ]
        for _ in range(1 if args.smoke else PAIRS):
            for side in order:
                runs.append(side())
        unfused = Setting(**{**setting.__dict__, "fused_adamw": False})
        per_tensor = run_in_thread(lambda: plain_loop(unfused))
        per_tensor.side = "A, torch's default AdamW"
    print_table(
        [
            "run",
            "step ms",
            "step CPU ms",
            "train samples/s",
            "per-epoch samples/s",
            "eval s",
            "wall s",
            "last loss",
            "accuracy",
        ],
        [
            [
                m.side,
                m.median_step_ms,
                m.median_step_cpu_ms,
                m.samples_per_second,
                " ".join(f"{x:.1f}" for x in m.epoch_throughputs),
                m.eval_seconds,
                m.wall_seconds,
                m.final_train_loss,
                m.accuracy,
            ]
            for m in [*runs, per_tensor]
        ],
    )
    a_step = median([x for m in runs if m.side.startswith("A") for x in m.step_seconds])
    b_step = median([x for m in runs if m.side.startswith("B") for x in m.step_seconds])
    a_epoch = median([x for m in runs if m.side.startswith("A") for x in m.epoch_throughputs])
    b_epoch = median([x for m in runs if m.side.startswith("B") for x in m.epoch_throughputs])
    print(
        f"median epoch throughput: A {a_epoch:.2f} samples/s, B {b_epoch:.2f} samples/s (B/A {b_epoch / a_epoch:.3f})"
    )
    a_cpu = median([x for m in runs if m.side.startswith("A") for x in m.step_cpu_seconds])
    b_cpu = median([x for m in runs if m.side.startswith("B") for x in m.step_cpu_seconds])
    print(f"median step: A {a_step * 1000:.1f} ms, B {b_step * 1000:.1f} ms (wall)")
    print(
        f"median step CPU of the training thread: A {a_cpu * 1000:.1f} ms, B {b_cpu * 1000:.1f} ms "
        f"(B/A {b_cpu / a_cpu:.3f})"
    )
    a_best = min(m.median_step_ms for m in runs if m.side.startswith("A"))
    b_best = min(m.median_step_ms for m in runs if m.side.startswith("B"))
    print(
        f"best run's median step: A {a_best:.1f} ms, B {b_best:.1f} ms "
        f"(median over all runs: B/A {a_step / b_step:.3f})"
    )
    # Samples per second per step is batch / step time; the batch is the same, so the ratio is A/B in time.
    pairs = [a.median_step_ms / b.median_step_ms for a, b in zip(runs[::2], runs[1::2], strict=True)]
    print(f"each pair, A step / B step: {' '.join(f'{x:.3f}' for x in pairs)}")
    print(
        f"the plain loop with torch's default AdamW instead of the fused one both sides use: "
        f"{per_tensor.median_step_ms:.1f} ms per step (the engine: {b_step * 1000:.1f})"
    )
    ratio_line("loop_engine_vs_plain", median(pairs), GOAL)


if __name__ == "__main__":
    main()
