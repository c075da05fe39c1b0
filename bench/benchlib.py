"""Shared helpers for the benchmark scripts: arguments, tables, the RATIO line, machine facts, tiny models.

Every script in ``bench/`` prints a short table and ends with one line::

    RATIO name=value goal=value PASS|FAIL

``bench/run_all.py`` collects those lines. Scripts take ``--smoke`` (a tiny run in seconds, to prove the
script still works; its numbers mean nothing) and run offline.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLES = REPO_ROOT / "engine" / "samples"


def parse_args(description: str, extra: Sequence[tuple[str, dict[str, Any]]] = ()) -> argparse.Namespace:
    """``--smoke`` plus any script-specific options given as ``(flag, add_argument kwargs)``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--smoke", action="store_true", help="tiny run in seconds; proves the script works")
    for flag, kwargs in extra:
        parser.add_argument(flag, **kwargs)
    return parser.parse_args()


def machine_line(*, with_torch: bool = True) -> str:
    """One line on the machine and how busy it was when the bench started (noisy neighbours skew timings).

    ``with_torch=False`` keeps torch out of the process (benches that read RSS or time imports).
    """
    from engine.models import native_bf16

    model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        cpuinfo = Path("/proc/cpuinfo").read_text()
        # The VM's model name is often just "AMD EPYC": family and model tell a Zen 3 from a Zen 4, and the
        # bf16 units decide what precision: auto trains in (BENCHMARKS.md, "Machine").
        first_cpu = cpuinfo.split("\n\n")[0].splitlines()
        fields = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in first_cpu)}
        model = (
            f"{fields.get('model name', model)}, family {fields.get('cpu family', '?')} model "
            f"{fields.get('model', '?')}, native bf16: {'yes' if native_bf16(cpuinfo) else 'no'}"
        )
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    line = f"machine: {os.cpu_count()} CPUs ({model}), load average {load}"
    if with_torch:
        import torch

        line += f", torch {torch.__version__}, {torch.get_num_threads()} torch threads"
    return line


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A plain aligned text table (no rich: the output must read the same in a log file)."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c.rjust(w) if n and _numeric(c) else c.ljust(w) for c, w in zip(row, widths, strict=True)))
        if n == 0:
            print("  ".join("-" * w for w in widths))
    sys.stdout.flush()


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "-"
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return "-" if value is None else str(value)


def _numeric(text: str) -> bool:
    return text.replace(".", "", 1).replace("-", "", 1).replace("x", "").isdigit()


def ratio_line(name: str, value: float, goal: float, *, higher_is_better: bool = True, valid: bool = True) -> bool:
    """Print the closing ``RATIO`` line; ``goal`` is a floor when higher is better, else a ceiling. ``valid``
    False fails the line whatever the value (a speed measured on a job that did not do the same work)."""
    ok = valid and (value >= goal if higher_is_better else value <= goal)
    sign = ">=" if higher_is_better else "<="
    shown = f"{value:.1f}" if abs(value) >= 100 else f"{value:.4f}"
    print(f"RATIO {name}={shown} goal={sign}{goal:g} {'PASS' if ok else 'FAIL'}", flush=True)
    return ok


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class Spread:
    """p50 / p95 / max of a list of timings, in the unit they were given."""

    n: int
    p50: float
    p95: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(len(values), percentile(values, 50), percentile(values, 95), max(values, default=float("nan")))


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def rss_mb() -> float:
    """Resident set size of this process, in MiB."""
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def compile_project() -> None:
    """Compile the project's modules to bytecode, as pip does for an installed package and Python does at a
    checkout's first start. Where PYTHONDONTWRITEBYTECODE is set (this VM sets it), a checkout never gets
    them: each start would compile the workbench from source while the libraries it is compared with load
    bytecode (docs/perf-log.md, cause 34). The caches go where Python keeps them, in ``__pycache__``."""
    import compileall

    for package in ("engine", "tui"):
        compileall.compile_dir(REPO_ROOT / package, quiet=1)


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary folder removed afterwards (run folders, generated models and data)."""
    with tempfile.TemporaryDirectory(prefix=f"tunebench-{prefix}-") as tmp:
        yield Path(tmp)


#: Model sizes used by the benches: a random BERT with the MiniLM WordPiece vocabulary.
BERT_SIZES: dict[str, dict[str, Any]] = {
    # a few MB: for --smoke runs only
    "tiny": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    # ~4.7M parameters (half of them the embedding): a CPU step of ~0.1 s, long next to any bookkeeping
    "small": {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 512},
    # BertConfig() defaults: bert-base, ~110M parameters with the MLM head
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
}


def make_bert(folder: Path, size: str, *, max_positions: int = 512, seed: int = 0) -> Path:
    """Save a randomly initialised BERT masked LM (MLM head included) and the MiniLM tokenizer to ``folder``.

    Load it for any task: the sequence-classification head is new, the MLM head is not.
    """
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from engine.models import load_tokenizer

    torch.manual_seed(seed)
    tokenizer = load_tokenizer("minilm")
    tokenizer.model_max_length = max_positions
    config = BertConfig(vocab_size=tokenizer.vocab_size, max_position_embeddings=max_positions, **BERT_SIZES[size])
    folder.mkdir(parents=True, exist_ok=True)
    BertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def run_in_thread(fn: Callable[[], T]) -> T:
    """Call ``fn`` in a fresh worker thread and return its result (or raise its exception).

    Every Tunebench front (TUI and CLI) trains in a worker thread; a baseline must train under the same
    conditions. On a busy machine, OpenMP's spin-waiting makes the main thread's parallel regions far
    slower than a worker thread's (bench/threads.py measures it), which would flatter the engine.
    """
    box: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            box.append(fn())
        except BaseException as exc:
            error.append(exc)

    worker = threading.Thread(target=target, name="bench-baseline")
    worker.start()
    worker.join()
    if error:
        raise error[0]
    return box[0]


class Stopwatch:
    """Accumulates wall time over several ``with`` blocks."""

    def __init__(self) -> None:
        self.seconds = 0.0

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start


def quiet_transformers() -> None:
    """Silence load reports and progress bars so the bench output stays a table."""
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.utils.logging.set_verbosity_error()
