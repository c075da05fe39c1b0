"""Before/after fill-mask predictions: the base model next to a fine-tuned run, for a few movie prompts.

    python bench/mlm_before_after.py runs/<run>            # base = the model the run started from
    python bench/mlm_before_after.py runs/<run> --markdown # a table to paste into the README

Without a run folder it takes the newest masked-LM run under ``runs/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.errors import UserError
from engine.predict import Comparison, FillMaskResult, compare

PROMPTS = [
    "This is a [MASK] movie!",
    "The acting was [MASK] and the plot was predictable.",
    "I [MASK] this film.",
]


def newest_masked_lm_run(runs_dir: Path) -> Path | None:
    from engine.runs import list_runs

    for run in list_runs(runs_dir):
        if run.task == "masked-lm" and (run.path / "model" / "config.json").is_file():
            return run.path
    return None


def tokens(result: object) -> list[str]:
    assert isinstance(result, FillMaskResult)
    return [f"{t.token_str} ({t.score:.3f})" for t in result.masks[0]]


def print_plain(prompt: str, side: Comparison, base: str) -> None:
    before, after = tokens(side.base), tokens(side.tuned)
    flag = " (untrained head)" if side.base.untrained_head else ""
    print(f"\n{prompt}")
    print(f"  {'#':>2}  {'before: ' + base + flag:<40}  after: fine-tuned")
    for i, (b, a) in enumerate(zip(before, after, strict=True), 1):
        print(f"  {i:>2}  {b:<40}  {a}")


def print_markdown(prompt: str, side: Comparison) -> None:
    before, after = tokens(side.base), tokens(side.tuned)
    print(f"\n`{prompt}`\n")
    print("| # | before | after |")
    print("|---|---|---|")
    for i, (b, a) in enumerate(zip(before, after, strict=True), 1):
        print(f"| {i} | {b} | {a} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", help="run folder (default: newest masked-LM run under runs/)")
    parser.add_argument("--base", default=None, help="base model (default: the run's model.name_or_path)")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("prompts", nargs="*", default=None, help="prompts with [MASK] (default: three movie ones)")
    args = parser.parse_args(argv)
    run = Path(args.run) if args.run else newest_masked_lm_run(Path("runs"))
    if run is None:
        print("no masked-LM run with a model under runs/; train sample_configs/quickstart-mlm.yaml", file=sys.stderr)
        return 2
    from engine.logs import capture_library_logs

    try:
        for prompt in args.prompts or PROMPTS:
            with capture_library_logs(lambda _event: None):  # load reports are not results
                side = compare(prompt, str(run), args.base, top_k=args.top_k, device=args.device)
            if args.markdown:
                print_markdown(prompt, side)
            else:
                print_plain(prompt, side, side.base.model)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
