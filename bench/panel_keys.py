"""Panel keys on an idle workbench, many rounds: the time from each key to the frame that shows its panel.

Not a benchmark (no goal): the steady, low-noise reading behind a change to a panel key's path, for comparing two
trees back to back (run it from each tree's folder, alternating). ``ui_responsiveness.py`` times the same keys
while a run trains, a few presses each, where the run's share of the two cores makes them twice as long and
far noisier. The real ``WorkbenchApp`` on the quickstart config runs under Pilot (headless, 120x40); two
warm-up rounds load every panel's data, then each round presses F3, F2, F5, F6 and F4 at a typist's pace.
Printed: each panel's median and the median, 90th percentile and mean of all keys.

    python bench/panel_keys.py               # 40 rounds, about a minute on 2 CPU cores
    python bench/panel_keys.py --rounds 10
"""

from __future__ import annotations

import asyncio
import functools
import statistics

from benchlib import REPO_ROOT, machine_line, parse_args, print_table
from ui_responsiveness import PACE_SECONDS, panel_shown
from uilib import FrameProbe

#: F3 first: a round starts on another panel than the one the last round ended on (F4).
KEYS = (("f3", "config"), ("f2", "data"), ("f5", "predict"), ("f6", "runs"), ("f4", "train"))


async def measure(rounds: int) -> dict[str, list[float]]:
    from engine.config import load_config
    from tui.app import WorkbenchApp

    config = REPO_ROOT / "sample_configs" / "quickstart-classify.yaml"
    app = WorkbenchApp(load_config(config), str(config))
    times: dict[str, list[float]] = {panel: [] for _, panel in KEYS}
    async with app.run_test(size=(120, 40)) as pilot:
        while app.data_panel.view is None:
            await pilot.pause(0.05)
        probe = FrameProbe(app)
        for round_ in range(2 + rounds):
            for key, panel in KEYS:
                took = await probe.time_key(key, functools.partial(panel_shown, app, panel))
                if round_ >= 2:
                    times[panel].append(took)
                await asyncio.sleep(PACE_SECONDS)
        await pilot.press("ctrl+q")
    return times


def main() -> None:
    args = parse_args(__doc__ or "", [("--rounds", {"type": int, "default": 40, "help": "rounds (default 40)"})])
    print(machine_line(with_torch=False))
    times = asyncio.run(measure(2 if args.smoke else args.rounds))
    every = sorted(t for panel_times in times.values() for t in panel_times)
    rows = [[panel, len(t), f"{statistics.median(t):.1f}"] for panel, t in times.items()]
    print_table(["panel", "keys", "median ms to frame"], rows)
    p90 = every[min(int(len(every) * 0.9), len(every) - 1)]
    print(f"all keys: median {statistics.median(every):.1f} ms, p90 {p90:.1f} ms, mean {statistics.mean(every):.2f} ms")


if __name__ == "__main__":
    main()
