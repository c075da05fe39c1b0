"""Every key in the workbench's table, pressed through Pilot: panels, help, palette, start/pause/stop, quit."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from textual.command import CommandPalette
from textual.widgets import Button, Input, Static

from engine.config import RunConfig
from engine.events import RunFinished
from engine.files import atomic_write_text
from engine.runs import RunDir
from tests.tui.conftest import reach, record_notes, settle, until
from tests.tui.fakes import ScriptedEngine
from tests.tui.helpers import summary_for
from tui.app import PANELS, WorkbenchApp
from tui.dialogs import ConfirmQuit, HelpScreen
from tui.keys import NOT_COMMANDS, RUN_GOING, STOP_GOING, key_places, what
from tui.launch import left_run_line
from tui.widgets.epoch_table import EpochTable
from tui.widgets.footer import WorkbenchFooter
from tui.widgets.panel_bar import Pane, PanelBar


async def ask_to_quit(pilot: Any, key: str = "q") -> None:
    """Start the app's (gated) run, then press ``key``: the quit question shows."""
    await pilot.press("s")
    await reach(pilot.app, "training")
    await pilot.press(key)
    await pilot.pause()
    assert isinstance(pilot.app.screen, ConfirmQuit)


async def quits(app: WorkbenchApp) -> None:
    """The app quits once its run is left or stopped."""
    assert app.training.quit_worker is not None
    await app.training.quit_worker.wait()
    assert app.return_code == 0


def footer_actions(app: WorkbenchApp) -> dict[str, bool]:
    """Footer entries shown now: description -> enabled."""
    return {entry.description: entry.enabled for entry in app.query_one(WorkbenchFooter).entries}


async def test_the_run_bar_shows_under_every_panel_but_train_and_switching_keeps_the_panels_size(
    make_app: Callable[..., WorkbenchApp],
) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        sizes = set()
        for key, panel in (("f4", "train"), ("f2", "data"), ("f6", "runs"), ("f4", "train"), ("f3", "config")):
            await pilot.press(key)
            await pilot.pause()
            shown = [bar for bar in app.query_one(f"Pane#{panel}").query(".run-bar") if bar.display]
            assert len(shown) == (0 if panel == "train" else 1), panel
            sizes.add(app.query_one(f"Pane#{panel}").size)
        assert len(sizes) == 1  # a switch lays out the new panel once, at the size it already had


async def test_function_keys_switch_to_each_panel_and_focus_it(make_app: Callable[..., WorkbenchApp]) -> None:
    app = make_app()
    async with app.run_test() as pilot:
        for key, panel in (("f3", "config"), ("f4", "train"), ("f5", "predict"), ("f6", "runs"), ("f2", "data")):
            await pilot.press(key)
            await pilot.pause()
            assert app.active_panel == panel
            assert [pane.id for pane in app.query(Pane) if pane.display] == [panel]
            title = app.query_one(f"#{panel}-panel .panel-title")
            assert PANELS[panel][1] in str(title.render())
            assert app.focused is not None and app.query_one(f"#{panel}-panel") in app.focused.ancestors


async def test_the_panel_bar_marks_the_panel_on_show_and_a_click_on_a_name_shows_its_panel(
    make_app: Callable[..., WorkbenchApp],
) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        bar = app.query_one(PanelBar)
        await pilot.press("f3")
        await pilot.pause()
        assert marked(bar) == ["F3 Config"]
        column = bar.render().plain.index("F6 Runs")
        await pilot.click(PanelBar, offset=(column + 2, 0))
        await pilot.pause()
        assert app.active_panel == "runs" and marked(bar) == ["F6 Runs"]
        assert app.focused is not None and app.runs_panel in app.focused.ancestors


def marked(bar: PanelBar) -> list[str]:
    """The names drawn in the active name's style."""
    content = bar.render()
    active = bar.get_visual_style("panel-bar--active")
    return [content.plain[span.start : span.end] for span in content.spans if span.style == active]


async def test_f1_and_question_mark_open_a_help_screen_listing_every_key(make_app: Callable[..., WorkbenchApp]) -> None:
    app = make_app()
    async with app.run_test(size=(100, 40)) as pilot:
        for key in ("f1", "question_mark"):
            await pilot.press(key)
            await pilot.pause()
            assert isinstance(app.screen, HelpScreen)
            rows = app.screen.rows
            keys = [key for _where, key, _what in rows]
            assert {"F1, ?", "F2", "F3", "F4", "F5", "F6", "s", "space", "x", "q", "^q", "^p", "esc"} <= set(keys)
            assert keys.count("r") == 1, "each binding is listed once"
            actions = {what.split(" ")[0].rstrip(":") for _where, _key, what in rows}
            assert {"Start", "Pause", "Stop", "Quit", "Save", "Filter", "Mark", "Overlay", "Open", "Resume"} <= actions
            where = {key: place for place, key, _what in rows if key in ("s", "space", "q", "^q", "^p", "tab", "F2")}
            # a dialog or the sample view takes every key but ^q, ^p and tab: the others act on the panels
            assert where == {
                "s": "Train",
                "space": RUN_GOING,
                "q": "every panel",
                "^q": "everywhere",
                "^p": "everywhere",
                "tab": "everywhere",
                "F2": "every panel",
            }
            # x in Runs takes a queued entry off the queue: the help does not promise a stop there.
            assert {place for place, key, _what in rows if key.split(", ")[0] == "x"} == {
                STOP_GOING,
                "Runs",
                "Comparison",
            }
            # At 80 columns every place and every action shows whole: long ones wrap instead of running off.
            console = Console(width=76, record=True)
            console.print(app.screen.key_table())
            shown = " ".join(console.export_text().split())
            for place, key, what in rows:
                assert place in shown and f"{key} {' '.join(what.split())}" in shown, (place, key, what)
            await pilot.press("escape")
            await pilot.pause()
            assert not isinstance(app.screen, HelpScreen)


async def test_ctrl_p_palette_offers_every_bound_action_and_runs_it(make_app: Callable[..., WorkbenchApp]) -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        commands = {c.title: c.help for c in app.get_system_commands(app.screen)}
        first: dict[tuple[str | None, str], tuple[str, Any]] = {}  # (panel, action) -> its first binding
        for place in key_places(app):
            for binding in place.bindings:
                if place.commands and binding.action not in NOT_COMMANDS:
                    first.setdefault((place.panel, binding.action), (place.where, binding))
        for (panel, action), (where, binding) in first.items():
            title = what(binding) if panel is None else f"{where}: {what(binding)}"
            assert title in commands, f"{binding.key} ({action}) is not in the palette"
        assert commands["Runs: Resume the highlighted stopped, failed or killed run"] == "r"
        assert {f"Show the {name} panel: {title}" for name, title in PANELS.values()} <= commands.keys()
        await pilot.press("ctrl+p")
        await pilot.pause()
        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*"Show the Runs panel")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert app.active_panel == "runs"
        await pilot.press("ctrl+p", *"Data: Filter", "enter")  # a panel's action: its panel, then the action
        await settle(pilot)
        assert app.active_panel == "data" and app.focused is app.query_one("#data-filter")
        await pilot.press("f1", "ctrl+p", *"Show the Runs panel", "enter")  # over Help: F6 would not act there
        await settle(pilot)
        assert app.active_panel == "runs" and isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.pause()
        notes = record_notes(app)
        app.action_toggle_pause()  # what the palette's Pause does with no run going: said, not nothing
        app.action_stop()
        assert notes == [
            "nothing to pause or resume: no run is going; s on the Train panel (F4) starts one",
            "nothing to stop: no run is going; s on the Train panel (F4) starts one",
        ]


async def test_the_palettes_start_from_another_panel_shows_train_and_starts(
    make_app: Callable[..., WorkbenchApp], scripted_engine: ScriptedEngine
) -> None:
    """s acts on the Train panel alone; its command, run from the Data panel, goes there as s would."""
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("ctrl+p", *"Start a run with the current config", "enter")
        await until(pilot, lambda: bool(scripted_engine.runners), "the run")
        assert app.active_panel == "train"


async def test_escape_leaves_a_text_field_so_single_keys_act_again(make_app: Callable[..., WorkbenchApp]) -> None:
    app = make_app(panel="predict")
    async with app.run_test() as pilot:
        await settle(pilot)
        assert app.focused is app.query_one("#predict-input")
        await pilot.press("a", "escape", "q")
        await pilot.pause()
        assert app.query_one("#predict-input", Input).value == "a"
        assert app.return_code == 0


async def test_s_starts_a_run_on_the_train_panel_only(
    make_app: Callable[..., WorkbenchApp], scripted_engine: ScriptedEngine
) -> None:
    app = make_app()
    async with app.run_test() as pilot:
        await pilot.press("s")  # Data panel: s means nothing here
        await settle(pilot)
        assert scripted_engine.runners == []
        await pilot.press("f4", "s")
        assert await reach(app, "finished") == "finished"
        await pilot.pause()
        assert app.query_one("#train-epochs", EpochTable).row_count == 3
        assert "done at step 24" in app.train_panel.status_text()


async def test_space_pauses_and_resumes_a_run(make_app: Callable[..., WorkbenchApp]) -> None:
    gate = threading.Event()
    engine = ScriptedEngine("runs/gated", gate=gate)
    app = make_app(panel="train", engine=engine)
    async with app.run_test() as pilot:
        await pilot.press("s")
        await reach(app, "training")
        await pilot.press("space")
        assert await reach(app, "paused") == "paused"
        await pilot.pause()
        assert footer_actions(app)["Resume"] and "Pause" not in footer_actions(app), "the footer says what space does"
        await pilot.press("space")
        assert await reach(app, "training") == "training"
        await pilot.pause()
        assert footer_actions(app)["Pause"] and "Resume" not in footer_actions(app)
        gate.set()
        await reach(app, "finished")
        assert engine.runners[0].control.pause.is_set() is False


async def start_then_stop(pilot: Any, app: WorkbenchApp) -> None:
    """s, then x once the run trains: the run saves and ends stopped."""
    await pilot.press("s")
    await reach(app, "training")
    await pilot.press("x")
    assert await reach(app, "finished", "stopped") == "stopped"


async def test_x_stops_a_run_and_the_run_saves_as_stopped(make_app: Callable[..., WorkbenchApp]) -> None:
    engine = ScriptedEngine("runs/gated", gate=threading.Event())
    app = make_app(panel="train", engine=engine)
    async with app.run_test() as pilot:
        await start_then_stop(pilot, app)
        assert "r in the Runs panel resumes it" in app.controller.detail
        assert engine.runners[0].control.stop.is_set()


async def test_a_stopped_run_resumed_elsewhere_stops_asking_to_be_resumed(
    make_app: Callable[..., WorkbenchApp], workbench_config: RunConfig
) -> None:
    """Another terminal's ``tunebench run --resume`` finished the run this workbench stopped: the run bar and the
    Train panel say so once the Runs panel lists it, where they went on advising r."""
    engine = ScriptedEngine("runs/gated", gate=threading.Event())
    app = make_app(panel="train", engine=engine)
    async with app.run_test() as pilot:
        await start_then_stop(pilot, app)
        app.runs_panel.refresh_runs()  # the scripted run has no folder: listed as this workbench left it
        await settle(pilot)
        assert "r in the Runs panel resumes it" in app.controller.detail
        run = RunDir(Path("runs/gated"))
        run.path.mkdir(parents=True)
        atomic_write_text(run.config_path, workbench_config.to_yaml())
        with run.lock():  # as `tunebench run --resume` holds it while it trains
            app.runs_panel.refresh_runs()
            await until(pilot, lambda: "resumed elsewhere" in app.controller.detail, "the bar sees it train")
            assert app.controller.detail == "resumed elsewhere: training; a in the Runs panel follows it"
        run.write_summary(summary_for(workbench_config, started=0, best=0.8))
        app.runs_panel.refresh_runs()
        await until(pilot, lambda: "since" in app.controller.detail, "the run bar follows the folder")
        assert app.controller.detail == "resumed elsewhere since: finished, acc 0.8000"
        bar = str(app.query_one("#data .run-bar", Static).render())
        assert bar.startswith("■ stopped (resumed elsewhere since: finished, acc 0.8000)")
        assert "resumed elsewhere since: finished" in app.train_panel.status_text()


async def test_a_listing_that_arrives_as_the_app_closes_draws_nothing(make_app: Callable[..., WorkbenchApp]) -> None:
    """The Runs panel lists in a worker: its answer can be handled after the screens went (a bench attached and
    quit while one was on its way, and the run bar looked for the panels)."""
    app = make_app(panel="runs")
    async with app.run_test() as pilot:
        await settle(pilot)
    assert not app.screen_stack
    app.training.runs_listed()
    app.training.render_run_bar()


async def test_a_click_on_a_footer_entry_presses_its_key(make_app: Callable[..., WorkbenchApp]) -> None:
    app = make_app(panel="train")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        footer = app.query_one(WorkbenchFooter)
        line = footer.render_line(0).text
        assert line.lstrip().startswith("F1 Help") and line.rstrip().endswith("^p palette")
        await pilot.click(WorkbenchFooter, offset=(line.index("F1") + 1, 0))
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)


async def test_a_narrow_footer_keeps_the_palette_key_and_drops_the_last_entries(
    make_app: Callable[..., WorkbenchApp],
) -> None:
    app = make_app(panel="runs")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        line = app.query_one(WorkbenchFooter).render_line(0).text
        assert len(line) == 80
        assert line.lstrip().startswith("m Mark") and line.endswith("▏^p palette")
        assert "q Quit" not in line  # no room for it on this panel; F1 lists it


async def test_run_keys_show_in_the_footer_where_they_apply(make_app: Callable[..., WorkbenchApp]) -> None:
    gate = threading.Event()
    engine = ScriptedEngine("runs/gated", gate=gate)
    app = make_app(engine=engine)
    async with app.run_test(size=(140, 30)) as pilot:
        await settle(pilot)
        idle_on_data = footer_actions(app)
        assert "Start" not in idle_on_data and "Stop" not in idle_on_data
        await pilot.press("f4")
        await pilot.pause()
        idle_on_train = footer_actions(app)
        assert idle_on_train["Start"] is True
        assert idle_on_train["Pause"] is False and idle_on_train["Stop"] is False
        await pilot.press("s")
        await reach(app, "training")
        notes = record_notes(app)
        await pilot.press("s")  # a second start: not greyed out in silence, but told what to do
        await pilot.pause()
        assert notes == ["a run is already in progress; x stops it"] and len(engine.runners) == 1
        await pilot.press("f2")
        await pilot.pause()
        running_on_data = footer_actions(app)
        assert running_on_data["Pause"] and running_on_data["Stop"]
        await pilot.press("f6")
        await pilot.pause()
        assert footer_actions(app)["Resume"] is True
        gate.set()
        await reach(app, "finished")


async def test_q_quits_at_once_when_no_run_is_active(make_app: Callable[..., WorkbenchApp]) -> None:
    app = make_app()
    async with app.run_test() as pilot:
        await pilot.press("q")
        await pilot.pause()
        assert app.return_code == 0


async def test_q_during_a_run_asks_first_then_stops_the_run_and_exits(make_app: Callable[..., WorkbenchApp]) -> None:
    gate = threading.Event()
    engine = ScriptedEngine("runs/gated", gate=gate)
    app = make_app(panel="train", engine=engine)
    events: list[Any] = []
    async with app.run_test(message_hook=events.append) as pilot:
        await pilot.press("s")
        await reach(app, "training")
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmQuit)
        await pilot.press("escape")
        await pilot.pause()
        assert app.controller.state == "training" and app.return_code is None
        await pilot.press("q")
        await pilot.pause()
        await pilot.press("s")
        await pilot.pause()
        assert app.training.quit_worker is not None
        await app.training.quit_worker.wait()
        assert app.return_code == 0
    runner = engine.runners[0]
    assert runner.finished.is_set()
    finished = [m.event for m in events if isinstance(getattr(m, "event", None), RunFinished)]
    assert [e.status for e in finished] == ["stopped"]


async def test_ctrl_q_in_the_quit_question_takes_its_default_and_leaves_the_run(
    make_app: Callable[..., WorkbenchApp],
) -> None:
    app = make_app(panel="train", engine=ScriptedEngine("runs/gated", gate=threading.Event()))
    async with app.run_test() as pilot:
        await ask_to_quit(pilot, "ctrl+q")
        await pilot.press("ctrl+q")  # ctrl+q always quits
        await pilot.pause()
        await quits(app)


async def test_the_quit_question_goes_when_the_run_ends_under_it(make_app: Callable[..., WorkbenchApp]) -> None:
    gate = threading.Event()
    app = make_app(panel="train", engine=ScriptedEngine("runs/gated", gate=gate))
    async with app.run_test() as pilot:
        notes = record_notes(app)
        await ask_to_quit(pilot)
        gate.set()
        await reach(app, "finished")
        await until(pilot, lambda: not isinstance(app.screen, ConfirmQuit), "the question goes")
        assert app.return_code is None and "the run finished meanwhile; q quits now" in notes
        await pilot.press("q")
        await pilot.pause()
        assert app.return_code == 0


async def test_a_second_start_is_refused_while_a_run_is_active(make_app: Callable[..., WorkbenchApp]) -> None:
    gate = threading.Event()
    engine = ScriptedEngine("runs/gated", gate=gate)
    app = make_app(panel="train", engine=engine)
    async with app.run_test() as pilot:
        await pilot.press("s")
        await reach(app, "training")
        app.action_start()
        await pilot.pause()
        assert len(engine.runners) == 1
        gate.set()
        await reach(app, "finished")
        await until(pilot, lambda: app.training.worker is not None and app.training.worker.is_finished, "worker ends")


async def test_a_run_keeps_streaming_while_a_dialog_is_open(make_app: Callable[..., WorkbenchApp]) -> None:
    gate = threading.Event()
    app = make_app(panel="train", engine=ScriptedEngine("runs/gated", gate=gate))
    async with app.run_test() as pilot:
        await pilot.press("s")
        await reach(app, "training")
        await pilot.press("f1")
        await pilot.pause()
        gate.set()
        await reach(app, "finished")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        assert app.workbench.query_one("#train-epochs", EpochTable).row_count == 3


async def test_q_then_l_leaves_the_run_and_exits(make_app: Callable[..., WorkbenchApp]) -> None:
    engine = ScriptedEngine("runs/gated", gate=threading.Event())
    app = make_app(panel="train", engine=engine)
    async with app.run_test() as pilot:
        await ask_to_quit(pilot)
        await pilot.press("l")
        await pilot.pause()
        await quits(app)
    assert engine.runners[0].finished.is_set()  # a scripted run lives in this process: leaving it stops it
    # The terminal's last line says where the left run is and how to see it again.
    assert app.training.left_run == Path("runs/gated")
    assert left_run_line(Path("runs/gated")) == (
        "the run goes on without the workbench: runs/gated; tunebench attach gated shows it"
    )


def test_a_run_left_paused_is_said_to_wait_and_how_to_resume_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """It said "the run goes on without the workbench" of a run left paused, which waits for a resume."""
    monkeypatch.setattr(RunDir, "live_state", lambda _self, _record=None: "paused")
    assert left_run_line(Path("runs/gated")) == (
        "the run waits paused without the workbench: runs/gated; tunebench resume gated continues it"
    )


async def test_the_quit_question_for_a_paused_run_says_it_stays_paused(make_app: Callable[..., WorkbenchApp]) -> None:
    gate = threading.Event()
    app = make_app(panel="train", engine=ScriptedEngine("runs/gated", gate=gate))
    async with app.run_test() as pilot:
        await pilot.press("s")
        await reach(app, "training")
        await pilot.press("space")
        await reach(app, "paused")
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmQuit) and app.screen.paused
        texts = [str(w.render()) for w in app.screen.query("Static")]
        assert texts[0] == "A run is paused." and "stay paused" in texts[1]
        assert str(app.screen.query_one("#confirm-leave", Button).label) == "Leave paused (l)"
        await pilot.press("escape")
        gate.set()
        await pilot.press("space")
        await reach(app, "finished")
