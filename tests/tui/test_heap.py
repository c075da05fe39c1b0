"""The workbench keeps full garbage collections off its long-lived heap, without keeping a run's garbage."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from typing import Any

from engine.config import RunConfig
from engine.runner import Emit, RunResult
from tests.tui.conftest import reach, settle
from tests.tui.fakes import ScriptedRunner, run_script
from tui import heap
from tui.app import WorkbenchApp
from tui.run_driver import SWEEP_DELAY_SECONDS


async def test_a_started_workbench_tunes_and_freezes_its_heap_and_restores_it_on_exit(
    make_app: Callable[..., WorkbenchApp],
) -> None:
    defaults = gc.get_threshold()
    app = make_app(panel="train")
    async with app.run_test() as pilot:
        await settle(pilot)
        assert gc.get_freeze_count() > 10_000  # the libraries' objects: no full collection walks them
        assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, *defaults[1:])
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == defaults


class Cycle:
    """An object that refers to itself: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


class FreezingRunner(ScriptedRunner):
    """A run that leaves a cycle in the app's frozen heap, as what a load froze may later be."""

    left: weakref.ref[Cycle] | None = None

    def run(self) -> RunResult:
        garbage = Cycle()
        FreezingRunner.left = weakref.ref(garbage)
        gc.freeze()
        del garbage
        return super().run()


async def test_what_a_run_left_in_cycles_is_collected_when_it_ends(
    make_app: Callable[..., WorkbenchApp], workbench_config: RunConfig
) -> None:
    def engine(cfg: RunConfig, subscribers: list[Emit]) -> Any:
        return FreezingRunner(cfg, run_script("runs/20240101-120000-classification-tiny-bert"), subscribers)

    app = make_app(panel="train", engine=engine)
    async with app.run_test() as pilot:
        await pilot.press("s")
        await reach(app, "finished")
        await settle(pilot)
        await pilot.pause(SWEEP_DELAY_SECONDS + 0.5)  # the sweep waits for the run's last frames
        assert FreezingRunner.left is not None
        assert FreezingRunner.left() is None, "the run's cycle outlived the run"
