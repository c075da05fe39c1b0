"""LoRA against full fine-tuning: MiniLM classification on the bundled reviews, the same data and epochs.

Both train through ``Runner`` on the loop engine, each in a process of its own (so that each peak RSS is its
own), from the bundled ``minilm`` on a seeded subsample of ``reviews-sample`` (5 star classes), evaluated on
its test split. Each trains at a learning rate that suits it: 1e-4 for every weight, 5e-3 for adapters
(``model.lora``: r=8 on the attention projections, the classifier in full). Measured:

- samples/s: the median over the run's logging windows after the first (its own clock: evaluations and
  loading left out; the median, because the two runs take turns rather than share the machine's load);
- the process's peak RSS;
- the AdamW state's size after one step (what the optimizer keeps per trainable weight);
- eval accuracy after the same epochs, averaged over seeds (``train.seed``: the head's and the adapters' first
  weights, dropout, data order; the rows trained on stay the same). With 320 rows and 60 steps, one seed's
  accuracy moved by 0.1 when only the batches' padding changed (BENCHMARKS.md, "Zen 4, 2026-12-07 morning:
  LoRA's accuracy over seeds"): one seed cannot tell the two apart. Speed, RSS and state come from the first
  seed's runs.

    python bench/lora.py            # three seeds: about 4 minutes on 2 Zen 4 cores
    python bench/lora.py --seeds 1  # one seed, as before: about a minute
    python bench/lora.py --smoke    # a tiny random BERT, seconds: proves the script works
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from statistics import mean
from typing import Any

from benchlib import (
    machine_line,
    make_bert,
    median,
    parse_args,
    print_table,
    quiet_transformers,
    ratio_line,
    scratch_dir,
)

VARIANTS = {"full": None, "lora": {"r": 8}}
LEARNING_RATES = {"full": 1e-4, "lora": 5e-3}
SPEED_GOAL = 1.0  # adapters train at least as fast: no weight gradients for the frozen layers
STATE_GOAL = 0.05  # AdamW keeps two numbers per trainable weight: under LoRA, a few percent of the model's
RSS_GOAL = 1.0
ACCURACY_GOAL = 0.9  # within 10 % of full fine-tuning's accuracy after the same epochs, both averaged over seeds
SEEDS = 3
FIRST_SEED = 42  # train.seed's default: the first seed's runs are those a one-seed run of the bench measures


def config(variant: str, model: str, runs: Path, smoke: bool, seed: int = FIRST_SEED) -> Any:
    from engine.config import from_dict

    return from_dict(
        {
            "task": "classification",
            "engine": "loop",
            "model": {"name_or_path": model, "lora": VARIANTS[variant]},
            "data": {
                "source": "reviews-sample",
                "eval_split": "test",
                "train_size": 32 if smoke else 320,
                "eval_size": 16 if smoke else 150,
                "max_length": 64,
            },
            "train": {
                "learning_rate": LEARNING_RATES[variant],
                "num_train_epochs": 1 if smoke else 3,
                "per_device_train_batch_size": 16,
                "per_device_eval_batch_size": 32,
                "warmup_ratio": 0.1,
                "logging_steps": 5,
                "device": "cpu",
                "save_strategy": "no",
                "seed": seed,
            },
            "output": {"runs_dir": str(runs)},
        }
    )


def optimizer_state_bytes(cfg: Any) -> int:
    """Bytes of AdamW state after one step of ``cfg``'s setup (the engine's own optimizer and parameter groups)."""
    import torch

    from engine.loop import setup

    s = setup(cfg, lambda _event: None)
    batch = next(iter(s.train_loader))
    s.model(**batch).loss.backward()
    s.optimizer.step()
    return sum(
        value.numel() * value.element_size()
        for state in s.optimizer.state.values()
        for value in state.values()
        if isinstance(value, torch.Tensor)
    )


def measure(variant: str, model: str, runs: Path, smoke: bool, seed: int) -> dict[str, Any]:
    """One variant in this process: train it, then read the peak RSS, then size the optimizer's state."""
    from engine.events import Evaluated, RunStarted, StepLogged
    from engine.runner import Runner

    quiet_transformers()
    cfg = config(variant, model, runs, smoke, seed)
    events: list[Any] = []
    result = Runner(cfg, subscribers=[events.append]).run()
    if result.status != "finished":
        raise SystemExit(f"{variant}: {result.error}")
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    started = next(e for e in events if isinstance(e, RunStarted))
    windows = [e.samples_per_second for e in events if isinstance(e, StepLogged)]
    evaluated = [e for e in events if isinstance(e, Evaluated)][-1]
    return {
        "variant": variant,
        "trainable": started.trainable_parameters or started.num_parameters,
        "parameters": started.num_parameters,
        "samples_per_second": median(windows[1:] or windows),  # the first window holds the warm-up
        "peak_rss_mb": peak_rss_mb,
        # Read from the first seed's runs only (``main``): another seed's setup would give the same size.
        "optimizer_state_mb": optimizer_state_bytes(cfg) / 2**20 if seed == FIRST_SEED else None,
        "accuracy": evaluated.accuracy,
        "text": started.parameters_text,
    }


def main() -> None:
    args = parse_args(
        __doc__ or "",
        [
            ("--variant", {"choices": list(VARIANTS), "help": "measure one variant in this process (internal)"}),
            ("--model", {"default": "minilm", "help": "model to fine-tune (default: the bundled minilm)"}),
            ("--runs", {"default": None, "help": "runs folder (internal)"}),
            ("--seed", {"type": int, "default": FIRST_SEED, "help": "train.seed of the measured variant (internal)"}),
            ("--seeds", {"type": int, "default": SEEDS, "help": f"seeds to train each variant with (default {SEEDS})"}),
        ],
    )
    if args.variant:
        print(json.dumps(measure(args.variant, args.model, Path(args.runs), args.smoke, args.seed)), flush=True)
        return
    if args.seeds < 1:
        raise SystemExit(f"--seeds: expected at least 1, got {args.seeds}")
    seeds = [FIRST_SEED + i for i in range(1 if args.smoke else args.seeds)]
    print(machine_line(with_torch=False))
    runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
    with scratch_dir("lora") as tmp:
        model = args.model
        if args.smoke:
            quiet_transformers()
            model = str(make_bert(tmp / "model", "tiny", max_positions=128))
        for seed in seeds:
            for variant in VARIANTS:
                command = [sys.executable, __file__, "--variant", variant, "--model", model, "--seed", str(seed)]
                command += ["--runs", str(tmp / "runs"), *(["--smoke"] if args.smoke else [])]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(f"{variant}, seed {seed} failed:\n{done.stderr[-3000:]}")
                runs[variant].append(json.loads(done.stdout.strip().splitlines()[-1]))
    epochs = config("full", model, Path("runs"), args.smoke).train.num_train_epochs
    print(f"model: {Path(model).name}, reviews-sample, {'32' if args.smoke else '320'} train rows, {epochs} epochs")
    results = [{**each[0], "accuracy": mean(r["accuracy"] for r in each)} for each in runs.values()]
    print_table(
        ["variant", "trains", "samples/s", "peak RSS MB", "AdamW state MB", f"accuracy, mean of {len(seeds)}"],
        [
            [r["variant"], r["text"], r["samples_per_second"], r["peak_rss_mb"], r["optimizer_state_mb"], r["accuracy"]]
            for r in results
        ],
    )
    print_table(
        ["seed", *(f"{variant} accuracy" for variant in VARIANTS)],
        [[seed, *(runs[variant][i]["accuracy"] for variant in VARIANTS)] for i, seed in enumerate(seeds)],
    )
    full, lora = results
    ratio_line("lora_vs_full_accuracy", lora["accuracy"] / max(full["accuracy"], 1e-9), ACCURACY_GOAL)
    ratio_line(
        "lora_vs_full_optimizer_state",
        lora["optimizer_state_mb"] / full["optimizer_state_mb"],
        STATE_GOAL,
        higher_is_better=False,
    )
    ratio_line("lora_vs_full_peak_rss", lora["peak_rss_mb"] / full["peak_rss_mb"], RSS_GOAL, higher_is_better=False)
    ratio_line("lora_vs_full_samples_per_second", lora["samples_per_second"] / full["samples_per_second"], SPEED_GOAL)


if __name__ == "__main__":
    main()
