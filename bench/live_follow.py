"""Following a run through its folder (engine.live, engine.detached): how fast a viewer shows a run, and what
viewers cost it.

1. Attach: a finished run whose events.jsonl holds 100,000 StepLogged events (written here), attached by the
   real WorkbenchApp (Pilot, 120x40): seconds from the attach to the first frame composed while the Train
   panel holds the whole curve and the run's end. Goal: at most 1 s. Printed before it: the time to read and
   rebuild that history alone (``EventFollower.poll``, median of nine).
2. A real detached run (small random BERT, classification, CPU, one event per step) followed by two viewers
   (``DetachedRun.attach``, each in a thread, as ``tunebench follow`` and the workbench follow): each viewer's
   CPU, as a share of one core, while it follows (goal: at most 2 %); and pause -> Paused seen by a viewer, ten
   times: the p95 minus the run's step time (goal: at most 100 ms).
3. The same run with no viewer and with two, alternating, three pairs: training throughput with two viewers over
   none (goal: at least 0.97).

    python bench/live_follow.py                 # ~3 minutes on 2 CPU cores
    python bench/live_follow.py --attach-only   # part 1 alone (~30 s), for before/after comparisons
    python bench/live_follow.py --smoke
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from benchlib import machine_line, make_bert, parse_args, percentile, print_table, ratio_line, scratch_dir
from uilib import FrameProbe

ATTACH_GOAL_SECONDS = 1.0
VIEWER_CPU_GOAL = 0.02
PAUSE_GOAL_SECONDS = 0.1
VIEWERS_GOAL = 0.97


def run_config(model_dir: Path, runs_dir: Path, train_size: int, epochs: int) -> Any:
    from engine.config import from_dict

    return from_dict(
        {
            "task": "classification",
            "model": {"name_or_path": str(model_dir)},
            "data": {
                "source": "reviews-sample",
                "eval_split": None,
                "eval_fraction": None,
                "train_size": train_size,
                "max_length": 64,
            },
            "train": {
                "num_train_epochs": epochs,
                "per_device_train_batch_size": 16,
                "logging_steps": 1,
                "device": "cpu",
                "save_strategy": "no",
            },
            "output": {"runs_dir": str(runs_dir)},
        }
    )


# -- 1. attach ----------------------------------------------------------------------------------------------------


def write_long_run(cfg: Any, steps: int) -> Path:
    """A finished run folder whose events.jsonl holds ``steps`` StepLogged events, three epochs of them."""
    from engine.events import EpochEnded, Evaluated, RunFinished, RunStarted, StepLogged
    from engine.runs import create_run_dir

    run = create_run_dir(cfg)
    per_epoch = steps // 3
    started = RunStarted(
        run_dir=str(run.path),
        run_name=run.name,
        task="classification",
        engine="loop",
        model="small-bert",
        device="cpu",
        precision="fp32",
        num_parameters=4_700_000,
        num_train_samples=steps * 16 // 3,
        num_eval_samples=64,
        num_epochs=3,
        total_steps=steps,
        batch_size=16,
        label_names=["1", "2", "3", "4", "5"],
    )
    with open(run.events_path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(started.to_dict()) + "\n")
        for step in range(1, steps + 1):
            logged = StepLogged(
                step=step,
                total_steps=steps,
                epoch=step / per_epoch,
                loss=2.0 / (1 + step / 1000),
                learning_rate=5e-5 * (1 - step / steps),
                samples_per_second=100.0,
                elapsed_seconds=step * 0.16,
                eta_seconds=(steps - step) * 0.16,
            )
            fh.write(json.dumps(logged.to_dict()) + "\n")
            if step % per_epoch == 0:
                epoch = step // per_epoch
                fh.write(json.dumps(EpochEnded(epoch=epoch, step=step, train_loss=1.0, duration_seconds=60).to_dict()))
                fh.write("\n" + json.dumps(Evaluated(epoch=epoch, step=step, eval_loss=1.1, accuracy=0.5).to_dict()))
                fh.write("\n")
        finished = RunFinished(status="finished", step=steps, duration_seconds=steps * 0.16, model_dir=None)
        fh.write(json.dumps(finished.to_dict()) + "\n")
    run.write_summary({"status": "finished", "task": "classification", "model": "small-bert"})
    return run.path


def read_seconds(run_path: Path, times: int) -> list[float]:
    """Seconds to read and rebuild the run's whole history (``EventFollower.poll``, the attach's reading part)."""
    from engine.live import EventFollower

    seconds = []
    for _ in range(times):
        follower = EventFollower(run_path / "events.jsonl")
        start = time.perf_counter()
        follower.poll()
        seconds.append(time.perf_counter() - start)
        follower.close()
    return seconds


async def attach_seconds(cfg: Any, config_path: Path, run_path: Path, steps: int) -> float:
    from tui.app import WorkbenchApp

    app = WorkbenchApp(cfg, str(config_path), initial_panel="train")
    async with app.run_test(size=(120, 40)) as pilot:
        await app.panels_mounted.wait()
        await pilot.pause()
        probe = FrameProbe(app)

        def shown() -> bool:
            return app.controller.state == "finished" and len(app.train_panel.curves.steps) == steps

        # Up to the first frame that shows it, as the terminal would get it; Pilot's pause also waits for every
        # widget's queue and for the process to go idle, which is the bench's time, not the user's (perf-log 41).
        took_ms = await probe.time_action(lambda: app.training.attach_run(run_path), shown, timeout=120)
        return took_ms / 1000


# -- 2 and 3. a real run and its viewers -------------------------------------------------------------------------


class Viewer:
    """A front following the run in a thread: its CPU while following, and when it saw each Paused."""

    def __init__(self, run_path: Path) -> None:
        from engine.detached import DetachedRun

        self.paused = threading.Event()
        self.resumed = threading.Event()
        self.paused_at: list[float] = []
        self.handle = DetachedRun.attach(run_path, subscribers=[self._see])
        self.cpu_share = float("nan")
        self.thread = threading.Thread(target=self._follow, daemon=True)
        self.thread.start()

    def _see(self, event: Any) -> None:
        if event.type == "Paused":
            self.paused_at.append(time.perf_counter())
            self.paused.set()
        elif event.type == "Resumed":
            self.resumed.set()

    def _follow(self) -> None:
        cpu, wall = time.thread_time(), time.perf_counter()
        self.handle.run()
        self.cpu_share = (time.thread_time() - cpu) / (time.perf_counter() - wall)


def train_detached(cfg: Any, viewers: int, pauses: int) -> tuple[float, float, list[float], list[float]]:
    """Start ``cfg`` detached with ``viewers`` following it; pause and resume it ``pauses`` times. Returns the
    run's training throughput (samples/s), its step time, each viewer's CPU share and the pause latencies."""
    from engine.detached import start_detached
    from engine.live import send_command
    from engine.runs import read_events

    run, _pid = start_detached(cfg)
    followers = [Viewer(run.path) for _ in range(viewers)]
    latencies: list[float] = []
    for _ in range(pauses):
        time.sleep(0.3)
        watch = followers[0]
        watch.paused.clear()
        watch.resumed.clear()
        sent = time.perf_counter()
        send_command(run, "pause")
        if not watch.paused.wait(30):
            raise RuntimeError("a viewer never saw the pause")
        latencies.append(watch.paused_at[-1] - sent)
        send_command(run, "resume")
        watch.resumed.wait(30)
    while run.live_state() is not None:
        time.sleep(0.2)
    for viewer in followers:
        viewer.thread.join(30)
    logged = [e for e in read_events(run.events_path) if e.type == "StepLogged"][1:]  # the first warms up
    speeds = [e.samples_per_second for e in logged]
    throughput = statistics.harmonic_mean(speeds)
    step_seconds = statistics.median(cfg.train.per_device_train_batch_size / s for s in speeds)
    return throughput, step_seconds, [v.cpu_share for v in followers], latencies


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        [
            ("--attach-only", {"action": "store_true", "help": "measure the attach only"}),
            ("--pairs", {"type": int, "default": 3, "help": "training runs alone and with viewers (default 3)"}),
        ],
    )
    from benchlib import quiet_transformers

    quiet_transformers()
    steps = 3000 if args.smoke else 100_000
    print(machine_line())
    with scratch_dir("live") as tmp:
        model = make_bert(tmp / "model", "tiny" if args.smoke else "small")
        cfg = run_config(model, tmp / "runs", 64 if args.smoke else 320, 30 if args.smoke else 3)
        config_path = tmp / "config.yaml"
        config_path.write_text(cfg.to_yaml(), encoding="utf-8")

        long_run = write_long_run(cfg, steps)
        reads = read_seconds(long_run, 1 if args.smoke else 9)
        attach = [asyncio.run(attach_seconds(cfg, config_path, long_run, steps)) for _ in range(1 if args.smoke else 3)]
        if args.attach_only:
            print(f"reading its events.jsonl, ms (median of {len(reads)}): {statistics.median(reads) * 1000:.0f}")
            print(f"attach {steps:,} steps, s (each): " + " ".join(f"{s:.2f}" for s in attach))
            ratio_line("attach_100k_seconds", statistics.median(attach), ATTACH_GOAL_SECONDS, higher_is_better=False)
            return

        # long enough that every pause lands before the run's end
        longer = dataclasses.replace(
            cfg, train=dataclasses.replace(cfg.train, num_train_epochs=cfg.train.num_train_epochs * 4)
        )
        _speed, step_seconds, cpu, latencies = train_detached(longer, viewers=2, pauses=3 if args.smoke else 10)
        pairs = []
        for _ in range(1 if args.smoke else args.pairs):
            alone, *_ = train_detached(cfg, viewers=0, pauses=0)
            watched, *_ = train_detached(cfg, viewers=2, pauses=0)
            pairs.append((alone, watched))

    pause_p95 = percentile(latencies, 95)
    print_table(
        ["measure", "value"],
        [
            [f"reading its events.jsonl, ms (median of {len(reads)})", f"{statistics.median(reads) * 1000:.0f}"],
            [f"attach {steps:,} steps, s (each)", " ".join(f"{s:.2f}" for s in attach)],
            ["viewer CPU, % of a core (each)", " ".join(f"{c * 100:.2f}" for c in cpu)],
            ["step time, ms", f"{step_seconds * 1000:.0f}"],
            ["pause -> Paused seen, p95 ms", f"{pause_p95 * 1000:.0f}"],
            ["samples/s alone | with 2 viewers", "  ".join(f"{a:.1f} | {w:.1f}" for a, w in pairs)],
        ],
    )
    ratio_line("attach_100k_seconds", statistics.median(attach), ATTACH_GOAL_SECONDS, higher_is_better=False)
    ratio_line("viewer_cpu_share", max(cpu), VIEWER_CPU_GOAL, higher_is_better=False)
    ratio_line("pause_p95_minus_step_s", pause_p95 - step_seconds, PAUSE_GOAL_SECONDS, higher_is_better=False)
    ratio_line("training_with_2_viewers", statistics.median(w / a for a, w in pairs), VIEWERS_GOAL)


if __name__ == "__main__":
    main()
