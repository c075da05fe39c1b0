"""Training throughput for torch.set_num_threads(1) and (2), headless and beside a UI-like event loop, with the
training in a thread of the UI's process or in a child process.

The workbench trains in a process of its own (engine.detached); a front that trains in a thread of its own process
shares the interpreter lock with it. This bench trains the same model for each thread count, in turn, three
times, in these settings:

* headless: the main thread runs an asyncio loop that only wakes every 10 ms and records how late it woke
  (the loop lag probe of bench/ui_responsiveness.py);
* beside a UI: the same loop and probe, plus a load shaped on what bench/ui_responsiveness.py prints of the
  real workbench while a run trains there: the Train panel showing the run takes 3.7-4.3% of a core with
  ~104 wake-ups a second, ~100 of them the probe's (here: 8 ms of Python work 4 times a second, 3.2%); a
  panel key takes 40 ms of the UI thread (here: 40 ms of work every 0.9 s); with the probe, about the
  8.1-8.4% of a core that bench measures over its training phase (key rounds, then watching). The work is a
  fixed amount of Python, so a training thread that holds the interpreter lock stretches it as it
  stretches a real frame; the wall time of each panel key's worth is reported, and its time alone.
* main thread: the same training called on the main thread, as a hand-written script does (for the
  baselines of the other benches, which train in a worker thread like the Tunebench CLI).

Each setting runs with the training in a worker thread of this process ("thread") and in a child process
("child", warmed up on two batches first, as this process is). The closing ratio is throughput beside the
UI over headless throughput with the training in a child process, as the workbench runs it: the median over
the three pairs of trials (run back to back, in alternating order), at the thread count of a run started
from the workbench with ``train.torch_threads`` null (every core but one,
``tui.bridge.torch_threads_beside_the_ui``).

    python bench/threads.py            # ~2 minutes on 2 CPU cores
    python bench/threads.py --smoke
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
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
from uilib import LagSampler

GOAL = 0.95
#: The UI-like load, from what bench/ui_responsiveness.py measures of the real workbench on this machine.
RENDER_EVERY_SECONDS = 0.25  # the workbench's own wake-ups while the Train panel shows a run
RENDER_SECONDS = 0.008
BURST_SECONDS = 0.040  # UI thread time per panel key
BURST_EVERY_SECONDS = 0.9


@dataclass
class Trial:
    threads: int
    setting: str  # "headless" | "beside UI" | "main thread"
    where: str  # "thread" | "child" | "main thread"
    samples_per_second: float
    lag_ms: Spread | None
    #: Wall time of each panel key's worth of UI work, beside UI only.
    keys_ms: Spread | None = None


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


def python_work(units: int) -> int:
    """Pure Python, as rendering is: a fixed amount of work, however long the interpreter lock makes it take."""
    total = 0
    for i in range(units):
        x = i & 1023  # the same small numbers throughout: every unit costs the same
        total ^= x * x
    return total


def units_per_ms() -> float:
    """How much of ``python_work`` one millisecond holds on this machine, nothing else running."""
    units = 20_000
    best = min(timed(functools.partial(python_work, units)) for _ in range(5))
    return units / (best * 1000)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


async def ui_load(done: threading.Event, rate: float, keys_ms: list[float]) -> None:
    """Work the UI thread as the workbench does: a short render at every wake-up, a panel key's worth of
    Python now and then (fixed work, ``rate`` units a millisecond, so a training thread that takes the lock
    stretches it, as it stretches a real frame); the wall time of each panel key goes to ``keys_ms``."""
    loop = asyncio.get_running_loop()
    next_burst = loop.time() + BURST_EVERY_SECONDS
    render, burst = round(RENDER_SECONDS * 1000 * rate), round(BURST_SECONDS * 1000 * rate)
    while not done.is_set():
        await asyncio.sleep(RENDER_EVERY_SECONDS)
        if loop.time() >= next_burst:
            next_burst += BURST_EVERY_SECONDS
            keys_ms.append(timed(functools.partial(python_work, burst)) * 1000)
        else:
            python_work(render)


async def event_loop(done: threading.Event, lags: list[float], ui: tuple[float, list[float]] | None) -> None:
    """The lag probe into ``lags`` and, with ``ui``, the UI-like load, until the training sets ``done``."""
    probe = LagSampler()
    probe.lags_ms, probe.recording = lags, True
    probe.start()
    await asyncio.gather(asyncio.to_thread(done.wait), *([ui_load(done, *ui)] if ui is not None else []))
    await probe.stop()


def train_in_child(model_dir: Path, data: list[dict[str, Any]], threads: int, out: Connection) -> None:
    """The child process of a "child" trial: warm up on two batches, then train and send the speed."""
    quiet_transformers()
    train(model_dir, data[:2], threads)
    out.send(train(model_dir, data, threads))


def trial(model_dir: Path, data: list[dict[str, Any]], threads: int, ui_rate: float | None, where: str) -> Trial:
    """Train in a worker thread or a child process while the main thread runs the lag probe, with or without
    the UI-like load."""
    result: list[float] = []
    done = threading.Event()

    def work() -> None:
        try:
            if where == "thread":
                result.append(train(model_dir, data, threads))
                return
            spawn = multiprocessing.get_context("spawn")
            receive, send = spawn.Pipe(duplex=False)
            child = spawn.Process(target=train_in_child, args=(model_dir, data, threads, send))
            child.start()
            result.append(receive.recv())
            child.join()
        finally:
            done.set()

    worker = threading.Thread(target=work, name="bench-train")
    lags: list[float] = []
    keys: list[float] = []
    worker.start()
    asyncio.run(event_loop(done, lags, None if ui_rate is None else (ui_rate, keys)))
    worker.join()
    setting = "headless" if ui_rate is None else "beside UI"
    return Trial(threads, setting, where, result[0], Spread.of(lags), Spread.of(keys) if keys else None)


def engine_default_threads() -> int:
    """The thread count a workbench run trains with when ``train.torch_threads`` is null."""
    from tui.bridge import torch_threads_beside_the_ui

    return torch_threads_beside_the_ui()


def main() -> None:
    args = parse_args(__doc__ or "", [("--rounds", {"type": int, "default": 3, "help": "rounds (default 3)"})])
    quiet_transformers()
    print(machine_line())
    import torch

    default_threads = torch.get_num_threads()
    engine_default = run_in_thread(engine_default_threads)
    trials: list[Trial] = []
    with scratch_dir("threads") as tmp:
        model_dir = make_bert(tmp / "model", "tiny" if args.smoke else "small", max_positions=128)
        data = batches(model_dir, 2 if args.smoke else 24, 16, 64)  # ~3 s a trial: four panel-key bursts or more
        print(f"model: random BERT, reviews-sample, {len(data)} batches of 16, max_length 64")
        train(model_dir, data[:2], default_threads)  # untimed warm-up
        rate = units_per_ms()
        alone = timed(functools.partial(python_work, round(BURST_SECONDS * 1000 * rate))) * 1000
        print(f"a panel key's worth of UI work, nothing else running: {alone:.1f} ms")
        for round_ in range(1 if args.smoke else args.rounds):
            for where in ("thread", "child"):
                for threads in (1, 2):
                    for ui_rate in (None, rate) if round_ % 2 == 0 else (rate, None):  # alternate which goes first
                        trials.append(trial(model_dir, data, threads, ui_rate, where))
            for threads in (1, 2):
                trials.append(Trial(threads, "main thread", "main thread", train(model_dir, data, threads), None))
                torch.set_num_threads(default_threads)
    print_table(
        [
            "threads",
            "setting",
            "training in",
            "samples/s",
            "loop lag p50 ms",
            "p95 ms",
            "max ms",
            "panel key p50 ms",
            "max ms",
        ],
        [
            [
                t.threads,
                t.setting,
                t.where,
                t.samples_per_second,
                t.lag_ms.p50 if t.lag_ms else None,
                t.lag_ms.p95 if t.lag_ms else None,
                t.lag_ms.max if t.lag_ms else None,
                t.keys_ms.p50 if t.keys_ms else None,
                t.keys_ms.max if t.keys_ms else None,
            ]
            for t in trials
        ],
    )

    def of(threads: int, setting: str, where: str) -> list[Trial]:
        return [t for t in trials if t.threads == threads and t.setting == setting and t.where == where]

    def speed(threads: int, setting: str, where: str) -> float:
        return median([t.samples_per_second for t in of(threads, setting, where)])

    def pairs(threads: int, where: str) -> list[float]:
        """Beside UI over headless, trial by trial (each pair ran back to back)."""
        return [
            u.samples_per_second / h.samples_per_second
            for u, h in zip(of(threads, "beside UI", where), of(threads, "headless", where), strict=True)
        ]

    for where in ("thread", "child"):
        for threads in (1, 2):
            lag95 = {
                s: median([t.lag_ms.p95 for t in of(threads, s, where) if t.lag_ms]) for s in ("headless", "beside UI")
            }
            print(
                f"training in a {where}, {threads} torch thread(s): headless {speed(threads, 'headless', where):.1f} "
                f"samples/s, beside UI {speed(threads, 'beside UI', where):.1f} samples/s (pairs "
                f"{' '.join(f'{x:.3f}' for x in pairs(threads, where))}); loop lag p95 {lag95['headless']:.1f} ms "
                f"headless, {lag95['beside UI']:.1f} ms beside UI"
            )
    print(
        "on the main thread: "
        + ", ".join(f"{t} torch thread(s) {speed(t, 'main thread', 'main thread'):.1f} samples/s" for t in (1, 2))
    )
    print(f"workbench default when train.torch_threads is null: {engine_default} thread(s)")
    ratio_line("child_run_beside_ui_vs_headless", median(pairs(engine_default, "child")), GOAL)


if __name__ == "__main__":
    main()
