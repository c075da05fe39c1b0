"""Screenshots of every panel at 80x24 and 120x40, with a scripted engine and a fake predictor.

Update after an intended change with ``pytest tests/tui/test_snapshots.py --snapshot-update`` and look at the
report. Each test waits on workers and messages, never on time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from engine.config import RunConfig, validate_field
from tests.tui.conftest import reach, settle, until
from tests.tui.fakes import run_script
from tests.tui.helpers import edit_field, summary_for, write_run
from tui.app import WorkbenchApp
from tui.widgets.sized_table import SizedTable

SIZES = pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
Compare = Callable[..., bool]


async def finish_drawing(pilot: Pilot[Any]) -> None:
    await settle(pilot)
    # A DataTable sizes its columns to new rows on its next refresh: a busy machine can be caught before it.
    await until(
        pilot,
        lambda: all(table.columns_sized for table in pilot.app.query(SizedTable)),
        "the tables sized their columns",
    )
    pilot.app.clear_notifications()  # toasts expire on a timer; a screenshot must not depend on it
    await pilot.pause()


class TestDataPanel:
    """The movies sample's train split: the lazily paged table and the label counts."""

    @SIZES
    def test_data_panel(self, snap_compare: Compare, make_app: Callable[..., WorkbenchApp], size: Any) -> None:
        app = make_app(panel="data")

        async def run_before(pilot: Pilot[Any]) -> None:
            await until(pilot, lambda: app.data_panel.view is not None, "the data shows")
            await pilot.press("down", "down")
            await finish_drawing(pilot)

        assert snap_compare(app, terminal_size=size, run_before=run_before)


class TestConfigPanel:
    """The form after one good edit (marked as changed) and one bad one (the engine's message under it)."""

    @SIZES
    def test_config_panel(self, snap_compare: Compare, make_app: Callable[..., WorkbenchApp], size: Any) -> None:
        app = make_app(panel="config")

        async def run_before(pilot: Pilot[Any]) -> None:
            await until(pilot, lambda: app.config_panel.form_built, "the form is built")
            edit_field(app, "model.num_labels", "0")
            app.config_panel.focus_field("engine")
            await finish_drawing(pilot)

        assert snap_compare(app, terminal_size=size, run_before=run_before)


class TestTrainPanel:
    """A finished scripted run: status, progress, loss chart, epoch table and log."""

    @SIZES
    def test_train_panel(self, snap_compare: Compare, make_app: Callable[..., WorkbenchApp], size: Any) -> None:
        app = make_app(panel="train")

        async def run_before(pilot: Pilot[Any]) -> None:
            await pilot.press("s")
            await reach(app, "finished")
            await finish_drawing(pilot)

        assert snap_compare(app, terminal_size=size, run_before=run_before)


class TestPredictPanel:
    """Fill-mask on the base model (untrained head warning) beside a fine-tuned run."""

    @SIZES
    def test_predict_panel(self, snap_compare: Compare, make_app: Callable[..., WorkbenchApp], size: Any) -> None:
        app = make_app(panel="predict")

        async def run_before(pilot: Pilot[Any]) -> None:
            await app.panels_mounted.wait()
            app.predict_panel.set_tuned("runs/20240101-120000-classification-tiny-bert", "this session's run")
            await pilot.press(*"This is a [MASK] movie!", "enter")
            await until(pilot, lambda: app.predict_panel.result is not None, "predictions show")
            await finish_drawing(pilot)

        assert snap_compare(app, terminal_size=size, run_before=run_before)


class TestRunsPanel:
    """Two runs on disk, the newest opened: its curves and epoch table."""

    @SIZES
    def test_runs_panel(
        self,
        snap_compare: Compare,
        make_app: Callable[..., WorkbenchApp],
        workbench_config: RunConfig,
        utc: None,
        size: Any,
    ) -> None:
        for i, name in enumerate(["20240101-100000-classification-minilm", "20240102-100000-classification-minilm"]):
            cfg = validate_field(workbench_config, "train.learning_rate", 1e-4 * (i + 1))
            summary = summary_for(cfg, started=1_704_103_200 + 86_400 * i, best=0.7 + i / 10)
            write_run(Path("runs"), name, cfg, run_script(f"runs/{name}", epochs=2 + i), summary)
        app = make_app(panel="runs")

        async def run_before(pilot: Pilot[Any]) -> None:
            await until(pilot, lambda: len(app.runs_panel.runs) == 2, "the runs list")
            await pilot.press("enter")
            await until(pilot, lambda: bool(app.runs_panel.opened), "the run opens")
            await finish_drawing(pilot)

        assert snap_compare(app, terminal_size=size, run_before=run_before)


class TestCompareScreen:
    """Two runs of different learning rates and lengths compared: the config diff, the evaluations side by side
    with the best marked, the overlaid losses and the ranking."""

    @SIZES
    def test_compare_screen(
        self,
        snap_compare: Compare,
        make_app: Callable[..., WorkbenchApp],
        workbench_config: RunConfig,
        utc: None,
        size: Any,
    ) -> None:
        for i, name in enumerate(["20240101-100000-classification-minilm", "20240102-100000-classification-minilm"]):
            cfg = validate_field(workbench_config, "train.learning_rate", 1e-4 * (i + 1))
            summary = summary_for(cfg, started=1_704_103_200 + 86_400 * i, best=0.7 + i / 10)
            write_run(Path("runs"), name, cfg, run_script(f"runs/{name}", epochs=2 + i), summary)
        app = make_app(panel="runs")

        async def run_before(pilot: Pilot[Any]) -> None:
            await until(pilot, lambda: len(app.runs_panel.runs) == 2, "the runs list")
            await pilot.press("m", "down", "m", "c")
            await until(pilot, lambda: getattr(app.screen, "comparison", None) is not None, "the comparison")
            await finish_drawing(pilot)

        assert snap_compare(app, terminal_size=size, run_before=run_before)
