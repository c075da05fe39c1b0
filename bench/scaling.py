"""One run on N processes (``launch.num_processes``) against the same run on one, as whole ``tunebench run``
processes: training throughput and the launch overhead (from the command to the first logged step).

CPU mode (default): 1 process against 2, at equal total threads (2 threads for one process, 1 each for two;
the launcher shares the cores out), gloo, on the bundled reviews with a small random BERT. Both sides keep the
per-device batch, so 2 processes train on twice the samples per step (weak scaling, as on GPUs). On a 2-core
machine this is a check that data parallelism costs little next to the same threads in one process, not a
speed-up.

GPU mode (``--gpus N``, or ``--gpus all``): 1 GPU against N, nccl, a bert-base-sized masked LM (random weights)
at seq 128 in bf16 on generated texts that fill every sequence. Scaling efficiency = samples/s on N GPUs /
(N x samples/s on 1); goal 0.9.

The sides alternate (1, N, 1, N, ...) so that both see the same load from anything else on the machine.

    python bench/scaling.py              # ~3 minutes on 2 CPU cores
    python bench/scaling.py --gpus all   # on a many-GPU machine; a few minutes
    python bench/scaling.py --smoke      # tiny model, a few steps
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib import REPO_ROOT, machine_line, make_bert, median, parse_args, print_table, ratio_line, scratch_dir

#: Two processes on the cores one had: the gradients' all-reduce over gloo is the price; it should stay small.
CPU_GOAL = 0.8
GPU_GOAL = 0.9  # N GPUs give at least 0.9 x N the samples/s of one
WARMUP_STEPS = 3  # steps left out of the throughput: the first ones hold allocation and the launch


@dataclass
class Side:
    processes: int
    wall_seconds: float  # the whole `tunebench run`, start-up and the final save included
    first_step_seconds: float  # from the command to the first logged step
    samples_per_second: float


def write_config(path: Path, model: Path, data: str, runs: Path, *, gpu: bool, samples: int, batch: int) -> Path:
    """A config of one epoch over ``samples`` training samples (there is no step limit but the data)."""
    import yaml

    train: dict[str, Any] = {
        "learning_rate": 1e-4,
        "num_train_epochs": 1,
        "per_device_train_batch_size": batch,
        "logging_steps": 1,  # every step's time: the first step marks the end of the launch
        "save_strategy": "no",
        "seed": 0,
    }
    if gpu:
        cfg: dict[str, Any] = {
            "task": "masked-lm",
            "engine": "loop",
            "model": {"name_or_path": str(model)},
            "data": {
                "source": data,
                "label_field": None,
                "eval_fraction": None,
                "max_length": 128,
                "train_size": samples,
            },
            "train": {**train, "precision": "bf16", "device": "cuda"},
        }
    else:
        cfg = {
            "task": "classification",
            "engine": "loop",
            "model": {"name_or_path": str(model)},
            "data": {"source": data, "eval_split": "test", "eval_size": 32, "max_length": 128, "train_size": samples},
            "train": {**train, "device": "cpu"},
        }
    cfg["output"] = {"runs_dir": str(runs)}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def run_side(config: Path, runs: Path, processes: int, global_batch: int) -> Side:
    """``tunebench run CONFIG --set launch.num_processes=N`` as a user runs it; its events give the rest."""
    before = set(runs.iterdir()) if runs.exists() else set()
    start_wall, start = time.time(), time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "run", str(config), "--set", f"launch.num_processes={processes}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{processes} process(es): tunebench run exited {done.returncode}\n{done.stderr[-3000:]}")
    (run_dir,) = set(runs.iterdir()) - before
    steps = []
    with open(run_dir / "events.jsonl", encoding="utf-8") as fh:
        for line in fh:
            event = json.loads(line)
            if event["type"] == "StepLogged":
                steps.append((event["step"], event["time"]))
    counted = [s for s in steps if s[0] > WARMUP_STEPS] or steps
    (first_step, first_time), (last_step, last_time) = counted[0], counted[-1]
    rate = (last_step - first_step) * global_batch / (last_time - first_time) if last_step > first_step else 0.0
    return Side(processes, wall, steps[0][1] - start_wall, rate)


def main() -> None:
    args = parse_args(
        __doc__ or "",
        [
            ("--gpus", {"default": None, "help": "GPU mode: a number of GPUs, or all"}),
            ("--pairs", {"type": int, "default": 2, "help": "rounds of (1, N) runs (default 2)"}),
            ("--steps", {"type": int, "default": None, "help": "optimizer steps per run"}),
        ],
    )
    gpu = args.gpus is not None
    if gpu:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("scaling.py --gpus needs CUDA GPUs; without it, it measures 1 vs 2 CPU processes")
        count = torch.cuda.device_count()
        n = count if args.gpus == "all" else int(args.gpus)
        if not 2 <= n <= count:
            raise SystemExit(f"--gpus {args.gpus}: {count} GPU(s) visible; give a number from 2 to {count}, or all")
        size, batch, steps, pairs = "base", 64, args.steps or 60, args.pairs
    else:
        n = 2
        size, batch = ("tiny", 8) if args.smoke else ("small", 16)
        steps, pairs = (6, 1) if args.smoke else (args.steps or 18, args.pairs)  # 2 x 16 x 18 of the 600 reviews
    print(machine_line())
    sides: dict[int, list[Side]] = {1: [], n: []}
    with scratch_dir("scaling") as tmp:
        model = make_bert(tmp / "model", size)
        if gpu:
            from gpu_train import write_texts

            from engine.models import load_tokenizer

            rows = batch * n * (steps + 1)
            data = str(write_texts(tmp / "texts.jsonl", load_tokenizer(str(model)), rows, words=160))
        else:
            data = "reviews-sample"
        print(
            f"model: random BERT ({size}), {'bf16 on CUDA, seq 128' if gpu else 'fp32 on CPU'}, per-device batch "
            f"{batch}, {steps} steps per run, {pairs} pair(s); 1 vs {n} processes"
        )
        for _ in range(pairs):
            for processes in (1, n):
                runs = tmp / f"runs-{processes}"
                samples = batch * processes * steps  # the same steps on each side
                config = write_config(tmp / "run.yaml", model, data, runs, gpu=gpu, samples=samples, batch=batch)
                side = run_side(config, runs, processes, batch * processes)
                sides[processes].append(side)
                print(
                    f"  {processes} process(es): {side.samples_per_second:.1f} samples/s, first step at "
                    f"{side.first_step_seconds:.1f} s, whole run {side.wall_seconds:.1f} s",
                    flush=True,
                )

    def med(processes: int, what: str) -> float:
        return median([getattr(s, what) for s in sides[processes]])

    print_table(
        ["processes", "samples/s", "first step, s", "whole run, s"],
        [[p, med(p, "samples_per_second"), med(p, "first_step_seconds"), med(p, "wall_seconds")] for p in (1, n)],
    )
    overhead = med(n, "first_step_seconds") - med(1, "first_step_seconds")
    print(f"launch overhead of {n} processes: {overhead:+.1f} s to the first step")
    speedup = med(n, "samples_per_second") / med(1, "samples_per_second")
    if gpu:
        ratio_line("gpu_scaling_efficiency", speedup / n, GPU_GOAL)
    else:
        ratio_line("cpu_two_processes_vs_one_samples_per_second", speedup, CPU_GOAL)


if __name__ == "__main__":
    main()
