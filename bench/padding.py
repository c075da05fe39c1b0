"""Padding: dynamic per-batch padding (the engine's tokenize + collator, today's default) against padding every
sample to max_length, and against length-grouped batches (``train.group_by_length``: the same dynamic padding,
batches drawn by the engine's length-grouped sampler). On the CPU the engine pads each batch to its longest sample;
the side ``grouped-8`` pads the grouped batches up to a multiple of 8 tokens, as it does on a GPU.

Speed: the same initial weights, texts and training step on every side; only the padding and the order of the
samples differ. The sides take turns step by step (one model each), so all see the same load from anything
else on the machine; each step's clock covers collating its batch. One epoch over 600 rows in batches of 16
(the sampler groups within mega-batches of up to 50 batches, so a dataset of a few batches would hide it):

- reviews-sample (bundled), max_length 128: the default config; review texts are far shorter;
- reviews-sample, max_length 32: most texts are cut, so there is little padding whichever way;
- a generated long-tailed dataset, max_length 128: word counts drawn from a log-normal distribution (most texts
  short, a few long ones in most batches), words from a fixed list; generated here, nothing downloaded.

Accuracy: the engine (``Runner``, loop engine, MiniLM) on reviews-sample (600 train, 150 test), 2 epochs, with
group_by_length off and on from the same seed, and once more off with another seed, which shows how far two
shuffled runs land apart anyway. The last RATIO line is the drop in final eval accuracy with grouping.

    python bench/padding.py            # about 4 minutes on 2 CPU cores (the accuracy runs take most of it)
    python bench/padding.py --smoke
"""

from __future__ import annotations

import functools
import math
import random
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

GOAL = 1.0  # the claim in engine/data.py: dynamic padding is faster than padding to max_length
GROUPED_GOAL = 1.0  # grouping is worth turning on only if it is faster
MULTIPLE_GOAL = 1.0  # on the CPU, no rounding up to a multiple of 8 is worth it only if it is faster
ACCURACY_DROP_GOAL = 0.02  # ... and costs at most this much final eval accuracy
SIDES = ("dynamic", "grouped", "grouped-8", "max_length")
#: A plain vocabulary for the generated texts; every word is one WordPiece token of the MiniLM vocabulary.
VOCABULARY = (
    "the a and of to in is was it for on with as at by this that from but not or be are have had very good bad "
    "food room staff place service time price day night great small big nice slow fast clean cold hot friendly "
    "rude quiet busy again never always would could will back here there they we our their"
)


@dataclass
class Case:
    data: str  # "reviews" | "long-tail"
    padding: str  # one of SIDES
    max_length: int
    step_seconds: list[float]
    samples: int
    tokens: int
    real_tokens: int

    @property
    def samples_per_second(self) -> float:
        return self.samples / sum(self.step_seconds)

    @property
    def padding_share(self) -> float:
        return 1 - self.real_tokens / max(self.tokens, 1)


def reviews(rows: int) -> Any:
    import datasets

    raw = datasets.load_dataset("json", data_files=str(SAMPLES / "reviews-sample" / "train.jsonl"))["train"]
    return raw.shuffle(seed=0).select(range(min(rows, len(raw))))


def long_tail(rows: int) -> Any:
    """Texts whose word counts follow a log-normal law (median 20 words, one in ten over 65), random 5-star labels."""
    import datasets

    rng = random.Random(0)
    counts = [max(1, min(400, round(math.exp(rng.gauss(math.log(20), 0.9))))) for _ in range(rows)]
    words = VOCABULARY.split()
    texts = [" ".join(rng.choice(words) for _ in range(n)) for n in counts]
    return datasets.Dataset.from_dict({"text": texts, "label": [rng.randint(1, 5) for _ in range(rows)]})


def loaders(model_dir: Path, raw: Any, max_length: int, batch_size: int, sides: tuple[str, ...]) -> dict[str, Any]:
    """One DataLoader per side over the same texts: the engine's dynamic padding in a shuffled order and in its
    length-grouped order (also up to a multiple of 8 tokens), and pad-to-max_length in the shuffled order."""
    import torch
    from torch.utils.data import DataLoader
    from transformers import default_data_collator

    from engine.data import build_collator, length_grouped_sampler, tokenize
    from engine.models import load_tokenizer

    tokenizer = load_tokenizer(str(model_dir))
    raw = raw.rename_column("label", "labels")
    raw = raw.map(lambda b: {"labels": [v - 1 for v in b["labels"]]}, batched=True)  # stars 1-5 -> ids 0-4
    dynamic = tokenize(raw, tokenizer, "text", max_length, task="classification")

    def pad_all(batch: dict[str, list[Any]]) -> Any:
        return tokenizer(batch["text"], truncation=True, max_length=max_length, padding="max_length")

    static = raw.map(pad_all, batched=True, remove_columns=["text"])
    static.set_format("torch")
    collator = build_collator("classification", tokenizer)

    def grouped(pad: Any) -> Any:
        sampler = length_grouped_sampler(dynamic, batch_size, torch.Generator().manual_seed(0))
        return DataLoader(dynamic, batch_size, sampler=sampler, collate_fn=pad)

    made = {
        "dynamic": DataLoader(
            dynamic, batch_size, shuffle=True, collate_fn=collator, generator=torch.Generator().manual_seed(0)
        ),
        "grouped": grouped(collator),
        "grouped-8": grouped(build_collator("classification", tokenizer, pad_to_multiple_of=8)),
        "max_length": DataLoader(
            static,
            batch_size,
            shuffle=True,
            collate_fn=default_data_collator,
            generator=torch.Generator().manual_seed(0),
        ),
    }
    return {side: made[side] for side in sides}


def compare(model_dir: Path, by_padding: dict[str, Any], data: str, max_length: int) -> list[Case]:
    """Train one model per side from the same weights for one epoch, one step each in turn (the order rotates),
    so all see the same load from anything else running; each step's clock covers collating its batch."""
    import torch
    from transformers import AutoModelForSequenceClassification

    trainers = {}
    for name in by_padding:
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=5)
        model.train()
        trainers[name] = (model, torch.optim.AdamW(model.parameters(), lr=1e-4))
    cases = {name: Case(data, name, max_length, [], 0, 0, 0) for name in by_padding}
    iterators = {name: iter(loader) for name, loader in by_padding.items()}
    names = list(by_padding)
    for n in range(len(next(iter(by_padding.values())))):
        for name in names[n % len(names) :] + names[: n % len(names)]:
            model, optimizer = trainers[name]
            start = time.perf_counter()
            batch = next(iterators[name])
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            case = cases[name]
            case.step_seconds.append(time.perf_counter() - start)
            case.samples += batch["input_ids"].shape[0]
            case.tokens += batch["input_ids"].numel()
            case.real_tokens += int(batch["attention_mask"].sum())
    return list(cases.values())


@dataclass
class Trained:
    name: str
    seed: int
    group_by_length: bool
    accuracy: float
    train_seconds: float


def train_reviews(model: str, runs: Path, *, seed: int, grouped: bool, smoke: bool) -> Trained:
    """The engine on reviews-sample: the quickstart-classify config, shorter; final eval accuracy."""
    from engine.config import from_dict
    from engine.events import EpochEnded, Evaluated
    from engine.runner import Runner

    cfg = from_dict(
        {
            "model": {"name_or_path": model},
            "data": {
                "source": "reviews-sample",
                "eval_split": "test",
                "max_length": 128,
                "train_size": 64 if smoke else None,
                "eval_size": 32 if smoke else None,
            },
            "train": {
                "learning_rate": 1e-4,
                "num_train_epochs": 1 if smoke else 2,
                "per_device_train_batch_size": 16,
                "warmup_ratio": 0.1,
                "seed": seed,
                "group_by_length": grouped,
                "logging_steps": 10,
                "device": "cpu",
                "save_strategy": "no",
            },
            "output": {"runs_dir": str(runs), "run_name": f"seed{seed}-grouped{int(grouped)}"},
        }
    )
    events: list[Any] = []
    result = Runner(cfg, subscribers=[events.append]).run()
    assert result.status == "finished", result.error
    accuracy = [e.accuracy for e in events if isinstance(e, Evaluated)][-1]
    seconds = sum(e.duration_seconds for e in events if isinstance(e, EpochEnded))
    name = ("grouped" if grouped else "shuffled") + f", seed {seed}"
    return Trained(name, seed, grouped, float(accuracy or 0.0), seconds)


def main() -> None:
    args = parse_args(__doc__ or "")
    quiet_transformers()
    print(machine_line())
    rows = 64 if args.smoke else 600
    batch_size = 16
    results: list[Case] = []
    with scratch_dir("padding") as tmp:
        model_dir = make_bert(tmp / "model", "tiny" if args.smoke else "small", max_positions=128)
        print(f"speed: random BERT, {rows} rows, batch {batch_size}, one epoch per case")
        warm = loaders(model_dir, reviews(32), 32, batch_size, ("dynamic", "grouped", "max_length"))
        run_in_thread(lambda: compare(model_dir, warm, "warm-up", 32))
        for data, raw, max_length, sides in (
            ("reviews", reviews(rows), 128, SIDES),
            ("reviews", reviews(rows), 32, ("dynamic", "grouped", "max_length")),
            ("long-tail", long_tail(rows), 128, SIDES[:3]),
        ):
            by_padding = loaders(model_dir, raw, max_length, batch_size, sides)
            results += run_in_thread(functools.partial(compare, model_dir, by_padding, data, max_length))
        print_table(
            ["data", "max_length", "padding", "samples/s", "median step ms", "tokens/batch", "padding share"],
            [
                [
                    c.data,
                    c.max_length,
                    c.padding,
                    c.samples_per_second,
                    median(c.step_seconds) * 1000,
                    c.tokens / len(c.step_seconds),
                    c.padding_share,
                ]
                for c in results
            ],
        )

        def speed(data: str, max_length: int, side: str) -> float:
            found = (c for c in results if (c.data, c.max_length, c.padding) == (data, max_length, side))
            return next(found).samples_per_second

        for data, max_length in (("reviews", 128), ("reviews", 32), ("long-tail", 128)):
            dyn = speed(data, max_length, "dynamic")
            line = (
                f"{data}, max_length {max_length}: grouped / dynamic = {speed(data, max_length, 'grouped') / dyn:.2f}x"
            )
            if data == "reviews":
                line += f", dynamic / pad-to-max_length = {dyn / speed(data, max_length, 'max_length'):.2f}x"
            if max_length == 128:
                multiple = speed(data, max_length, "grouped") / speed(data, max_length, "grouped-8")
                line += f", grouped / grouped-8 = {multiple:.2f}x"
            print(line + " samples/s")

        model = str(model_dir) if args.smoke else "minilm"
        print(f"accuracy: {'a tiny random BERT' if args.smoke else 'minilm'} on reviews-sample through Runner")
        trained = [
            run_in_thread(functools.partial(train_reviews, model, tmp / "runs", seed=s, grouped=g, smoke=args.smoke))
            for s, g in ((42, False), (42, True), (43, False))
        ]
    print_table(
        ["run", "final eval accuracy", "train seconds"], [[t.name, t.accuracy, t.train_seconds] for t in trained]
    )
    shuffled, grouped, other_seed = trained
    print(
        f"accuracy: grouped - shuffled = {grouped.accuracy - shuffled.accuracy:+.4f}; "
        f"shuffled seed 43 - seed 42 = {other_seed.accuracy - shuffled.accuracy:+.4f}"
    )
    ratio_line(
        "padding_dynamic_vs_max_length", speed("reviews", 128, "dynamic") / speed("reviews", 128, "max_length"), GOAL
    )
    ratio_line(
        "padding_grouped_vs_dynamic_reviews",
        speed("reviews", 128, "grouped") / speed("reviews", 128, "dynamic"),
        GROUPED_GOAL,
    )
    ratio_line(
        "padding_grouped_vs_dynamic_long_tail",
        speed("long-tail", 128, "grouped") / speed("long-tail", 128, "dynamic"),
        GROUPED_GOAL,
    )
    for data in ("reviews", "long-tail"):
        ratio_line(
            f"padding_grouped_vs_multiple_of_8_{data.replace('-', '_')}",
            speed(data, 128, "grouped") / speed(data, 128, "grouped-8"),
            MULTIPLE_GOAL,
        )
    ratio_line(
        "group_by_length_accuracy_drop",
        shuffled.accuracy - grouped.accuracy,
        ACCURACY_DROP_GOAL,
        higher_is_better=False,
    )


if __name__ == "__main__":
    main()
