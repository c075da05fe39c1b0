"""Where a training step's CPU time goes, by kind of operator: matrix products, dropout's random masks, the
optimizer, the rest.

Not a benchmark (no goal, not in ``run_all.py``): the diagnosis behind the time-to-accuracy figures. It runs
the job of ``time_to_accuracy.py`` as ``tunebench run`` does (MiniLM, the bundled reviews, max_length 128,
batch 16, Tunebench's defaults), on a seeded sample of ``--samples`` training rows for one epoch, and profiles its
training steps with ``torch.profiler`` (from the run's RunStarted event to its EpochEnded). Printed: each kind's
share of the operators' CPU time, and the matrix products' GFLOP/s (torch's own FLOP counts over their time,
under the profiler's overhead) beside what one large square product reaches on this machine.

    python bench/step_profile.py                 # ~1 minute on 2 CPU cores
    python bench/step_profile.py --smoke         # a tiny random BERT, seconds
"""

from __future__ import annotations

from typing import Any

from benchlib import SAMPLES, machine_line, make_bert, parse_args, print_table, quiet_transformers, scratch_dir

#: Operators by kind; anything else is "the rest" (activations, norms, copies, autograd's own).
KINDS = {
    "matrix products": ("aten::mm", "aten::addmm", "aten::bmm", "aten::_scaled_dot_product_flash_attention_for_cpu"),
    "dropout masks": ("aten::bernoulli_",),
    "optimizer": ("aten::_fused_adamw_",),
}
MATMULS = KINDS["matrix products"][:3]


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], [("--samples", {"type": int, "default": 320})])
    print(machine_line())
    quiet_transformers()
    import torch
    from torch.profiler import ProfilerActivity, profile

    from engine.config import from_dict
    from engine.events import EpochEnded, RunStarted
    from engine.runner import Runner

    with scratch_dir("step-profile") as tmp:
        model = str(make_bert(tmp / "tiny", "tiny")) if args.smoke else "minilm"
        samples = 32 if args.smoke else args.samples
        cfg = from_dict(
            {
                "task": "classification",
                "model": {"name_or_path": model},
                "data": {"source": str(SAMPLES / "reviews-sample"), "max_length": 128, "train_size": samples},
                "train": {"num_train_epochs": 1, "per_device_train_batch_size": 16, "eval_strategy": "no"},
                "output": {"runs_dir": str(tmp / "runs")},
            }
        )
        prof = profile(activities=[ProfilerActivity.CPU], with_flops=True)
        steps: list[int] = []

        def watch(event: Any) -> None:  # called on the training thread: the profile holds its operators
            if isinstance(event, RunStarted):
                prof.start()
            elif isinstance(event, EpochEnded):
                prof.stop()
                steps.append(event.step)

        result = Runner(cfg, subscribers=[watch]).run()
        if result.status != "finished" or not steps:
            raise SystemExit(f"the run did not finish: {result.error}")

    ops = {e.key: e for e in prof.key_averages()}
    # Operators only: the profile's user scopes (Optimizer.step#..., ProfilerStep) would count their operators twice.
    total = sum(e.self_cpu_time_total for e in ops.values() if e.key.startswith("aten::")) or 1
    spent = {kind: sum(ops[n].self_cpu_time_total for n in names if n in ops) for kind, names in KINDS.items()}
    spent["the rest"] = total - sum(spent.values())
    rows = [[kind, f"{us / 1e6:.2f}", f"{us / total:.1%}"] for kind, us in spent.items()]
    print(
        f"{'tiny random BERT' if args.smoke else 'MiniLM'}: {steps[0]} training steps, torch threads "
        f"{torch.get_num_threads()}"
    )
    print_table(["kind", "CPU s", "share of the operators"], rows)
    flops = sum(ops[n].flops for n in MATMULS if n in ops)
    seconds = sum(ops[n].self_cpu_time_total for n in MATMULS if n in ops) / 1e6
    if flops and seconds:
        print(
            f"matrix products (mm, addmm, bmm): {flops / seconds / 1e9:.0f} GFLOP/s, against "
            f"{square_matmul_gflops():.0f} for one large square product on this machine (fp32)"
        )


def square_matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """What this CPU's BLAS reaches on a product it runs best: the ceiling the training's products are under."""
    import time

    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


if __name__ == "__main__":
    main()
