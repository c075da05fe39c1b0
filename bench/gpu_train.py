"""GPU training throughput and MFU: bert-base-sized masked LM, seq 128, bf16, on the loop engine.

Everything is generated here, offline: a ``BertConfig()``-default model with random weights (MiniLM's
WordPiece tokenizer has the same 30522-token vocabulary) and a JSONL file of random-word texts long enough
that every sample fills 128 tokens. Measured, one after another in one process:

1. the card's bf16 peak: a large bf16 matmul, timed with CUDA events;
2. the engine: ``Runner`` on ``engine: loop`` (bf16 through accelerate) with the TUI's subscribers;
3. a raw PyTorch loop (same collator, AdamW, schedule, clipping, bf16 autocast), eager;
4. the same raw loop under ``torch.compile`` (the loop engine has no compile option);
5. a raw ``transformers.Trainer`` (bf16=True, its defaults otherwise);
6. on a machine with more than one GPU, ``bench/scaling.py --gpus all``: all of them against one.

Throughput counts steps after the first ``--warmup`` ones, between two synchronised points.
MFU = 6 x parameters x tokens/s / measured bf16 peak.

    python bench/gpu_train.py            # on a CUDA machine; ~3-5 minutes on an H100
    python bench/gpu_train.py --smoke    # CPU, tiny model, seconds: proves the script works
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib import (
    machine_line,
    make_bert,
    parse_args,
    print_table,
    quiet_transformers,
    ratio_line,
    scratch_dir,
)
from tui_subscribers import run_as_the_workbench

MFU_GOAL = 0.45
ENGINE_GOAL = 0.98


@dataclass
class Plan:
    device: str  # "cuda" | "cpu"
    precision: str  # "bf16" | "fp32"
    seq_len: int
    batch_size: int
    steps: int
    warmup: int
    logging_steps: int
    compile: bool


@dataclass
class Result:
    name: str
    samples_per_second: float
    note: str = ""


# ---------------------------------------------------------------------------------------------------------
# setup


def measure_peak(plan: Plan) -> float:
    """Dense matmul FLOP/s of this device in the training precision (bf16 on a GPU)."""
    import torch

    if plan.device == "cpu":
        a = torch.randn(512, 512)
        start = time.perf_counter()
        for _ in range(10):
            a @ a
        return 10 * 2 * 512**3 / (time.perf_counter() - start)
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(5):
        a @ b
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    iters = 50
    begin.record()
    for _ in range(iters):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return iters * 2 * n**3 / (begin.elapsed_time(end) / 1000)


def write_texts(path: Path, tokenizer: Any, rows: int, words: int, seed: int = 0) -> Path:
    """Random whole words from the vocabulary: ``words`` per row, so every row fills the sequence."""
    vocab = [w for w in tokenizer.get_vocab() if w.isalpha() and w.isascii() and len(w) > 2]
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for _ in range(rows):
            fh.write(json.dumps({"text": " ".join(rng.choices(vocab, k=words))}) + "\n")
    return path


def tokenized(data_file: Path, tokenizer: Any, seq_len: int) -> Any:
    import datasets

    raw = datasets.load_dataset("json", data_files=str(data_file))["train"]
    ds = raw.map(
        lambda b: tokenizer(b["text"], truncation=True, max_length=seq_len, return_special_tokens_mask=True),
        batched=True,
        remove_columns=["text"],
    )
    ds.set_format("torch")
    return ds


# ---------------------------------------------------------------------------------------------------------
# the engine


def engine_run(plan: Plan, model_dir: Path, data_file: Path, runs_dir: Path) -> Result:
    """Runner on the loop engine; throughput between the StepLogged events after warm-up (each one syncs)."""
    from engine.config import from_dict

    cfg = from_dict(
        {
            "task": "masked-lm",
            "engine": "loop",
            "model": {"name_or_path": str(model_dir)},
            "data": {"source": str(data_file), "label_field": None, "eval_fraction": None, "max_length": plan.seq_len},
            "train": {
                "learning_rate": 1e-4,
                "num_train_epochs": 1,
                "per_device_train_batch_size": plan.batch_size,
                "group_by_length": False,  # the raw loop and Trainer shuffle
                "logging_steps": plan.logging_steps,
                "precision": plan.precision,
                "device": plan.device,
                "save_strategy": "no",
            },
            "output": {"runs_dir": str(runs_dir)},
        }
    )
    marks: list[tuple[int, float]] = []

    def on_event(event: Any) -> None:
        if type(event).__name__ == "StepLogged":
            marks.append((event.step, time.perf_counter()))

    run_as_the_workbench(cfg, on_event)
    counted = [m for m in marks if m[0] >= plan.warmup]
    (first_step, first_time), (last_step, last_time) = counted[0], counted[-1]
    return Result("engine (Runner, loop)", (last_step - first_step) * plan.batch_size / (last_time - first_time))


# ---------------------------------------------------------------------------------------------------------
# raw baselines


def batches_forever(ds: Any, collator: Any, batch_size: int, seed: int) -> Iterator[Any]:
    import torch
    from torch.utils.data import DataLoader

    generator = torch.Generator().manual_seed(seed)
    while True:
        yield from DataLoader(ds, batch_size=batch_size, shuffle=True, collate_fn=collator, generator=generator)


def raw_loop(plan: Plan, model_dir: Path, ds: Any, tokenizer: Any, *, compiled: bool) -> Result:
    """The loop a user writes: DataLoader, AdamW, linear schedule, bf16 autocast, clipping."""
    import torch
    from transformers import AutoModelForMaskedLM, DataCollatorForLanguageModeling, get_scheduler, set_seed

    set_seed(42)
    device = torch.device(plan.device)
    model = AutoModelForMaskedLM.from_pretrained(model_dir).to(device)
    model.train()
    # the engine's default train.weight_decay is 0.0 (torch's AdamW defaults to 0.01); fused as in the engine
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0, fused=True)
    scheduler = get_scheduler("linear", optimizer=optimizer, num_warmup_steps=0, num_training_steps=plan.steps)
    step_fn: Callable[..., Any] = torch.compile(model) if compiled else model
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=0.15)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=plan.precision == "bf16")
    start = 0.0
    compile_seconds = time.perf_counter()
    batches = batches_forever(ds, collator, plan.batch_size, 42)
    for step in range(1, plan.steps + 1):
        batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
        with autocast:
            loss = step_fn(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if step == plan.warmup:
            _sync(device)
            start = time.perf_counter()
            compile_seconds = start - compile_seconds
    _sync(device)
    speed = (plan.steps - plan.warmup) * plan.batch_size / (time.perf_counter() - start)
    name = "raw loop, torch.compile" if compiled else "raw loop, eager"
    return Result(name, speed, f"first {plan.warmup} steps took {compile_seconds:.1f} s" if compiled else "")


def raw_trainer(plan: Plan, model_dir: Path, ds: Any, tokenizer: Any, out_dir: Path) -> Result:
    """transformers.Trainer with bf16 and its own defaults (fused AdamW among them)."""
    import torch
    from transformers import (
        AutoModelForMaskedLM,
        DataCollatorForLanguageModeling,
        PrinterCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        set_seed,
    )

    device = torch.device(plan.device)
    marks: dict[int, float] = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step in (plan.warmup, plan.steps):
                _sync(device)
                marks[state.global_step] = time.perf_counter()

    set_seed(42)
    args = TrainingArguments(
        output_dir=str(out_dir),
        per_device_train_batch_size=plan.batch_size,
        learning_rate=1e-4,
        max_steps=plan.steps,
        bf16=plan.precision == "bf16",
        use_cpu=plan.device == "cpu",
        logging_steps=plan.logging_steps,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
    )
    trainer = Trainer(
        model=AutoModelForMaskedLM.from_pretrained(model_dir),
        args=args,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=0.15),
        train_dataset=ds,
        callbacks=[Clock()],
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    seconds = marks[plan.steps] - marks[plan.warmup]
    return Result("raw transformers.Trainer", (plan.steps - plan.warmup) * plan.batch_size / seconds, str(args.optim))


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------------------


def main() -> None:
    args = parse_args(
        __doc__ or "",
        [
            ("--batch-size", {"type": int, "default": 128, "help": "samples per step (default 128)"}),
            ("--steps", {"type": int, "default": 160, "help": "steps per variant (default 160)"}),
            ("--no-compile", {"action": "store_true", "help": "skip the torch.compile baseline"}),
        ],
    )
    quiet_transformers()
    import torch

    if args.smoke:
        plan = Plan("cpu", "fp32", 32, 4, 6, 2, 2, compile=False)
    elif torch.cuda.is_available():
        plan = Plan("cuda", "bf16", 128, args.batch_size, args.steps, 20, 10, compile=not args.no_compile)
    else:
        raise SystemExit("gpu_train.py needs a CUDA GPU; run it with --smoke to check it on a CPU")
    print(machine_line())
    if plan.device == "cuda":
        print(f"gpu: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

    from engine.models import count_parameters, load_tokenizer

    results: list[Result] = []
    with scratch_dir("gpu-train") as tmp:
        peak = measure_peak(plan)
        print(f"measured peak ({plan.precision} matmul): {peak / 1e12:.1f} TFLOP/s")
        model_dir = make_bert(tmp / "model", "tiny" if args.smoke else "base", max_positions=512)
        tokenizer = load_tokenizer(str(model_dir))
        from transformers import AutoModelForMaskedLM

        params = count_parameters(AutoModelForMaskedLM.from_pretrained(model_dir))
        rows = plan.batch_size * plan.steps
        data_file = write_texts(tmp / "texts.jsonl", tokenizer, rows, words=plan.seq_len + 32)
        print(
            f"model: BertForMaskedLM {params / 1e6:.1f}M parameters (random), seq {plan.seq_len}, batch "
            f"{plan.batch_size}, {plan.steps} steps per variant ({plan.warmup} warm-up), {plan.precision}"
        )
        results.append(engine_run(plan, model_dir, data_file, tmp / "runs"))
        ds = tokenized(data_file, tokenizer, plan.seq_len)
        results.append(raw_loop(plan, model_dir, ds, tokenizer, compiled=False))
        if plan.compile:
            results.append(raw_loop(plan, model_dir, ds, tokenizer, compiled=True))
        results.append(raw_trainer(plan, model_dir, ds, tokenizer, tmp / "trainer"))

    def mfu(r: Result) -> float:
        return 6 * params * r.samples_per_second * plan.seq_len / peak

    print_table(
        ["variant", "samples/s", "tokens/s", "MFU", "note"],
        [[r.name, r.samples_per_second, r.samples_per_second * plan.seq_len, mfu(r), r.note] for r in results],
    )
    engine, eager = results[0], results[1]
    trainer = results[-1]
    ratio_line("gpu_engine_vs_raw_loop", engine.samples_per_second / eager.samples_per_second, ENGINE_GOAL)
    ratio_line("gpu_engine_vs_raw_trainer", engine.samples_per_second / trainer.samples_per_second, ENGINE_GOAL)
    ratio_line("gpu_engine_mfu", mfu(engine), MFU_GOAL)
    if plan.device == "cuda" and torch.cuda.device_count() > 1:
        # Then every GPU against one, through the launcher as a user runs it: bench/scaling.py's GPU mode.
        print(f"\n=== scaling.py --gpus all ({torch.cuda.device_count()} GPUs)", flush=True)
        subprocess.run([sys.executable, str(Path(__file__).with_name("scaling.py")), "--gpus", "all"], check=False)


if __name__ == "__main__":
    main()
