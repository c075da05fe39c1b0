"""UI responsiveness while a real run trains on the CPU, started from the workbench (in its own process).

The real ``WorkbenchApp`` is driven with Pilot (headless, 120x40; each frame is also turned into terminal
bytes, see uilib.FrameProbe). Before training, the panel keys F2..F6 are pressed and a word is typed into
the Predict input twice (first visits, then again), for reference. Then a real loop-engine run (random
small BERT, classification, one event per step so the chart and the bridge get the most traffic) is
started with ``s``; while it trains, the same keys are pressed twice more (a key counts only if the run
is still training), then the Train panel stays on screen until step 160, where the run is stopped. Each
key is timed until the frame that shows it; the event loop's lag is sampled every 10 ms. The same config
then trains headless, as ``tunebench run`` trains it (Runner in a thread of this process, no subscribers,
stopped at the same step), for the throughput reference. UI and headless runs alternate, three of each;
the ratio is the median over the three pairs of their training speeds (samples over training time, every
step after the first).

    python bench/ui_responsiveness.py            # ~2-3 minutes on 2 CPU cores
    python bench/ui_responsiveness.py --smoke
"""

from __future__ import annotations

import asyncio
import functools
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import (
    Spread,
    machine_line,
    make_bert,
    median,
    parse_args,
    print_table,
    quiet_transformers,
    ratio_line,
    scratch_dir,
)
from uilib import FrameProbe, LagSampler

KEY_GOAL_MS = 25.0
LAG_GOAL_MS = 5.0
THROUGHPUT_GOAL = 0.95
PANEL_KEYS = (("f2", "data"), ("f3", "config"), ("f5", "predict"), ("f6", "runs"), ("f4", "train"))
TYPED = "wonderful"
PACE_SECONDS = 0.15  # a fast typist; keys are not fired back to back
STEPS = 160  # training steps measured in each run (the run is stopped there): the key rounds end well before
#: Steps of the information-only run with a torch thread per core (~4x slower a step here): enough for its speed.
EVERY_CORE_STEPS = 40
PAIRS = 3  # UI run, headless run, three times: whole runs on this VM differ by up to 20%


@dataclass
class KeyTimes:
    """Key -> frame times of one phase, in ms."""

    panel_ms: list[float] = field(default_factory=list)
    by_panel_ms: dict[str, list[float]] = field(default_factory=dict)
    typing_ms: list[float] = field(default_factory=list)
    lag_ms: list[float] = field(default_factory=list)
    #: UI thread CPU from each panel key to the next key (PACE_SECONDS after its frame), in ms.
    panel_cpu_ms: list[float] = field(default_factory=list)

    @property
    def all_ms(self) -> list[float]:
        return self.panel_ms + self.typing_ms


@dataclass
class UiRun:
    #: Before the run starts: each panel's first visit, then a second round.
    idle_first: KeyTimes = field(default_factory=KeyTimes)
    idle_again: KeyTimes = field(default_factory=KeyTimes)
    #: While the run trains (what the goals are about).
    training: KeyTimes = field(default_factory=KeyTimes)
    samples_per_second: float = float("nan")
    #: The same, over the steps taken while the Train panel was only watched (after the key rounds).
    samples_per_second_watching: float = float("nan")
    frames: int = 0
    #: Share of one core the UI (main) thread used while the Train panel just showed the run, and the event
    #: loop's wake-ups per second then (the lag probe's included).
    ui_cpu_watching: float = float("nan")
    wakeups_watching: float = float("nan")
    #: The same over the whole training phase (key rounds, then watching): threads.py reproduces this load.
    ui_cpu_training: float = float("nan")
    wakeups_training: float = float("nan")


def run_config(model_dir: Path, runs_dir: Path, smoke: bool, threads: int | None) -> Any:
    from engine.config import from_dict

    return from_dict(
        {
            "task": "classification",
            "engine": "loop",
            "model": {"name_or_path": str(model_dir)},
            "data": {
                "source": "reviews-sample",
                "eval_split": "test",
                "train_size": 32 if smoke else 480,
                "eval_size": 32 if smoke else 64,
                "max_length": 64,
            },
            "train": {
                "num_train_epochs": 1 if smoke else 6,
                "per_device_train_batch_size": 16,
                "logging_steps": 1,
                "device": "cpu",
                "save_strategy": "no",
                "torch_threads": threads,
            },
            "output": {"runs_dir": str(runs_dir)},
        }
    )


def step_throughput(events: list[Any], last: int) -> float:
    """Samples/s over the run's steps, the first one (warm-up) left out: samples over training time, so the
    steps slowed by keys count as much as they cost (a median of the steps would hide them while they are
    fewer than half). Each step is one window of the same batch size: the harmonic mean of their speeds."""
    speeds = [e.samples_per_second for e in events if type(e).__name__ == "StepLogged" and e.step <= last]
    return statistics.harmonic_mean(speeds[1:] if len(speeds) > 1 else speeds)


def last_step(app: Any) -> int:
    step = app.train_panel.last_step
    return int(step.step) if step is not None else 0


def panel_shown(app: Any, panel: str) -> bool:
    return bool(app.active_panel == panel)


def input_holds(field_: Any, text: str) -> bool:
    return bool(field_.value == text)


async def key_round(app: Any, probe: FrameProbe, into: KeyTimes, training: bool) -> None:
    """Each panel key once, then the word typed into the Predict input, a key at a time. With ``training``,
    a key counts only if the run was still training when it was pressed."""
    from textual.widgets import Input

    def counts() -> bool:
        return not training or app.controller.state == "training"

    for key, panel in PANEL_KEYS:
        counted = counts()
        cpu = time.thread_time()
        took = await probe.time_key(key, functools.partial(panel_shown, app, panel))
        await asyncio.sleep(PACE_SECONDS)
        if counted:
            into.panel_ms.append(took)
            into.by_panel_ms.setdefault(f"{key} {panel}", []).append(took)
            into.panel_cpu_ms.append((time.thread_time() - cpu) * 1000)
    # to the Predict input and back to Train, posted like the timed keys (Pilot.press walks every widget)
    await probe.time_key("f5", functools.partial(panel_shown, app, "predict"))
    await asyncio.sleep(PACE_SECONDS)
    field_ = app.query_one("#predict-input", Input)
    field_.value = ""
    # The clearing is the bench's, not a typist's: its frame is let out first, or the first key would wait
    # for the next frame slot after it (Textual draws at most 60 frames a second) and time the bench.
    await asyncio.sleep(PACE_SECONDS)
    for n in range(1, len(TYPED) + 1):
        counted = counts()
        took = await probe.time_key(TYPED[n - 1], functools.partial(input_holds, field_, TYPED[:n]))
        if counted:
            into.typing_ms.append(took)
        await asyncio.sleep(PACE_SECONDS)
    await probe.time_key("f4", functools.partial(panel_shown, app, "train"))
    await asyncio.sleep(PACE_SECONDS)


def count_wakeups() -> Callable[[], int]:
    """Count the running event loop's wake-ups from now on: the times its selector was asked to wait (a pass
    with callbacks already due polls it without waiting, and is not one). Call the result for the count so
    far, which also stops counting."""
    selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
    select = selector.select
    count = 0

    def counted(timeout: float | None = None) -> Any:
        nonlocal count
        if timeout is None or timeout > 0:
            count += 1
        return select(timeout)

    selector.select = counted

    def stop() -> int:
        selector.select = select
        return count

    return stop


async def drive_app(cfg: Any, config_path: Path, rounds: int, steps: int) -> UiRun:
    from engine.runs import read_events
    from tui.app import WorkbenchApp

    app = WorkbenchApp(cfg, str(config_path), initial_panel="train")
    result = UiRun()
    async with app.run_test(size=(120, 40)) as pilot:
        probe = FrameProbe(app)
        lag = LagSampler()
        lag.start()
        for phase in (result.idle_first, result.idle_again):
            lag.lags_ms = phase.lag_ms
            lag.recording = True
            await key_round(app, probe, phase, training=False)
            lag.recording = False
        await pilot.press("s")
        await app.controller.wait_for("training", "failed", "finished")
        lag.lags_ms = result.training.lag_ms
        lag.recording = True
        train_cpu, train_wall, wakeups = time.thread_time(), time.perf_counter(), count_wakeups()
        for _ in range(rounds):
            await key_round(app, probe, result.training, training=True)
        # then the user watches the Train panel (chart, progress, epochs) up to the last counted step
        training_wakeups = wakeups()
        cpu, wall, watch_start, wakeups = time.thread_time(), time.perf_counter(), time.time(), count_wakeups()
        while app.controller.state == "training" and last_step(app) < steps:
            await asyncio.sleep(0.5)  # steps reach the panel twice a second: a faster poll only wakes the loop
        watched_wakeups = wakeups()
        watched = time.perf_counter() - wall
        if watched >= 1.0:
            result.ui_cpu_watching = (time.thread_time() - cpu) / watched
            result.wakeups_watching = watched_wakeups / watched
        train_wall = time.perf_counter() - train_wall
        result.ui_cpu_training = (time.thread_time() - train_cpu) / train_wall
        result.wakeups_training = (training_wakeups + watched_wakeups) / train_wall
        if app.controller.state == "training":
            await pilot.press("x")  # stop: enough steps measured; the run saves and ends
        state = await app.controller.wait_for("finished", "stopped", "failed")
        lag.recording = False
        await lag.stop()
        result.frames = probe.frames
        if state == "failed":
            raise RuntimeError(f"the run under the UI ended {state}: {app.train_panel.error}")
        assert app.controller.run_dir is not None
        events = read_events(Path(app.controller.run_dir) / "events.jsonl")
        result.samples_per_second = step_throughput(events, steps)  # the steps the headless runs take
        watched_steps = [e for e in events if type(e).__name__ == "StepLogged" and e.time >= watch_start]
        if len(watched_steps) > 2:
            result.samples_per_second_watching = step_throughput(watched_steps, steps)
    return result


def with_workbench_threads(cfg: Any) -> Any:
    """``cfg`` with the torch threads a workbench run of it trains with."""
    import dataclasses

    from tui.bridge import torch_threads_beside_the_ui

    threads = cfg.train.torch_threads or torch_threads_beside_the_ui()
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, torch_threads=threads))


async def headless(cfg: Any, steps: int) -> float:
    """The same run with no UI, stopped after the same number of steps."""
    from engine.runner import Runner

    events: list[Any] = []

    def stop_at(event: Any) -> None:
        events.append(event)
        if type(event).__name__ == "StepLogged" and event.step >= steps:
            runner.stop()

    runner = Runner(cfg, subscribers=[stop_at])
    runner.start()
    outcome = await asyncio.to_thread(runner.join)
    if outcome is None or outcome.status not in ("finished", "stopped"):
        raise RuntimeError(f"headless run failed: {outcome}")
    return step_throughput(events, steps)


def main() -> None:
    args = parse_args(
        __doc__ or "",
        [
            ("--threads", {"type": int, "default": None, "help": "train.torch_threads for both runs (default: null)"}),
            (
                "--rounds",
                {
                    "type": int,
                    "default": 2,
                    "help": "key rounds while training (default 2; 0: the panel is only watched)",
                },
            ),
            ("--pairs", {"type": int, "default": PAIRS, "help": f"UI and headless runs (default {PAIRS})"}),
        ],
    )
    quiet_transformers()
    print(machine_line())
    ui_runs: list[UiRun] = []
    headless_speeds: list[float] = []
    every_core = float("nan")
    with scratch_dir("ui") as tmp:
        os.chdir(tmp)
        from engine.config import save_config

        model_dir = make_bert(tmp / "model", "tiny" if args.smoke else "small", max_positions=128)
        cfg = run_config(model_dir, tmp / "runs", args.smoke, args.threads)
        config_path = tmp / "config.yaml"
        save_config(cfg, config_path)
        steps = 2 if args.smoke else STEPS
        print(
            f"run: random BERT ({'tiny' if args.smoke else 'small'}), reviews-sample, batch 16, max_length 64, an "
            f"event every step, measured over {steps} steps; torch_threads {cfg.train.torch_threads} (null: the "
            f"engine's default)"
        )
        asyncio.run(headless(run_config(model_dir, tmp / "runs", True, args.threads), 2))  # warm-up
        for _ in range(1 if args.smoke else args.pairs):
            ui_runs.append(
                asyncio.run(drive_app(cfg, config_path, rounds=1 if args.smoke else args.rounds, steps=steps))
            )
            # the same run without the UI, with the torch threads the workbench gives its runs
            headless_speeds.append(asyncio.run(headless(with_workbench_threads(cfg), steps)))
        if not args.smoke and cfg.train.torch_threads is None:  # what the headless CLI would use on its own
            every_core = asyncio.run(
                headless(run_config(model_dir, tmp / "runs", False, os.cpu_count() or 1), EVERY_CORE_STEPS)
            )
        os.chdir(Path(__file__).resolve().parent.parent)
    rows = []
    for phase, pick in (
        ("idle, first visit", lambda r: r.idle_first),
        ("idle, again", lambda r: r.idle_again),
        ("while training", lambda r: r.training),
    ):
        times = [pick(r) for r in ui_runs]
        for measure, values in (
            ("panel key -> frame", [x for t in times for x in t.panel_ms]),
            ("typed key -> frame", [x for t in times for x in t.typing_ms]),
            ("loop lag (10 ms ticks)", [x for t in times for x in t.lag_ms]),
        ):
            spread = Spread.of(values)
            rows.append([phase, measure, spread.n, spread.p50, spread.p95, spread.max])
    print_table(["phase", "measure", "n", "p50 ms", "p95 ms", "max ms"], rows)
    per_key: dict[str, list[str]] = {}
    for r in ui_runs:
        for phase, keyed in (("first", r.idle_first), ("again", r.idle_again), ("training", r.training)):
            for name, values in keyed.by_panel_ms.items():
                per_key.setdefault(name, []).append(f"{phase} " + " ".join(f"{v:.0f}" for v in values))
    print_table(["panel key", "each press -> frame, ms"], [[k, " | ".join(v)] for k, v in per_key.items()])
    cpu_again = median([x for r in ui_runs for x in r.idle_again.panel_cpu_ms])
    print(
        f"UI thread CPU per panel key before any run (from the key to the next, {PACE_SECONDS:.2f} s after its frame): "
        f"median {cpu_again:.0f} ms"
    )
    keys = Spread.of([x for r in ui_runs for x in r.training.all_ms])
    lag = Spread.of([x for r in ui_runs for x in r.training.lag_ms])
    ui_speed = median([r.samples_per_second for r in ui_runs])
    head_speed = median(headless_speeds)
    # each UI run against the headless run right after it: whole runs drift on this VM, pairs less so
    pair_ratios = [r.samples_per_second / h for r, h in zip(ui_runs, headless_speeds, strict=True)]
    print_table(
        ["training", "samples/s", "median"],
        [
            ["with the UI", " ".join(f"{r.samples_per_second:.1f}" for r in ui_runs), ui_speed],
            ["headless", " ".join(f"{s:.1f}" for s in headless_speeds), head_speed],
        ],
    )
    chosen = with_workbench_threads(cfg).train.torch_threads
    print(f"torch threads in both kinds of run: {chosen} ({os.cpu_count()} cores)")
    if every_core == every_core:
        print(
            f"headless with one torch thread per core (the CLI's default; {EVERY_CORE_STEPS} steps): {every_core:.1f} "
            f"samples/s; the workbench "
            f"leaves a core to the UI, so its runs train at {ui_speed / every_core:.2f}x that on this machine"
        )
    print(f"frames composed during the UI runs: {sum(r.frames for r in ui_runs)}")
    print(
        "UI thread CPU over the training phase (key rounds, then watching): "
        + " ".join(f"{r.ui_cpu_training:.1%}" for r in ui_runs)
        + " of a core; event-loop wake-ups a second (the 10 ms lag probe's about 100 of them): "
        + " ".join(f"{r.wakeups_training:.0f}" for r in ui_runs)
    )
    print(
        "UI thread CPU while the Train panel shows the run (no keys): "
        + " ".join(f"{r.ui_cpu_watching:.1%}" for r in ui_runs)
        + " of a core; wake-ups a second: "
        + " ".join(f"{r.wakeups_watching:.0f}" for r in ui_runs)
    )
    only_watched = median([r.samples_per_second_watching for r in ui_runs])
    print(
        f"with the UI, over the steps while the Train panel is only watched (after the key rounds): "
        f"{only_watched:.1f} samples/s, {only_watched / head_speed:.3f} of headless"
    )
    ratio_line("ui_key_p95_ms", keys.p95, KEY_GOAL_MS, higher_is_better=False)
    ratio_line("ui_loop_lag_p95_ms", lag.p95, LAG_GOAL_MS, higher_is_better=False)
    print(
        "with the UI / headless, each pair: "
        + " ".join(f"{x:.4f}" for x in pair_ratios)
        + f"; medians {ui_speed:.1f} / {head_speed:.1f} = {ui_speed / head_speed:.3f}"
    )
    ratio_line("ui_training_vs_headless", median(pair_ratios), THROUGHPUT_GOAL)


if __name__ == "__main__":
    main()
