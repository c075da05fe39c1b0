"""Run every benchmark script, one process each, and print every RATIO line at the end.

    python bench/run_all.py                 # all CPU benches (~18 minutes on a 2-core Zen 4 VM)
    python bench/run_all.py --smoke         # every script in its tiny mode (proves they all still work)
    python bench/run_all.py --only threads padding

``gpu_train.py`` runs only where CUDA is available. Exit status: 0 when every script ran and every RATIO
line says PASS, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
#: Modules here that are not benchmarks.
HELPERS = {"benchlib", "uilib", "tui_subscribers", "run_all"}
#: Run first, in this order; any other script follows in name order.
ORDER = [
    "loop_overhead",
    "sft_overhead",
    "padding",
    "threads",
    "predict_latency",
    "startup",
    "ui_responsiveness",
    "live_follow",
    "data_browsing",
    "runs_list",
    "memory",
    "scaling",
    "time_to_accuracy",
    "gpu_train",
]
#: Arguments of a full run (not --smoke), where a script's own default takes too long for the whole run to stay
#: under 15 minutes with a margin; the script alone gives the settled figure. The key p95 keeps two pairs: it
#: needs the keys of both. lora.py keeps its three seeds (one seed's accuracy cannot tell LoRA from full
#: fine-tuning; BENCHMARKS.md, "Zen 4, 2026-12-07 morning"), which takes the whole run over 15 minutes on a
#: 2-core Zen 4 VM; scaling.py keeps its two pairs, which its goal needs.
FULL_RUN_ARGS = {
    "time_to_accuracy": ["--pairs", "1"],
    "threads": ["--rounds", "1"],
    "ui_responsiveness": ["--pairs", "2"],
    "sft_overhead": ["--rounds", "1"],
    "live_follow": ["--pairs", "1"],
}
RATIO = re.compile(r"^RATIO \S+=\S+ goal=\S+ (PASS|FAIL)$")


def scripts() -> list[str]:
    """Every script here that ends with a RATIO line (it calls ``benchlib.ratio_line``); other tools in
    bench/ (such as a before/after report of a trained run) are not benchmarks."""
    found = {
        p.stem
        for p in BENCH_DIR.glob("*.py")
        if p.stem not in HELPERS and "ratio_line(" in p.read_text(encoding="utf-8")
    }
    return [n for n in ORDER if n in found] + sorted(found - set(ORDER))


def cuda_available() -> bool:
    probe = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
        capture_output=True,
        text=True,
        check=False,
    )
    return probe.stdout.strip() == "True"


def run_script(name: str, smoke: bool) -> tuple[list[str], int, float]:
    """Run one script, echoing its output; returns its RATIO lines, exit status and seconds."""
    command = [sys.executable, str(BENCH_DIR / f"{name}.py"), *(["--smoke"] if smoke else FULL_RUN_ARGS.get(name, []))]
    print(f"\n=== {name} ({' '.join(Path(c).name if c.endswith('.py') else c for c in command[1:])})", flush=True)
    start = time.perf_counter()
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=BENCH_DIR.parent,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    ratios: list[str] = []
    for line in process.stdout:
        print(line, end="", flush=True)
        if RATIO.match(line.strip()):
            ratios.append(line.strip())
    return ratios, process.wait(), time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny mode of every script")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these scripts (names without .py)")
    args = parser.parse_args()
    names = scripts()
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            parser.error(f"no such bench: {', '.join(unknown)} (have: {', '.join(names)})")
        names = [n for n in names if n in args.only]
    skipped: list[str] = []
    if "gpu_train" in names and not args.smoke and not cuda_available():
        names.remove("gpu_train")
        skipped.append("gpu_train (no CUDA GPU here)")

    summary: list[str] = []
    ok = True
    for name in names:
        ratios, status, seconds = run_script(name, args.smoke)
        if status != 0 or not ratios:
            ok = False
            summary.append(f"ERROR {name}: exit status {status}, {len(ratios)} RATIO lines ({seconds:.0f} s)")
        summary.extend(ratios)
        ok = ok and all(r.endswith("PASS") for r in ratios)
        print(f"=== {name}: {seconds:.0f} s", flush=True)

    print("\n=== summary")
    for line in summary:
        print(line)
    for line in skipped:
        print(f"SKIPPED {line}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
