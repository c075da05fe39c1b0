"""Training throughput for torch.set_num_threads(1) and (2), headless and beside a UI-like event loop.

The workbench trains in a worker thread of the same process as the Textual app. This bench trains the same
model in a worker thread for each thread count, alternating 1 2 1 2, in two settings:

* headless: nothing else runs;
* beside a UI: the main thread runs an asyncio loop that wakes every 10 ms, records how late it woke
  (loop lag) and holds the GIL for 0.5 ms per tick (progress and chart updates), plus 50 ms every half
  second (a panel switch re-renders the screen), about 15% of a core: what bench/ui_responsiveness.py
  measures of the real workbench, with a panel switch twice a second throughout;
* main thread: the same training called on the main thread, as a hand-written script does (for the
  baselines of the other benches, which train in a worker thread like every Tunebench front).

The closing ratio is throughput beside the UI over headless throughput, at the thread count of a run started
from the workbench with ``train.torch_threads`` null (every core but one, ``tui.bridge.leave_a_core_for_the_ui``).

    python bench/threads.py            # ~25 seconds on 2 CPU cores
    python bench/threads.py --smoke
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib import (
    SAMPLES,
    Spread,
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

GOAL = 0.95
TICK_SECONDS = 0.010
#: The UI-like load, from what bench/ui_responsiveness.py measures of the real workbench on this machine: the
#: Train panel showing a run keeps the UI thread busy 5% of the time; a panel key costs it about 50 ms.
RENDER_SECONDS = 0.0005
BURST_SECONDS = 0.050
BURST_EVERY_TICKS = 50  # a user switching panels twice a second, throughout the run


@dataclass
class Trial:
    threads: int
    setting: str  # "headless" | "beside UI" | "main thread"
    samples_per_second: float
    lag_ms: Spread | None


def batches(model_dir: Path, count: int, batch_size: int, max_length: int) -> list[dict[str, Any]]:
    """Collated batches of real review texts, built once so every trial trains on the same tensors."""
    import datasets

    from engine.data import build_collator, tokenize
    from engine.models import load_tokenizer

    tokenizer = load_tokenizer(str(model_dir))
    raw = datasets.load_dataset("json", data_files=str(SAMPLES / "reviews-sample" / "train.jsonl"))["train"]
    raw = raw.select(range(count * batch_size)).map(lambda b: {"labels": [v - 1 for v in b["label"]]}, batched=True)
    ds = tokenize(raw.remove_columns("label"), tokenizer, "text", max_length, task="classification")
    collate = build_collator("classification", tokenizer)
    return [collate([ds[i] for i in range(k * batch_size, (k + 1) * batch_size)]) for k in range(count)]


def train(model_dir: Path, data: list[dict[str, Any]], threads: int) -> float:
    """Train over ``data`` once in the calling thread with ``threads`` intra-op threads; samples per second."""
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=5)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    start = time.perf_counter()
    for batch in data:
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return sum(len(b["labels"]) for b in data) / (time.perf_counter() - start)


async def ui_loop(done: threading.Event, lags: list[float]) -> None:
    """Wake every tick, record the lag, then busy the GIL with pure Python as rendering does."""
    loop = asyncio.get_running_loop()
    ticks = 0
    while not done.is_set():
        due = loop.time() + TICK_SECONDS
        await asyncio.sleep(TICK_SECONDS)
        lags.append(max(0.0, loop.time() - due) * 1000)
        ticks += 1
        until = time.perf_counter() + (BURST_SECONDS if ticks % BURST_EVERY_TICKS == 0 else RENDER_SECONDS)
        while time.perf_counter() < until:
            pass


def trial(model_dir: Path, data: list[dict[str, Any]], threads: int, beside_ui: bool) -> Trial:
    """Train in a worker thread, with or without the UI-like loop on the main thread."""
    result: list[float] = []
    done = threading.Event()

    def work() -> None:
        try:
            result.append(train(model_dir, data, threads))
        finally:
            done.set()

    worker = threading.Thread(target=work, name="bench-train")
    lags: list[float] = []
    worker.start()
    if beside_ui:
        asyncio.run(ui_loop(done, lags))
    worker.join()
    return Trial(threads, "beside UI" if beside_ui else "headless", result[0], Spread.of(lags) if lags else None)


def engine_default_threads() -> int:
    """The thread count a workbench run trains with when ``train.torch_threads`` is null (on a fresh thread,
    as the engine's worker is)."""
    import torch

    from engine.models import set_torch_threads
    from tui.bridge import leave_a_core_for_the_ui

    leave_a_core_for_the_ui()
    set_torch_threads(None)
    return int(torch.get_num_threads())


def main() -> None:
    args = parse_args(__doc__ or "")
    quiet_transformers()
    print(machine_line())
    import torch

    default_threads = torch.get_num_threads()
    engine_default = run_in_thread(engine_default_threads)
    trials: list[Trial] = []
    with scratch_dir("threads") as tmp:
        model_dir = make_bert(tmp / "model", "tiny" if args.smoke else "small", max_positions=128)
        data = batches(model_dir, 2 if args.smoke else 12, 16, 64)
        print(f"model: random BERT, reviews-sample, {len(data)} batches of 16, max_length 64")
        train(model_dir, data[:2], default_threads)  # untimed warm-up
        for _ in range(1 if args.smoke else 2):
            for beside_ui in (False, True):
                for threads in (1, 2):
                    trials.append(trial(model_dir, data, threads, beside_ui))
            for threads in (1, 2):
                trials.append(Trial(threads, "main thread", train(model_dir, data, threads), None))
                torch.set_num_threads(default_threads)
    print_table(
        ["threads", "setting", "samples/s", "loop lag p50 ms", "p95 ms", "max ms"],
        [
            [
                t.threads,
                t.setting,
                t.samples_per_second,
                t.lag_ms.p50 if t.lag_ms else None,
                t.lag_ms.p95 if t.lag_ms else None,
                t.lag_ms.max if t.lag_ms else None,
            ]
            for t in trials
        ],
    )

    def speed(threads: int, setting: str) -> float:
        return median([t.samples_per_second for t in trials if t.threads == threads and t.setting == setting])

    for threads in (1, 2):
        lag95 = median([t.lag_ms.p95 for t in trials if t.threads == threads and t.lag_ms])
        print(
            f"{threads} thread(s): headless {speed(threads, 'headless'):.1f} samples/s, beside UI "
            f"{speed(threads, 'beside UI'):.1f} samples/s, loop lag p95 {lag95:.1f} ms; "
            f"on the main thread {speed(threads, 'main thread'):.1f} samples/s"
        )
    print(f"workbench default when train.torch_threads is null: {engine_default} thread(s)")
    ratio_line(
        "threads_default_beside_ui_vs_headless",
        speed(engine_default, "beside UI") / speed(engine_default, "headless"),
        GOAL,
    )


if __name__ == "__main__":
    main()
