"""The SFT engine: Runner on ``engine: sft`` (masked LM) against a raw transformers.Trainer.

The raw side is what a user writes by hand: tokenize with ``datasets.map``, the MLM collator
(``DataCollatorForLanguageModeling(mlm=True)``), ``Trainer`` with the same arguments (learning rate,
epochs, batch sizes, warmup, schedule, clipping, seed, logging steps, eval per epoch, no checkpoints,
``remove_unused_columns=False``, no activation checkpointing). The engine side runs with the subscribers
the TUI attaches; it runs the MLM head on the masked positions only (the model's own forward runs it at every
position), and a third side runs it everywhere, to show the engine's overhead alone. Runs alternate raw,
engine, engine with the head everywhere, three times in one process after an untimed warm-up, with
one torch thread on both sides (``--threads``; see loop_overhead.THREADS_OPTION).
Both sides log every step and are timed from outside at the same Trainer hook (``on_log``: the raw side's
own callback, the engine's StepLogged event), so each step's wall time is seen. Each run is summed up by
its median step time; the ratio compares the best run of each side (see loop_overhead.py for why). Medians
over all runs, CPU time per step and whole-epoch throughput are printed beside it.

    python bench/sft_overhead.py            # ~1-2 minutes on 2 CPU cores
    python bench/sft_overhead.py --smoke
"""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib import (
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
from loop_overhead import THREADS_OPTION, Measured, PhaseClock, write_data
from tui_subscribers import run_as_the_workbench

GOAL = 0.98


@dataclass
class Setting:
    model_dir: Path
    data_dir: Path
    max_length: int
    batch_size: int
    eval_batch_size: int
    epochs: int
    train_size: int
    eval_size: int
    learning_rate: float = 2e-4
    warmup_ratio: float = 0.06
    mlm_probability: float = 0.15
    logging_steps: int = 1
    max_grad_norm: float = 1.0
    seed: int = 42
    threads: int | None = None


def raw_trainer(s: Setting, out_dir: Path) -> Measured:
    """transformers.Trainer on a masked LM, written the way its docs show."""
    import datasets
    from transformers import (
        AutoModelForMaskedLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        set_seed,
    )

    measured = Measured("raw Trainer")
    if s.threads:
        import torch

        torch.set_num_threads(s.threads)
    wall_start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(s.model_dir)
    raw = datasets.load_dataset(
        "json",
        data_files={"train": str(s.data_dir / "train.jsonl"), "test": str(s.data_dir / "test.jsonl")},
    )
    train = raw["train"].shuffle(seed=s.seed).select(range(s.train_size))
    test = raw["test"].shuffle(seed=s.seed).select(range(s.eval_size))

    def encode(batch: dict[str, list[Any]]) -> Any:
        return tokenizer(batch["text"], truncation=True, max_length=s.max_length, return_special_tokens_mask=True)

    train = train.map(encode, batched=True, remove_columns=train.column_names)
    test = test.map(encode, batched=True, remove_columns=test.column_names)

    class Clock(TrainerCallback):
        """The same hook points the engine's events come from."""

        phase_start = 0.0
        last_log: tuple[int, float, float] | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.phase_start = time.perf_counter()

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if "loss" not in (logs or {}):
                return  # eval and end-of-training summaries
            now, cpu = time.perf_counter(), time.thread_time()
            if self.last_log is not None:
                step, at, at_cpu = self.last_log
                measured.step_seconds.append((now - at) / (state.global_step - step))
                measured.step_cpu_seconds.append((cpu - at_cpu) / (state.global_step - step))
            self.last_log = (state.global_step, now, cpu)

        def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            measured.epoch_seconds.append(time.perf_counter() - self.phase_start)
            measured.epoch_samples.append(len(train))
            self.last_log = None

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any) -> None:
            measured.eval_seconds += float((metrics or {}).get("eval_runtime", 0.0))
            measured.final_train_loss = float((metrics or {}).get("eval_loss", float("nan")))
            self.phase_start = time.perf_counter()

    set_seed(s.seed)
    model = AutoModelForMaskedLM.from_pretrained(s.model_dir)
    args = TrainingArguments(
        output_dir=str(out_dir),
        learning_rate=s.learning_rate,
        num_train_epochs=s.epochs,
        per_device_train_batch_size=s.batch_size,
        per_device_eval_batch_size=s.eval_batch_size,
        warmup_steps=s.warmup_ratio,
        lr_scheduler_type="linear",
        max_grad_norm=s.max_grad_norm,
        seed=s.seed,
        use_cpu=True,
        logging_strategy="steps",
        logging_steps=s.logging_steps,
        eval_strategy="epoch",
        prediction_loss_only=True,
        save_strategy="no",
        remove_unused_columns=False,
        disable_tqdm=True,
        report_to="none",
        dataloader_pin_memory=False,
    )
    trainer = Trainer(
        model=model,
        args=args,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=s.mlm_probability),
        train_dataset=train,
        eval_dataset=test,
        processing_class=tokenizer,
        callbacks=[Clock()],
    )
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainer.train()
    trainer.save_model(str(out_dir / "model"))
    measured.wall_seconds = time.perf_counter() - wall_start
    return measured


def engine_config(s: Setting, runs_dir: Path) -> Any:
    from engine.config import from_dict

    return from_dict(
        {
            "task": "masked-lm",
            "engine": "sft",
            "model": {"name_or_path": str(s.model_dir)},
            "data": {
                "source": str(s.data_dir),
                "label_field": None,
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
                "warmup_ratio": s.warmup_ratio,
                "mlm_probability": s.mlm_probability,
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


class SftClock(PhaseClock):
    """PhaseClock for the SFT engine: Trainer reports eval time itself and emits no "evaluating" status."""

    def __call__(self, event: Any) -> None:
        kind = type(event).__name__
        if kind == "Evaluated":
            self.measured.eval_seconds += event.duration_seconds
            self.measured.final_train_loss = event.eval_loss
            self._phase_start = time.perf_counter()
            return
        super().__call__(event)


def engine_run(s: Setting, runs_dir: Path, every_position: bool = False) -> Measured:
    """The engine as shipped (its MLM head runs on the masked positions only), or with ``every_position`` the
    way the model's own forward does it, to show the engine's overhead alone."""
    from unittest import mock

    clock = SftClock("engine sft, head everywhere" if every_position else "engine sft")
    with mock.patch("engine.sft.masked_lm_parts", return_value=None) if every_position else contextlib.nullcontext():
        clock.measured.wall_seconds = run_as_the_workbench(engine_config(s, runs_dir), clock)
    return clock.measured


def main() -> None:
    rounds = ("--rounds", {"type": int, "default": 3, "help": "rounds of the three sides (default 3)"})
    args = parse_args(__doc__ or "", [THREADS_OPTION, rounds])
    quiet_transformers()
    print(machine_line())
    runs: list[Measured] = []
    with scratch_dir("sft-overhead") as tmp:
        size = "tiny" if args.smoke else "small"
        setting = Setting(
            model_dir=make_bert(tmp / "model", size, max_positions=128),
            data_dir=write_data(tmp / "data", "movies-sample"),
            max_length=64,
            batch_size=16,
            eval_batch_size=32,
            epochs=1 if args.smoke else 2,
            train_size=32 if args.smoke else 128,
            eval_size=32,
            threads=args.threads or None,
        )
        print(
            f"model: random BERT masked LM ({size}), movies-sample, {setting.train_size} train / "
            f"{setting.eval_size} eval, max_length {setting.max_length}, batch {setting.batch_size}, "
            f"{setting.epochs} epochs, logging every {setting.logging_steps} steps, torch threads "
            f"{setting.threads or 'default'}"
        )
        warm = Setting(**{**setting.__dict__, "epochs": 1, "train_size": min(32, setting.train_size)})
        run_in_thread(lambda: raw_trainer(warm, tmp / "warm"))  # untimed warm-up
        for n in range(1 if args.smoke else args.rounds):
            out = tmp / f"raw-{n}"
            runs.append(run_in_thread(functools.partial(raw_trainer, setting, out)))  # a worker thread, as the engine's
            runs.append(engine_run(setting, tmp / "runs"))
            runs.append(engine_run(setting, tmp / "runs", every_position=True))
    print_table(
        ["run", "step ms", "step CPU ms", "train samples/s", "per-epoch samples/s", "eval s", "wall s", "eval loss"],
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
            ]
            for m in runs
        ],
    )
    raw = median([x for m in runs if m.side == "raw Trainer" for x in m.epoch_throughputs])
    engine = median([x for m in runs if m.side == "engine sft" for x in m.epoch_throughputs])
    raw_step = median([x for m in runs if m.side == "raw Trainer" for x in m.step_seconds])
    engine_step = median([x for m in runs if m.side == "engine sft" for x in m.step_seconds])
    print(f"median epoch throughput: raw {raw:.2f} samples/s, engine {engine:.2f} samples/s (ratio {engine / raw:.3f})")
    raw_cpu = median([x for m in runs if m.side == "raw Trainer" for x in m.step_cpu_seconds])
    engine_cpu = median([x for m in runs if m.side == "engine sft" for x in m.step_cpu_seconds])
    print(f"median step: raw Trainer {raw_step * 1000:.1f} ms, engine {engine_step * 1000:.1f} ms (wall)")
    print(
        f"median step CPU of the training thread: raw {raw_cpu * 1000:.1f} ms, engine {engine_cpu * 1000:.1f} ms "
        f"(engine/raw {engine_cpu / raw_cpu:.3f})"
    )
    everywhere = median([x for m in runs if m.side == "engine sft, head everywhere" for x in m.step_seconds])
    print(
        f"engine with the MLM head at every position, as the model's own forward runs it: median step "
        f"{everywhere * 1000:.1f} ms (raw/engine {raw_step / everywhere:.3f}: the engine's overhead alone)"
    )
    raw_best = min(m.median_step_ms for m in runs if m.side == "raw Trainer")
    engine_best = min(m.median_step_ms for m in runs if m.side == "engine sft")
    print(
        f"best run's median step: raw {raw_best:.1f} ms, engine {engine_best:.1f} ms "
        f"(median over all runs: engine/raw {raw_step / engine_step:.3f})"
    )
    ratio_line("sft_engine_vs_raw_trainer", raw_best / engine_best, GOAL)


if __name__ == "__main__":
    main()
