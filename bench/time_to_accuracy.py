"""Time to the same accuracy: the course's plain loop (A), ``tunebench run`` (B) and ``transformers.Trainer`` (C).

The same job on each side: MiniLM (the bundled encoder) fine-tuned for 5-star classification, the preset's batch
size (16), learning rate (1e-4), warm-up share, epochs (3) and seed, one evaluation per epoch on the test split.

- A, the loop a learner writes from the course: ``padding="max_length"``, torch's default ``AdamW``, a linear
  schedule, ``model.train()`` / ``model.eval()`` and an accuracy per epoch.
- B, ``tunebench run CONFIG`` with Tunebench's defaults, as a user runs it.
- C, ``transformers.Trainer`` with its defaults: ``DataCollatorWithPadding``, eval per epoch, then
  ``trainer.save_model()``, as a user of it would save.

Each side is a whole process, start-up, data loading and the final save included; the sides take turns (A, B, C,
A, B, C, ...) so that they see the same load from anything else on the machine. Per side: wall seconds, peak
RSS (the process and whatever it waited for), the final eval accuracy, and for A and B where the wall time
went: setup before the first training step, the steps, evaluations, checkpoints and the rest. RATIO lines:
A / B wall time (goal >= 3.0) and B / C wall time (goal <= 1.0), each a FAIL whatever its value when B's
accuracy is more than 0.02 below the other side's.

Cases (``--cases``): the bundled reviews at max_length 128 and 256, and ``longtail-*``, reviews of one label
joined into texts whose lengths follow a long tail (most of one review, a few of many), at the same lengths.

    python bench/time_to_accuracy.py                          # reviews-128, 3 pairs: ~15 minutes on 2 cores
    python bench/time_to_accuracy.py --cases all --pairs 1    # the four cases once
    python bench/time_to_accuracy.py --smoke                  # a tiny random BERT, 1 epoch, seconds
"""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib import REPO_ROOT, SAMPLES, machine_line, make_bert, median, parse_args, print_table, ratio_line

COURSE_GOAL = 3.0  # the course loop takes at least 3x Tunebench's wall time
TRAINER_GOAL = 1.0  # Tunebench takes no longer than the Trainer
ACCURACY_TOLERANCE = 0.02
CASES = ("reviews-128", "reviews-256", "longtail-128", "longtail-256")
SIDES = ("course", "tunebench", "trainer")


@dataclass
class Job:
    """What every side trains: the same model, files and recipe."""

    model: str
    data_dir: str  # holds train.jsonl and test.jsonl (text, label)
    max_length: int
    epochs: int
    batch_size: int = 16
    eval_batch_size: int = 32
    learning_rate: float = 1e-4
    warmup_ratio: float = 0.1
    seed: int = 42
    num_labels: int = 5


@dataclass
class Outcome:
    side: str
    wall_seconds: float
    peak_rss_mb: float
    accuracy: float
    #: Tunebench only: seconds from the spawn to the run's first event, and from its last event to the exit.
    before_first_event: float | None = None
    after_last_event: float | None = None
    #: Course and Tunebench: where the wall time went (see Phases).
    phases: Phases | None = None


@dataclass
class Phases:
    """A side's wall time split: until its first training step (interpreter, imports, data, model), training
    steps, evaluations, checkpoints, and the rest (the final save, the exit)."""

    setup: float
    train: float
    evaluate: float
    checkpoints: float
    rest: float

    def line(self) -> str:
        return (
            f"setup {self.setup:.1f} s, train {self.train:.1f} s, eval {self.evaluate:.1f} s, "
            f"checkpoints {self.checkpoints:.1f} s, rest {self.rest:.1f} s"
        )


def tunebench_phases(events: list[dict[str, Any]], spawned: float, exited: float) -> Phases:
    """The split of a ``tunebench run`` from its events' times: setup ends at RunStarted, each epoch's training
    is its EpochEnded duration, an evaluation runs from its Status to its Evaluated, a checkpoint from the event
    before it to its CheckpointSaved."""
    started = next(e["time"] for e in events if e["type"] == "RunStarted")
    train = sum(e["duration_seconds"] for e in events if e["type"] == "EpochEnded")
    evaluate = checkpoints = 0.0
    for before, event in itertools.pairwise(events):
        if event["type"] == "Evaluated":
            evaluate += event["time"] - before["time"]
        elif event["type"] == "CheckpointSaved":
            checkpoints += event["time"] - before["time"]
    setup = started - spawned
    return Phases(setup, train, evaluate, checkpoints, exited - spawned - setup - train - evaluate - checkpoints)


# ---------------------------------------------------------------------------------------------------------
# side A: the course's loop, as a learner writes it


def load_raw(job: Job) -> Any:
    """The train and test files, with the star ratings (1-5) as class ids 0-4, as the model's head needs."""
    import datasets

    raw = datasets.load_dataset(
        "json", data_files={s: str(Path(job.data_dir) / f"{s}.jsonl") for s in ("train", "test")}
    )
    ids = {label: i for i, label in enumerate(sorted(set(raw["train"]["label"])))}
    return raw.map(lambda row: {"label": ids[row["label"]]})


def course(job: Job, out: Path) -> float:
    import torch
    from torch.optim import AdamW
    from torch.utils.data import DataLoader
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_scheduler

    torch.manual_seed(job.seed)
    tokenizer = AutoTokenizer.from_pretrained(job.model)
    raw = load_raw(job)

    def tokenize_function(examples: dict[str, Any]) -> Any:
        return tokenizer(examples["text"], padding="max_length", truncation=True, max_length=job.max_length)

    tokenized = raw.map(tokenize_function, batched=True).remove_columns(["text"]).rename_column("label", "labels")
    tokenized.set_format("torch")
    train_dataloader = DataLoader(tokenized["train"], shuffle=True, batch_size=job.batch_size)
    eval_dataloader = DataLoader(tokenized["test"], batch_size=job.eval_batch_size)

    model = AutoModelForSequenceClassification.from_pretrained(job.model, num_labels=job.num_labels)
    optimizer = AdamW(model.parameters(), lr=job.learning_rate)
    num_training_steps = job.epochs * len(train_dataloader)
    lr_scheduler = get_scheduler(
        "linear",
        optimizer=optimizer,
        num_warmup_steps=int(job.warmup_ratio * num_training_steps),
        num_training_steps=num_training_steps,
    )
    accuracy = 0.0
    started, train_seconds, eval_seconds = time.time(), 0.0, 0.0
    for epoch in range(job.epochs):
        tick = time.perf_counter()
        model.train()
        total_loss = 0.0
        for batch in train_dataloader:
            outputs = model(**batch)
            loss = outputs.loss
            loss.backward()
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
            total_loss += loss.item()
        train_seconds += time.perf_counter() - tick
        tick = time.perf_counter()
        model.eval()
        correct = total = 0
        for batch in eval_dataloader:
            with torch.no_grad():
                logits = model(**batch).logits
            correct += (logits.argmax(dim=-1) == batch["labels"]).sum().item()
            total += len(batch["labels"])
        accuracy = correct / total
        eval_seconds += time.perf_counter() - tick
        print(f"epoch {epoch + 1}: loss {total_loss / len(train_dataloader):.4f}, accuracy {accuracy:.4f}")
    # The driver's clock is time.time() too: it turns these into the split of the whole process's wall time.
    (out / "phases.json").write_text(json.dumps([started, train_seconds, eval_seconds]), encoding="utf-8")
    model.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    return accuracy


# ---------------------------------------------------------------------------------------------------------
# side C: transformers.Trainer with its defaults


def trainer(job: Job, out: Path) -> float:
    import numpy as np
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    tokenizer = AutoTokenizer.from_pretrained(job.model)
    raw = load_raw(job)
    tokenized = raw.map(
        lambda b: tokenizer(b["text"], truncation=True, max_length=job.max_length), batched=True
    ).remove_columns(["text"])
    model = AutoModelForSequenceClassification.from_pretrained(job.model, num_labels=job.num_labels)

    def compute_metrics(eval_pred: Any) -> dict[str, float]:
        logits, labels = eval_pred
        return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}

    args = TrainingArguments(
        output_dir=str(out / "trainer"),
        per_device_train_batch_size=job.batch_size,
        per_device_eval_batch_size=job.eval_batch_size,
        learning_rate=job.learning_rate,
        num_train_epochs=job.epochs,
        warmup_steps=job.warmup_ratio,  # a float below 1 is a share of the steps
        eval_strategy="epoch",
        seed=job.seed,
        report_to="none",
    )
    run = Trainer(
        model=model,
        args=args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["test"],
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
    )
    run.train()
    accuracy = run.evaluate()["eval_accuracy"]
    run.save_model(str(out / "model"))
    return float(accuracy)


# ---------------------------------------------------------------------------------------------------------
# side B: tunebench run, and the driver


def tunebench_config(job: Job, out: Path) -> Path:
    import yaml

    cfg = {
        "task": "classification",
        "model": {"name_or_path": job.model},
        "data": {"source": job.data_dir, "eval_split": "test", "max_length": job.max_length},
        "train": {
            "learning_rate": job.learning_rate,
            "num_train_epochs": job.epochs,
            "per_device_train_batch_size": job.batch_size,
            "per_device_eval_batch_size": job.eval_batch_size,
            "warmup_ratio": job.warmup_ratio,
            "seed": job.seed,
        },
        "output": {"runs_dir": str(out / "runs")},
    }
    path = out / "tunebench.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def run_side(side: str, job: Job, out: Path) -> Outcome:
    """One side as a whole process; the peak RSS is the largest of it and the processes it waited for."""
    out.mkdir(parents=True)
    if side == "tunebench":
        command = [sys.executable, "-m", "engine.cli", "run", str(tunebench_config(job, out))]
    else:
        command = [sys.executable, __file__, "--side", side, "--job", json.dumps(job.__dict__), "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    log = open(out / "output.log", "w", encoding="utf-8")  # noqa: SIM115 - closed below, after the wait
    spawned = time.time()  # the events' clock
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    exited = time.time()
    process.returncode = os.waitstatus_to_exitcode(status)
    log.close()
    if process.returncode != 0:
        tail = (out / "output.log").read_text(encoding="utf-8")[-3000:]
        raise SystemExit(f"{side}: exited {process.returncode}\n{tail}")
    outcome = Outcome(side, wall, usage.ru_maxrss / 1024, 0.0)
    if side == "tunebench":
        (summary,) = (out / "runs").glob("*/summary.json")
        accuracy = json.loads(summary.read_text(encoding="utf-8"))["evaluations"][-1]["accuracy"]
        with open(summary.parent / "events.jsonl", encoding="utf-8") as fh:
            events = [json.loads(line) for line in fh]
        outcome.before_first_event = events[0]["time"] - spawned
        outcome.after_last_event = exited - events[-1]["time"]
        outcome.phases = tunebench_phases(events, spawned, exited)
    else:
        accuracy = json.loads((out / "accuracy.json").read_text(encoding="utf-8"))
        if side == "course":
            started, train, evaluate = json.loads((out / "phases.json").read_text(encoding="utf-8"))
            setup = started - spawned
            outcome.phases = Phases(setup, train, evaluate, 0.0, exited - spawned - setup - train - evaluate)
    outcome.accuracy = float(accuracy)
    return outcome


def longtail(folder: Path, seed: int = 0) -> Path:
    """Texts of one label made of 1 to 12 of the bundled reviews of that label, the count long-tailed (most
    texts are one review, a few are many): the label stays as learnable as in the reviews themselves."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        rows = [json.loads(line) for line in (SAMPLES / "reviews-sample" / f"{split}.jsonl").open(encoding="utf-8")]
        by_label: dict[int, list[str]] = {}
        for row in rows:
            by_label.setdefault(row["label"], []).append(row["text"])
        with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as fh:
            for row in rows:
                count = min(int(rng.paretovariate(1.2)), 12)
                extra = rng.sample(by_label[row["label"]], min(count - 1, len(by_label[row["label"]])))
                fh.write(json.dumps({"text": " ".join([row["text"], *extra]), "label": row["label"]}) + "\n")
    return folder


def lengths_line(job: Job) -> str:
    """How long the training texts are against max_length: what padding every text to it wastes, and what
    dynamic padding can save at best."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(job.model)
    with open(Path(job.data_dir) / "train.jsonl", encoding="utf-8") as fh:
        texts = [json.loads(line)["text"] for line in fh]
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=job.max_length)["input_ids"]]
    mean = sum(lengths) / len(lengths)
    cut = sum(n == job.max_length for n in lengths) / len(lengths)
    return (
        f"train texts: {mean:.1f} tokens on average of max_length {job.max_length} "
        f"({mean / job.max_length:.0%}); {cut:.1%} reach it"
    )


def main() -> None:
    args = parse_args(
        __doc__ or "",
        [
            ("--cases", {"default": "reviews-128", "help": f"comma-separated, or all: {', '.join(CASES)}"}),
            ("--pairs", {"type": int, "default": 3, "help": "rounds of the three sides (default 3)"}),
            ("--side", {"choices": ("course", "trainer"), "help": "internal: run one side in this process"}),
            ("--job", {"help": "internal: the job of --side, as JSON"}),
            ("--out", {"help": "internal: the folder of --side"}),
        ],
    )
    if args.side:
        from benchlib import quiet_transformers

        quiet_transformers()
        out = Path(args.out)
        accuracy = (course if args.side == "course" else trainer)(Job(**json.loads(args.job)), out)
        (out / "accuracy.json").write_text(json.dumps(accuracy), encoding="utf-8")
        return
    cases = list(CASES) if args.cases == "all" else args.cases.split(",")
    if unknown := set(cases) - set(CASES):
        raise SystemExit(f"--cases: unknown {', '.join(sorted(unknown))}; pick from {', '.join(CASES)}, or all")
    print(machine_line())
    from benchlib import compile_project, scratch_dir

    compile_project()  # bytecode for the project, as an installed package has it (docs/perf-log.md, cause 34)

    from engine.models import resolve_model_path

    results: dict[str, dict[str, list[Outcome]]] = {}
    with scratch_dir("time-to-accuracy") as tmp:
        if args.smoke:
            model, epochs, pairs, cases = str(make_bert(tmp / "tiny", "tiny")), 1, 1, ["reviews-128"]
        else:
            model, epochs, pairs = resolve_model_path("minilm"), 3, args.pairs
        print(f"model: {'tiny random BERT' if args.smoke else 'MiniLM'}, {epochs} epoch(s), {pairs} pair(s)")
        for case in cases:
            kind, length = case.split("-")
            data = str(SAMPLES / "reviews-sample") if kind == "reviews" else str(longtail(tmp / "longtail"))
            job = Job(model, data, int(length), epochs)
            print(f"{case}: {lengths_line(job)}", flush=True)
            results[case] = {side: [] for side in SIDES}
            for pair in range(pairs):
                for side in SIDES:
                    outcome = run_side(side, job, tmp / f"{case}-{side}-{pair}")
                    results[case][side].append(outcome)
                    ends = ""
                    if outcome.before_first_event is not None and outcome.after_last_event is not None:
                        ends = (
                            f" (first event after {outcome.before_first_event:.1f} s, "
                            f"exit {outcome.after_last_event:.2f} s after the last)"
                        )
                    print(
                        f"  {case} pair {pair + 1} {side}: {outcome.wall_seconds:.1f} s{ends}, "
                        f"{outcome.peak_rss_mb:.0f} MiB peak, accuracy {outcome.accuracy:.4f}",
                        flush=True,
                    )
                    if outcome.phases is not None:
                        print(f"    {outcome.phases.line()}", flush=True)

    rows = []
    for case, sides in results.items():
        for side, outcomes in sides.items():
            rows.append(
                [
                    case,
                    side,
                    median([o.wall_seconds for o in outcomes]),
                    median([o.peak_rss_mb for o in outcomes]),
                    median([o.accuracy for o in outcomes]),
                ]
            )
    print_table(["case", "side", "wall s (median)", "peak RSS MiB", "accuracy (median)"], rows)
    for case, sides in results.items():
        wall = {side: median([o.wall_seconds for o in outcomes]) for side, outcomes in sides.items()}
        acc = {side: median([o.accuracy for o in outcomes]) for side, outcomes in sides.items()}
        rss = {side: median([o.peak_rss_mb for o in outcomes]) for side, outcomes in sides.items()}
        print(
            f"{case}: course / tunebench wall {wall['course'] / wall['tunebench']:.2f}, peak RSS "
            f"{rss['tunebench'] / rss['course']:.2f} of the course's; tunebench / trainer wall "
            f"{wall['tunebench'] / wall['trainer']:.2f}; accuracy course {acc['course']:.4f}, tunebench "
            f"{acc['tunebench']:.4f}, trainer {acc['trainer']:.4f}"
        )
        # Training steps alone against the whole process: how much of the lead the fixed costs take back.
        train = {side: median([o.phases.train for o in sides[side] if o.phases]) for side in ("course", "tunebench")}
        setup = {side: median([o.phases.setup for o in sides[side] if o.phases]) for side in ("course", "tunebench")}
        print(
            f"{case}: training steps alone, course / tunebench {train['course'] / train['tunebench']:.2f} "
            f"({train['course']:.1f} vs {train['tunebench']:.1f} s); setup before the first step "
            f"{setup['course']:.1f} vs {setup['tunebench']:.1f} s"
        )
    # The RATIO lines are the first case's (reviews-128 by default): a speed bought with accuracy does not count.
    case = cases[0]
    sides = results[case]
    wall = {side: median([o.wall_seconds for o in outcomes]) for side, outcomes in sides.items()}
    acc = {side: median([o.accuracy for o in outcomes]) for side, outcomes in sides.items()}
    for other, name, goal, higher in (
        ("course", "course_loop_vs_tunebench_wall", COURSE_GOAL, True),
        ("trainer", "tunebench_vs_trainer_wall", TRAINER_GOAL, False),
    ):
        # A speed bought with accuracy does not count; a higher accuracy (seed noise on 150 reviews) costs nothing.
        same = acc["tunebench"] >= acc[other] - ACCURACY_TOLERANCE
        if not same:
            print(f"{case}: tunebench's accuracy is over {ACCURACY_TOLERANCE} below the {other}'s: the ratio fails")
        value = wall[other] / wall["tunebench"] if higher else wall["tunebench"] / wall[other]
        # --smoke: a tiny random model's accuracy after one epoch is noise
        ratio_line(name, value, goal, higher_is_better=higher, valid=same or args.smoke)


if __name__ == "__main__":
    main()
