"""The workbench end to end on a tiny real model: the newcomer's flow, a failing run, and quitting mid-run."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Static

from engine.config import RunConfig, load_config, save_config
from engine.detached import DetachedRun
from engine.events import Event, StepLogged
from engine.live import send_command
from engine.runner import Emit, Runner
from engine.runs import RunDir
from tests.tui.conftest import reach, until
from tui.app import WorkbenchApp
from tui.dialogs import ConfirmQuit
from tui.panels.data import SamplesTable
from tui.widgets.epoch_table import EpochTable
from tui.widgets.loss_chart import LossChart
from tui.widgets.score_bars import ScoreBars

pytestmark = pytest.mark.slow  # trains real runs from the workbench


class FirstStepHold:
    """A run subscriber that holds the training thread right after step 1 is logged, until released.

    The loop checks pause and stop right after logging a step, so a key pressed during the hold takes effect at
    step 1: the test knows where the run is without racing it.
    """

    def __init__(self) -> None:
        self.release = threading.Event()

    def __call__(self, event: Event) -> None:
        if isinstance(event, StepLogged) and event.step == 1:
            self.release.wait(120)


@pytest.fixture
def hold() -> FirstStepHold:
    return FirstStepHold()


@pytest.fixture
def real_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hold: FirstStepHold
) -> Callable[[RunConfig], WorkbenchApp]:
    """A workbench with the real engine and predictor on a config saved as ./flow.yaml; the Runner trains in the
    app's worker thread (not the detached process the workbench starts by default), so ``hold`` can stop it."""
    monkeypatch.chdir(tmp_path)

    def runner(cfg: RunConfig, subscribers: list[Emit]) -> Runner:
        return Runner(cfg, subscribers=[*subscribers, hold])  # the bridge first: the UI sees step 1 before the hold

    def make(cfg: RunConfig) -> WorkbenchApp:
        save_config(cfg, "flow.yaml")
        return WorkbenchApp(cfg, "flow.yaml", runner_factory=runner)

    return make


async def type_into(pilot: Any, app: WorkbenchApp, path: str, text: str) -> None:
    """Type ``text`` over the Config form's field ``path``."""
    app.config_panel.focus_field(path)
    await pilot.pause()
    await pilot.press("end", "ctrl+u", *text)
    await pilot.pause()


async def test_newcomer_flow_browse_edit_train_pause_resume_predict_and_find_the_run(
    make_config: Callable[..., RunConfig], real_app: Callable[[RunConfig], WorkbenchApp], hold: FirstStepHold
) -> None:
    cfg = make_config(data={"train_size": 32, "eval_size": 16})
    rows = len(Path(cfg.data.source).read_text(encoding="utf-8").splitlines())
    app = real_app(cfg)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.data_panel.view is not None, "the data shows")
        assert app.query_one(SamplesTable).row_count == rows

        await pilot.press("f3")
        await until(pilot, lambda: app.config_panel.form_built, "the form is built")
        await type_into(pilot, app, "train.learning_rate", "0.004")
        assert app.config_panel.config.train.learning_rate == 0.004

        await pilot.press("f4", "s")
        await reach(app, "training")
        await pilot.press("space")
        hold.release.set()
        assert await reach(app, "paused") == "paused"
        assert isinstance(app.controller.handle, Runner) and app.controller.handle.control.pause.is_set()
        await pilot.press("space")
        assert await reach(app, "finished", "failed") == "finished", app.train_panel.error
        await pilot.pause()

        epochs = app.query_one("#train-epochs", EpochTable)
        assert epochs.row_count == cfg.train.num_train_epochs
        started = app.train_panel.started
        assert started is not None  # logging_steps is 1: one chart point per optimizer step
        assert len(app.query_one("#train-chart", LossChart).series["train loss (step)"].points) == started.total_steps
        run_dir = Path(app.controller.run_dir or "")
        assert load_config(RunDir(run_dir).config_path).train.learning_rate == 0.004

        await pilot.press("f5")
        assert app.predict_panel.tuned == str(run_dir)
        await pilot.press(*"the cafe was great today", "enter")
        await until(pilot, lambda: app.predict_panel.result is not None or app.predict_panel.busy is False, "predict")
        assert app.predict_panel.result is not None, str(app.query_one("#predict-status", Static).render())
        base = app.query_one("#predict-base ScoreBars", ScoreBars)
        tuned = app.query_one("#predict-tuned ScoreBars", ScoreBars)
        assert {r[0] for r in base.rows} == {r[0] for r in tuned.rows} == {"bad", "good"}

        await pilot.press("f6")
        await until(pilot, lambda: bool(app.runs_panel.runs), "the run is listed")
        listed = app.runs_panel.runs[0]
        assert (listed.name, listed.status) == (run_dir.name, "finished")


async def test_by_default_a_run_trains_in_a_detached_process_and_the_workbench_shows_all_of_it(
    make_config: Callable[..., RunConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = make_config(data={"train_size": 32, "eval_size": 16})
    save_config(cfg, "flow.yaml")
    app = WorkbenchApp(cfg, "flow.yaml")  # the real engine, as `tunebench` starts it
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f4", "s")
        assert await reach(app, "finished", "failed") == "finished", app.train_panel.error
        await pilot.pause()
        handle = app.controller.handle
        assert isinstance(handle, DetachedRun) and handle.pid not in (None, os.getpid())
        started = app.train_panel.started
        assert started is not None
        assert len(app.query_one("#train-chart", LossChart).series["train loss (step)"].points) == started.total_steps
        assert app.query_one("#train-epochs", EpochTable).row_count == cfg.train.num_train_epochs
        summary = RunDir(Path(app.controller.run_dir or "")).read_summary() or {}
        assert summary.get("status") == "finished"


async def test_a_failing_run_shows_its_error_and_the_next_run_trains(
    make_config: Callable[..., RunConfig], real_app: Callable[[RunConfig], WorkbenchApp], hold: FirstStepHold
) -> None:
    hold.release.set()
    cfg = make_config(data={"text_field": "body", "train_size": 32, "eval_size": 16})
    app = real_app(cfg)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f4", "s")
        assert await reach(app, "finished", "failed") == "failed"
        await pilot.pause()
        error = str(app.query_one("#train-error", Static).render())
        assert 'data.text_field: column "body"' in error and "Traceback" not in error

        await pilot.press("f3")
        await until(pilot, lambda: app.config_panel.form_built, "the form is built")
        await type_into(pilot, app, "data.text_field", "text")
        assert app.config_panel.config.data.text_field == "text"
        await pilot.press("f4")
        await pilot.pause()
        await pilot.press("s")
        assert app.controller.state != "failed", "the second run did not start"
        assert await reach(app, "finished", "failed") == "finished", app.train_panel.error
        assert app.query_one("#train-epochs", EpochTable).row_count == cfg.train.num_train_epochs


async def test_quitting_mid_run_asks_stops_saves_and_leaves_no_thread(
    make_config: Callable[..., RunConfig], real_app: Callable[[RunConfig], WorkbenchApp], hold: FirstStepHold
) -> None:
    app = real_app(make_config(train={"num_train_epochs": 50}, data={"train_size": 32, "eval_size": 16}))
    async with app.run_test() as pilot:
        await pilot.press("f4", "s")
        await reach(app, "training")
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmQuit)
        await pilot.press("s")
        hold.release.set()
        await until(pilot, lambda: app.training.quit_worker is not None, "quit starts")
        assert app.training.quit_worker is not None
        await app.training.quit_worker.wait()
        assert app.return_code == 0
    runner = app.controller.handle
    assert isinstance(runner, Runner) and runner.run_dir is not None
    assert not runner.is_alive() and not any(t.name == "tunebench-run" for t in threading.enumerate())
    assert app.training.worker is not None and app.training.worker.is_finished
    summary = runner.run_dir.read_summary()
    assert summary is not None and summary["status"] == "stopped"
    assert (runner.run_dir.model_dir / "config.json").exists()


async def test_a_stopped_run_resumes_from_the_runs_panel_and_finishes_in_the_same_folder(
    make_config: Callable[..., RunConfig], real_app: Callable[[RunConfig], WorkbenchApp], hold: FirstStepHold
) -> None:
    cfg = make_config(data={"train_size": 32, "eval_size": 16})
    app = real_app(cfg)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f4", "s")
        await reach(app, "training")
        await pilot.press("x")
        hold.release.set()
        assert await reach(app, "finished", "stopped", "failed") == "stopped", app.train_panel.error
        assert app.controller.detail.startswith("at step 1 in ")
        assert "■ stopped (at step 1" in app.train_panel.status_text()
        stopped_dir = Path(app.controller.run_dir or "")

        await pilot.press("f6")
        await until(pilot, lambda: [r.status for r in app.runs_panel.runs] == ["stopped"], "the stopped run listed")
        await pilot.press("r")
        assert app.active_panel == "train"
        assert await reach(app, "finished", "failed") == "finished", app.train_panel.error
        assert "done at step" in app.controller.detail

        started = app.train_panel.started
        assert started is not None and started.start_step == 1
        assert Path(app.controller.run_dir or "") == stopped_dir
        chart = app.query_one("#train-chart", LossChart).series["train loss (step)"].points
        assert [int(x) for x, _ in chart] == list(range(1, started.total_steps + 1))  # step 1 read back, then 2...
        assert app.query_one("#train-epochs", EpochTable).row_count == cfg.train.num_train_epochs
        assert [p.name for p in Path(cfg.output.runs_dir).iterdir()] == [stopped_dir.name]
        assert app.training.worker is not None
        await app.training.worker.wait()
        await until(pilot, lambda: [r.status for r in app.runs_panel.runs] == ["finished"], "the list updates")


async def test_a_run_left_training_finishes_without_the_workbench_and_a_new_one_attaches_to_it(
    make_config: Callable[..., RunConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = make_config(train={"num_train_epochs": 30}, data={"train_size": 32, "eval_size": 16})  # ~10 s
    save_config(cfg, "flow.yaml")
    app = WorkbenchApp(cfg, "flow.yaml")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f4", "s")
        await reach(app, "training")
        handle = app.controller.handle
        assert isinstance(handle, DetachedRun) and handle.run_dir is not None and handle.pid is not None
        run = handle.run_dir
        await pilot.press("space")  # paused, the run is still there to leave however fast the machine is
        await reach(app, "paused")
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmQuit)
        await pilot.press("l")
        await until(pilot, lambda: app.training.quit_worker is not None, "quit starts")
        assert app.training.quit_worker is not None
        await app.training.quit_worker.wait()
    assert app.return_code == 0
    deadline = time.monotonic() + 5  # live.json takes a pause within the beacon's next look (0.05 s)
    while run.live_state() != "paused":
        assert time.monotonic() < deadline, f"the run waits without the workbench: {run.live_state()}"
        await asyncio.sleep(0.05)
    send_command(run, "resume")
    deadline = time.monotonic() + 120
    while (run.read_summary() or {}).get("status") != "finished":  # the run goes on alone
        assert time.monotonic() < deadline, "the run left training did not finish"
        await asyncio.sleep(0.2)

    again = WorkbenchApp(load_config(run.config_path), str(run.config_path), attach=run.path)
    async with again.run_test(size=(120, 40)) as pilot:
        assert await reach(again, "finished", "failed") == "finished", again.train_panel.error
        await pilot.pause()
        assert again.query_one("#train-epochs", EpochTable).row_count == 30
