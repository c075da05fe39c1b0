"""Dynamic per-batch padding (the engine's tokenize + collator) against padding every sample to max_length.

Same initial weights, texts, batch order and training step; only the padding differs. Two cases:
max_length 128 (the default config; review texts are far shorter) and max_length 32 (most texts are cut,
so there is little padding either way and the collator's own cost shows). The two sides take turns step by
step (one model each), so both see the same load from anything else on the machine.

    python bench/padding.py            # ~15 seconds on 2 CPU cores
    python bench/padding.py --smoke
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
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

GOAL = 1.0  # the claim in engine/data.py: dynamic padding is faster
PADDINGS = ("dynamic", "max_length")


@dataclass
class Case:
    padding: str  # "dynamic" | "max_length"
    max_length: int
    step_seconds: list[float]
    samples: int
    tokens_per_batch: float
    real_tokens_per_batch: float

    @property
    def samples_per_second(self) -> float:
        return self.samples / sum(self.step_seconds)


def loaders(model_dir: Path, max_length: int, batch_size: int, rows: int) -> dict[str, Any]:
    """Two DataLoaders over the same texts in the same order: the engine's dynamic padding, and
    pad-to-max_length."""
    import datasets
    import torch
    from torch.utils.data import DataLoader
    from transformers import default_data_collator

    from engine.data import build_collator, tokenize
    from engine.models import load_tokenizer

    tokenizer = load_tokenizer(str(model_dir))
    raw = datasets.load_dataset("json", data_files=str(SAMPLES / "reviews-sample" / "train.jsonl"))["train"]
    raw = raw.shuffle(seed=0).select(range(rows)).rename_column("label", "labels")
    raw = raw.map(lambda b: {"labels": [v - 1 for v in b["labels"]]}, batched=True)  # stars 1-5 -> ids 0-4

    dynamic = tokenize(raw, tokenizer, "text", max_length, task="classification")

    def pad_all(batch: dict[str, list[Any]]) -> Any:
        return tokenizer(batch["text"], truncation=True, max_length=max_length, padding="max_length")

    static = raw.map(pad_all, batched=True, remove_columns=["text"])
    static.set_format("torch")
    collators = {"dynamic": build_collator("classification", tokenizer), "max_length": default_data_collator}
    return {
        name: DataLoader(
            ds,
            batch_size=batch_size,
            collate_fn=collators[name],
            generator=torch.Generator().manual_seed(0),
            shuffle=True,
        )
        for name, ds in (("dynamic", dynamic), ("max_length", static))
    }


def compare(model_dir: Path, by_padding: dict[str, Any], max_length: int, epochs: int) -> list[Case]:
    """Train one model per padding from the same weights, one step each in turn (the first alternates), so
    both see the same load from anything else running; each step's clock covers collating its batch."""
    import torch
    from transformers import AutoModelForSequenceClassification

    trainers = {}
    for name in by_padding:
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=5)
        model.train()
        trainers[name] = (model, torch.optim.AdamW(model.parameters(), lr=1e-4))
    cases = {name: Case(name, max_length, [], 0, 0.0, 0.0) for name in by_padding}
    batches = 0
    for _ in range(epochs):
        iterators = {name: iter(loader) for name, loader in by_padding.items()}
        for n in range(len(by_padding["dynamic"])):
            order = list(by_padding) if n % 2 == 0 else list(by_padding)[::-1]
            for name in order:
                model, optimizer = trainers[name]
                start = time.perf_counter()
                batch = next(iterators[name])
                model(**batch).loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                case = cases[name]
                case.step_seconds.append(time.perf_counter() - start)
                case.samples += batch["input_ids"].shape[0]
                case.tokens_per_batch += batch["input_ids"].numel()
                case.real_tokens_per_batch += int(batch["attention_mask"].sum())
            batches += 1
    for case in cases.values():
        case.tokens_per_batch /= batches
        case.real_tokens_per_batch /= batches
    return list(cases.values())


def main() -> None:
    args = parse_args(__doc__ or "")
    quiet_transformers()
    print(machine_line())
    rows = 32 if args.smoke else 160
    epochs = 1 if args.smoke else 2
    batch_size = 16
    results: list[Case] = []
    with scratch_dir("padding") as tmp:
        model_dir = make_bert(tmp / "model", "tiny" if args.smoke else "small", max_positions=128)
        print(f"model: random BERT, reviews-sample, {rows} rows, batch {batch_size}, {epochs} epochs per case")
        run_in_thread(lambda: compare(model_dir, loaders(model_dir, 32, batch_size, 32), 32, 1))  # warm-up
        for max_length in (128, 32):
            by_padding = loaders(model_dir, max_length, batch_size, rows)
            results += run_in_thread(functools.partial(compare, model_dir, by_padding, max_length, epochs))
    print_table(
        ["max_length", "padding", "samples/s", "median step ms", "tokens/batch", "real tokens/batch"],
        [
            [
                c.max_length,
                c.padding,
                c.samples_per_second,
                median(c.step_seconds) * 1000,
                c.tokens_per_batch,
                c.real_tokens_per_batch,
            ]
            for c in results
        ],
    )
    speedups = {}
    for max_length in (128, 32):
        dyn, pad = (next(c for c in results if c.max_length == max_length and c.padding == p) for p in PADDINGS)
        speedups[max_length] = dyn.samples_per_second / pad.samples_per_second
        print(f"max_length {max_length}: dynamic / pad-to-max_length = {speedups[max_length]:.2f}x samples/s")
    ratio_line("padding_dynamic_vs_max_length", speedups[128], GOAL)


if __name__ == "__main__":
    main()
