"""Memory of the workbench's process: idle on the quickstart with its data loaded, with a sample's tokens open,
and while it follows a run, against a bare Textual app (one Label) idle; and the workbench whose data source is
missing, which holds no data. Then, for the diagnosis, the workbench's RSS after each stage of its start (its
imports, its first frame, each panel mounted with the time it took, its data).

Each app runs headless (Pilot, 120x40) in a fresh Python process and reports its resident set size (RSS, MiB)
at each point. The goal: the workbench with its data loaded stays within 1.3 x (the bare app + the bytes the
loaded dataset takes: its Python lists and values for small JSON lines, its Arrow table otherwise). The run it
follows is a finished run of 20,000 logged steps written by the bench, attached as `tunebench attach` does. The
workbench's process first parses its command line as `tunebench ui CONFIG` does, which loads the command line's
modules. Both apps load their modules from bytecode, as installed packages do (``benchlib.compile_project``):
compiling from source leaves the compiler's memory in the process.

    python bench/memory.py            # ~20 seconds on 2 CPU cores
    python bench/memory.py --smoke
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchlib import REPO_ROOT, compile_project, machine_line, parse_args, print_table, ratio_line, scratch_dir

GOAL = 1.3

BARE = """
import asyncio, psutil
from textual.app import App
from textual.widgets import Label

class Bare(App):
    def compose(self):
        yield Label("ready")

async def main():
    app = Bare()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.5)
        print(psutil.Process().memory_info().rss / 2**20)

asyncio.run(main())
"""

# Each workbench child parses its command line as `tunebench ui CONFIG` does first, so that it holds what the
# command loads to get there (argparse, each subcommand's module) as the real workbench does.
WORKBENCH = """
import asyncio, json, sys, psutil
from pathlib import Path
from engine import cli
cli.build_parser().parse_args(["ui", sys.argv[1]])
from engine.config import load_config
from tui.app import WorkbenchApp
from tui.panels.data import SampleScreen

def rss():
    return psutil.Process().memory_info().rss / 2**20

async def main(config, run):
    out = {}
    app = WorkbenchApp(load_config(config), config)
    async with app.run_test(size=(120, 40)) as pilot:
        await app.panels_mounted.wait()
        while app.data_panel.view is None:
            await pilot.pause(0.05)
        await pilot.pause(0.5)
        out["data loaded"] = rss()
        out["dataset MiB"] = app.data_panel.browser.nbytes / 2**20
        out["datasets imported"] = "datasets" in sys.modules
        await pilot.press("enter")
        while not (isinstance(app.screen, SampleScreen) and app.screen.tokens is not None):
            await pilot.pause(0.05)
        await pilot.pause(0.2)
        out["sample tokens open"] = rss()
        await pilot.press("escape", "f4")
        app.training.attach_run(Path(run))
        while app.controller.state != "finished":
            await pilot.pause(0.05)
        await pilot.pause(0.5)
        out["following a run"] = rss()
        out["torch imported"] = "torch" in sys.modules
        await pilot.press("ctrl+q")
    print(json.dumps(out))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


# The workbench whose data source does not load: the same app holding no data, the floor the data path sits on.
NO_DATA = """
import asyncio, sys, psutil
from engine import cli
cli.build_parser().parse_args(["ui", "config.yaml"])
from engine.config import from_dict
from tui.app import WorkbenchApp

async def main():
    app = WorkbenchApp(from_dict({"data": {"source": sys.argv[1]}}), "config.yaml")
    async with app.run_test(size=(120, 40)) as pilot:
        await app.panels_mounted.wait()
        while app.data_panel.error is None:
            await pilot.pause(0.05)
        await pilot.pause(0.5)
        print(psutil.Process().memory_info().rss / 2**20)
        await pilot.press("ctrl+q")

asyncio.run(main())
"""


# Where the workbench's memory comes from, stage by stage as it starts: its imports, its first frame, each panel
# as it mounts (a panel's module loads then; the time to mount it, to the next panel's start), its data.
STAGES = """
import asyncio, json, sys, time, psutil
from engine import cli
cli.build_parser().parse_args(["ui", sys.argv[1]])
from engine.config import load_config
import tui.app

def rss():
    return psutil.Process().memory_info().rss / 2**20

stages = [["imports (the command line, the app)", rss(), None]]
marks = []
make_panel, on_ready = tui.app.make_panel, tui.app.WorkbenchApp.on_ready

def timed_make_panel(panel, *args):
    marks.append((panel, rss(), time.perf_counter()))
    return make_panel(panel, *args)

async def timed_on_ready(self):
    stages.append(["first frame (the panel bar, a title, the footer)", rss(), None])
    await on_ready(self)

tui.app.make_panel = timed_make_panel
tui.app.WorkbenchApp.on_ready = timed_on_ready

async def main(config):
    app = tui.app.WorkbenchApp(load_config(config), config)
    async with app.run_test(size=(120, 40)) as pilot:
        end = rss(), time.perf_counter()
        for (panel, _, start), (_, after, stop) in zip(marks, [*marks[1:], (None, *end)]):
            stages.append([f"{panel} panel mounted", after, (stop - start) * 1000])
        while app.data_panel.view is None:
            await pilot.pause(0.05)
        await pilot.pause(0.5)
        stages.append(["data loaded", rss(), None])
        await pilot.press("ctrl+q")
    print(json.dumps(stages))

asyncio.run(main(sys.argv[1]))
"""


def run_python(code: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the measured app failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1]


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    print(machine_line(with_torch=False))
    compile_project()
    steps = 2_000 if args.smoke else 20_000
    config = str(REPO_ROOT / "sample_configs" / "quickstart-classify.yaml")
    with scratch_dir("memory") as tmp:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from live_follow import write_long_run

        from engine.config import from_dict

        run = write_long_run(from_dict({"output": {"runs_dir": str(tmp / "runs")}}), steps)
        bare = float(run_python(BARE))
        no_data = float(run_python(NO_DATA, str(tmp / "no-such-data.jsonl")))
        workbench = json.loads(run_python(WORKBENCH, config, str(run)))
        stages = json.loads(run_python(STAGES, config))
    dataset = workbench.pop("dataset MiB")
    torch_imported = workbench.pop("torch imported")
    datasets_imported = workbench.pop("datasets imported")
    rows = [["bare Textual app, idle", f"{bare:.0f}"], ["quickstart dataset, bytes held", f"{dataset:.1f}"]]
    rows.append(["workbench, its data source missing (no data held)", f"{no_data:.0f}"])
    rows += [[f"workbench, {point}", f"{mib:.0f}"] for point, mib in workbench.items()]
    rows.append(["torch imported by the workbench", str(torch_imported)])
    rows.append(["datasets imported by the workbench", str(datasets_imported)])
    print_table(["process", "RSS MiB"], rows)
    print("the workbench as it starts, in a process of its own:")
    before = stages[0][1]
    table = []
    for stage, mib, ms in stages:
        table.append([stage, f"{mib:.1f}", f"+{mib - before:.1f}", "" if ms is None else f"{ms:.0f}"])
        before = mib
    print_table(["stage", "RSS MiB", "added", "ms to mount"], table)
    ratio_line("workbench_rss_vs_bare", workbench["data loaded"] / (bare + dataset), GOAL, higher_is_better=False)


if __name__ == "__main__":
    main()
