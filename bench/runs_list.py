"""The runs list at scale: 1,000 run folders, listed by ``tunebench runs`` and by the workbench's Runs panel.

The bench writes 1,000 finished run folders (config.yaml, a short events.jsonl and a summary.json with three
evaluations, as the engine leaves them; every tenth a sweep's run, the last two live-looking ones killed).

1. ``tunebench runs --runs-dir ...`` as a whole process (start-up included), five times: wall seconds, and
   whether torch was imported (it must not be: listing runs needs no model).
2. The Runs panel in the real app (headless, 120x40): from the panel's key, posted as a terminal posts it, to
   the first frame composed with the listed rows (``uilib.FrameProbe``), three times.
3. The panel's live refresh (every 2 s while a run trains or the queue waits), eight times: the wall time from
   the call to the new rows, and the UI thread's CPU time over a window holding the refresh and its frame,
   less the same window without a refresh (the listing runs in a worker thread).

    python bench/runs_list.py            # ~40 seconds on 2 CPU cores
    python bench/runs_list.py --smoke    # 100 runs
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import REPO_ROOT, machine_line, median, parse_args, print_table, ratio_line, scratch_dir

CLI_GOAL_SECONDS = 0.5
PANEL_GOAL_SECONDS = 0.2

# The CLI in a child, as a user runs it; it reports whether torch got imported (stderr, after the table).
CLI = """
import sys
from tui.launch import main
code = main(["runs", "--runs-dir", sys.argv[1]])
print("torch imported:", "torch" in sys.modules, file=sys.stderr)
sys.exit(code)
"""


def write_runs(root: Path, count: int) -> Any:
    from engine.config import from_dict

    cfg = from_dict({"output": {"runs_dir": str(root)}})
    text = cfg.to_yaml()
    for i in range(count):
        folder = root / f"2026{i // 100:02d}{i % 100:02d}-100000-classification-minilm-{i}"
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text(text, encoding="utf-8")
        (folder / "events.jsonl").write_text("", encoding="utf-8")
        if i >= count - 2:
            continue  # no summary, no lock: killed
        evaluations = [
            {"epoch": e, "step": 40 * e, "eval_loss": 1.0 / e, "accuracy": 0.5 + e / 10, "confusion": [[9, 3], [2, 10]]}
            for e in (1, 2, 3)
        ]
        summary = {
            "status": "finished",
            "task": "classification",
            "model": "minilm",
            "started": 1.7e9 + i * 60,
            "duration_seconds": 95.0,
            "best_metric": "accuracy",
            "best_value": 0.8,
            "peak_memory_mb": 512.0,
            "sweep": f"s{i // 10:03d}" if i % 10 == 0 else None,
            "evaluations": evaluations,
        }
        (folder / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return cfg


def cli_seconds(root: Path) -> tuple[float, bool]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CLI, str(root)], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    return time.perf_counter() - start, "torch imported: True" in done.stderr


async def panel_seconds(cfg: Any, count: int) -> float:
    from uilib import FrameProbe

    from tui.app import WorkbenchApp

    app = WorkbenchApp(cfg, "config.yaml", initial_panel="data")
    async with app.run_test(size=(120, 40)) as pilot:
        await app.panels_mounted.wait()
        await pilot.pause()
        probe = FrameProbe(app)
        # the first frame composed with every run listed; the key posted as a terminal posts it
        return await probe.time_key("f6", lambda: len(app.runs_panel.rows) >= count) / 1000


REFRESH_WINDOW_SECONDS = 0.3


async def refresh_costs(cfg: Any, count: int, times: int) -> tuple[list[float], list[float]]:
    from tui.app import WorkbenchApp

    async def ui_cpu_over_window(refresh: bool) -> tuple[float, float]:
        began, cpu = time.perf_counter(), time.thread_time()  # this thread is the UI thread
        listed = panel.rows
        if refresh:
            panel.refresh_runs()
        while refresh and panel.rows is listed:
            await asyncio.sleep(0.001)
        wall = time.perf_counter() - began
        await asyncio.sleep(max(REFRESH_WINDOW_SECONDS - wall, 0))
        return wall, time.thread_time() - cpu

    app = WorkbenchApp(cfg, "config.yaml", initial_panel="runs")
    walls, cpus = [], []
    async with app.run_test(size=(120, 40)) as pilot:
        panel = app.runs_panel
        while len(panel.rows) < count:
            await asyncio.sleep(0.01)
        await pilot.pause()
        for _ in range(times):
            _, idle = await ui_cpu_over_window(refresh=False)
            wall, busy = await ui_cpu_over_window(refresh=True)
            walls.append(wall)
            cpus.append(busy - idle)
    return walls, cpus


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    count = 100 if args.smoke else 1000
    print(machine_line(with_torch=False))
    with scratch_dir("runs-list") as tmp:
        cfg = write_runs(tmp / "runs", count)
        cli = [cli_seconds(tmp / "runs") for _ in range(2 if args.smoke else 5)]
        panel = [asyncio.run(panel_seconds(cfg, count)) for _ in range(1 if args.smoke else 3)]
        walls, cpus = asyncio.run(refresh_costs(cfg, count, 2 if args.smoke else 8))
    rows = [
        [f"tunebench runs, {count:,} runs, s (each)", " ".join(f"{s:.2f}" for s, _ in cli)],
        ["torch imported by tunebench runs", str(any(imported for _, imported in cli))],
        [f"Runs panel, {count:,} runs, key to frame, s (each)", " ".join(f"{s:.3f}" for s in panel)],
        [f"live refresh, {count:,} runs, call to new rows, ms (median)", f"{median(walls) * 1000:.1f}"],
        [f"live refresh, {count:,} runs, UI-thread CPU, ms (median)", f"{median(cpus) * 1000:.1f}"],
    ]
    print_table(["measure", "value"], rows)
    if any(imported for _, imported in cli):
        print("FAIL: tunebench runs imported torch")
    ratio_line("runs_cli_seconds", median([s for s, _ in cli]), CLI_GOAL_SECONDS, higher_is_better=False)
    ratio_line("runs_panel_seconds", median(panel), PANEL_GOAL_SECONDS, higher_is_better=False)


if __name__ == "__main__":
    main()
