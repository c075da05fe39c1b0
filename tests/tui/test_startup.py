"""Start-up: the first frame never waits for torch or transformers, and the app says when it is ready."""

from __future__ import annotations

import os
import subprocess
import sys

HEAVY = ["torch", "transformers", "trl", "accelerate"]

FIRST_FRAME = """
import asyncio, sys
from engine.config import load_config
from tui.app import WorkbenchApp

async def main():
    app = WorkbenchApp(load_config("sample_configs/quickstart-classify.yaml"), "quickstart-classify.yaml")
    async with app.run_test() as pilot:
        await asyncio.get_running_loop().run_in_executor(None, app.ready.wait, 60)
        print("ready" if app.ready.is_set() else "not ready")
        print(" ".join(m for m in sys.argv[1:] if m in sys.modules) or "none")
        await pilot.press("q")

asyncio.run(main())
"""


def python(code: str, *args: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return done.stdout.split("\n")


def test_the_workbench_draws_up_to_120_frames_a_second_unless_textual_fps_says_otherwise() -> None:
    """A key that comes just after a frame waits for the next frame slot (docs/perf-log.md, cause 37)."""
    code = "import tui.app, textual.screen; print(round(1 / textual.screen.UPDATE_PERIOD))"
    env = {name: value for name, value in os.environ.items() if name != "TEXTUAL_FPS"}
    for fps, expected in ((None, "120"), ("30", "30")):
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=env if fps is None else {**env, "TEXTUAL_FPS": fps},
            capture_output=True,
            text=True,
            check=True,
        )
        assert done.stdout.strip() == expected


def test_importing_the_workbench_loads_no_training_library() -> None:
    loaded = set(python("import sys, tui.app; print(' '.join(sorted(sys.modules)))")[0].split())
    assert not loaded & {*HEAVY, "datasets"}


def test_importing_the_workbench_leaves_out_what_the_first_frame_does_not_draw() -> None:
    """Textual's TextArea (with its document and syntax modules) and the CLI's argparse each added
    milliseconds to every start (bench/startup.py); they load when first used."""
    loaded = set(python("import sys, tui.app; print(' '.join(sorted(sys.modules)))")[0].split())
    assert not loaded & {"textual.widgets._text_area", "textual.document", "engine.cli", "argparse"}


def test_the_first_frame_is_up_before_any_training_library_loads() -> None:
    """The ready event fires on the first frame; at that moment none of the heavy libraries is imported."""
    out = python(FIRST_FRAME, *HEAVY)
    assert out[:2] == ["ready", "none"]


PANELS_WITHOUT_TORCH = """
import asyncio, sys
from engine.config import load_config
from tui.app import WorkbenchApp
from tui.panels.data import SampleScreen

async def main():
    app = WorkbenchApp(load_config("sample_configs/quickstart-classify.yaml"), "quickstart-classify.yaml")
    async with app.run_test(size=(120, 40)) as pilot:
        await app.panels_mounted.wait()
        while app.data_panel.view is None:
            await pilot.pause(0.05)
        await pilot.press("enter")  # a sample with its tokens
        while not (isinstance(app.screen, SampleScreen) and app.screen.tokens is not None):
            await pilot.pause(0.05)
        await pilot.press("escape", "f3", "f4", "f6")
        await pilot.pause(0.5)
        print("torch" if "torch" in sys.modules else "none")
        await pilot.press("ctrl+q")

asyncio.run(main())
"""


def test_the_data_config_train_and_runs_panels_draw_without_torch() -> None:
    """Only Predict (and a run's own process) needs torch: the workbench's process reads a sample's tokens from the
    model's tokenizer.json, and stays hundreds of MB lighter."""
    assert python(PANELS_WITHOUT_TORCH)[0] == "none"


DATA_TABLE_UNLOADED = """
import asyncio, sys
from engine.config import load_config
from tui.app import WorkbenchApp

async def main():
    app = WorkbenchApp(load_config("sample_configs/quickstart-classify.yaml"), "quickstart-classify.yaml")
    async with app.run_test(size=(120, 40)) as pilot:
        while app.data_panel.view is None:
            await pilot.pause(0.05)
        await pilot.press("f3", "f4", "f5", "f6", "f2")
        await pilot.pause(0.2)
        print("loaded" if "textual.widgets._data_table" in sys.modules else "none")
        await pilot.press("ctrl+q")

asyncio.run(main())
"""


def test_the_panels_leave_textuals_data_table_unloaded() -> None:
    """Textual's DataTable module (about 1 MiB of the workbench's memory) loads only when a sample's tokens or a
    comparison of runs opens; the panels' tables are drawn line by line (docs/perf-log.md, cause 46)."""
    assert python(DATA_TABLE_UNLOADED)[0] == "none"
