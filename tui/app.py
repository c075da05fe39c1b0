"""WorkbenchApp: five panels, global keys, and the one training run the app owns.

Threads: the run trains in a detached process of its own (``engine.detached.DetachedRun``), which one app-level
thread worker starts (or attaches to), sends commands to and reads events from, through the run's folder; the
run goes on when the workbench closes. The events reach the UI only through ``tui.bridge``
(``post_message``). Data loading, tokenizing, listing runs and predicting run in their own
thread workers and post typed messages back. No widget is touched off the UI thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import AsyncGenerator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.reactive import Reactive
from textual.screen import Screen
from textual.widget import MountError, Widget
from textual.widgets import Input, Static
from textual.worker import Worker

from engine.config import RunConfig
from tui import heap
from tui.bridge import (
    AttachFactory,
    EngineEvent,
    LibraryLog,
    LogBridge,
    ResumeFactory,
    RunHistory,
    RunnerFactory,
    StepsLogged,
    engine_attacher,
    engine_resumer,
    engine_runner,
)
from tui.controller import RunController
from tui.panels import PANELS, make_panel
from tui.run_driver import RunDriver
from tui.widgets.fixed_text import FixedText
from tui.widgets.footer import WorkbenchFooter
from tui.widgets.panel_bar import Pane, PanelBar

if TYPE_CHECKING:  # each panel's module is imported when the panel is mounted (tui.panels.make_panel)
    from textual.notifications import SeverityLevel
    from textual.pilot import Pilot

    from tui.panels.config import ConfigPanel
    from tui.panels.data import DataPanel
    from tui.panels.predict import Backend, PredictPanel
    from tui.panels.runs import RunsPanel
    from tui.panels.train import TrainPanel

PANEL_KEYS = {"data": "f2", "config": "f3", "train": "f4", "predict": "f5", "runs": "f6"}


class WorkbenchScreen(Screen[Any]):
    """The screen that holds the panels. Textual's screen repaints all of itself when the focus moves; the widgets
    whose look depends on the focus already redraw themselves, so that was a second whole frame after every panel
    key (docs/perf-log.md, cause 45)."""

    focused: Reactive[Widget | None] = Reactive(None, repaint=False)


class WorkbenchApp(App[int]):
    """The Tunebench workbench."""

    CSS_PATH = "workbench.tcss"
    TITLE = "Tunebench"
    AUTO_FOCUS = None  # each panel focuses its main widget when shown; "first focusable" would be an input
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]  # noqa: RUF012 - Textual declares it a plain list
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1", "help", "Help", key_display="F1", tooltip="Help: every key, where it applies"),
        Binding("question_mark", "help", "Help", show=False),
        # One footer entry for the five panel keys keeps the footer inside 80 columns; the panel bar and F1 list each.
        *(
            Binding(
                key,
                f"show_panel('{panel}')",
                "Panels" if panel == "data" else name,
                key_display="F2-F6" if panel == "data" else key.upper(),
                show=panel == "data",
                tooltip=f"Show the {name} panel: {title}",
                # Acted on as the key arrives: a binding without priority acts once the key has bubbled back up
                # from the focused field, after the keys typed behind it went to that field. check_action keeps
                # them off dialogs.
                priority=True,
            )
            for panel, key in PANEL_KEYS.items()
            for name, title in [PANELS[panel]]
        ),
        Binding("s", "start", "Start", tooltip="Start a run with the current config (Train panel)"),
        Binding("space", "toggle_pause", "Pause", tooltip="Pause the run at the next step"),
        Binding("space", "resume_run", "Resume", tooltip="Resume the paused run"),
        Binding("x", "stop", "Stop", tooltip="Stop the run at the next step and save the model"),
        Binding(
            "q",
            "quit",
            "Quit",
            tooltip="Quit (asks first while a run is going, or once while the Config form has unsaved edits)",
        ),
        Binding("escape", "leave_field", "Leave field", show=False, tooltip="Leave the text field: q, s, … act again"),
    ]

    def __init__(
        self,
        cfg: RunConfig,
        config_path: str,
        *,
        runner_factory: RunnerFactory = engine_runner,
        resume_factory: ResumeFactory = engine_resumer,
        attach_factory: AttachFactory = engine_attacher,
        predict_backend: Backend | None = None,
        initial_panel: str = "data",
        attach: Path | None = None,
    ) -> None:
        super().__init__()
        if "TEXTUAL_ANIMATIONS" not in os.environ:
            # Each animation frame is a screen update sent to the terminal (over SSH, often), and the UI
            # thread's time and a CPU core's (docs/perf-log.md, cause 11: Textual's tab underline slid over 18
            # frames on every panel key). The workbench shows a change in one frame;
            # TEXTUAL_ANIMATIONS=full brings the animations back.
            self.animation_level = "none"
        self.cfg = cfg
        self.config_path = config_path
        self.runner_factory = runner_factory
        self.resume_factory = resume_factory
        self.attach_factory = attach_factory
        #: A run folder to follow on the Train panel as soon as the panels are up (``tunebench attach``).
        self.attach = attach
        self.predict_backend = predict_backend
        self.initial_panel = initial_panel
        #: Set once the first frame is on screen (Textual's Ready event; start-up benchmarks wait on it).
        self.ready = threading.Event()
        self.training = RunDriver(self)
        #: Whether a quit key has said what unsaved Config edits it would drop (the next one quits).
        self._quit_warned = False
        self.controller = RunController(self.training.changed)
        self._log_handler: LogBridge | None = None
        #: Set once all five panels are mounted (the first frame holds only the initial one).
        self.panels_mounted = asyncio.Event()
        #: The panel last brought on screen, whose data has been loaded.
        self._shown_panel: str | None = None
        self._panel_bar = PanelBar({panel: self._tab_label(panel) for panel in PANELS}, initial_panel, id="panel-bar")

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """A notice, shown as written: its text holds paths, config values and library errors, where Textual's
        markup would read "[/x]" as a tag (and fail on it)."""
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    # -- layout ---------------------------------------------------------------------------------------------
    def get_default_screen(self) -> Screen[Any]:
        return WorkbenchScreen(id="_default")

    def compose(self) -> ComposeResult:
        yield self._panel_bar
        for panel in PANELS:
            with Pane(id=panel) as pane:
                pane.display = panel == self.initial_panel
                if panel == self.initial_panel:  # its title only: the panel itself mounts after the first frame
                    yield Static(PANELS[panel][1], id="first-frame-title", classes="panel-title")
                if panel != "train":
                    # Under every panel but Train, which shows the same line at its top. One per pane, so a
                    # panel switch never resizes the panels' area (that cost a second layout per switch).
                    yield FixedText("", classes="run-bar")
        yield WorkbenchFooter()

    async def _mount_panels(self) -> None:
        """Mount the panels, the one on screen first. The app handles no key or engine message until they are
        all in place, so nothing ever finds a panel missing."""
        initial = self.initial_panel
        try:
            for panel in [initial, *(p for p in PANELS if p != initial)]:
                pane = self.workbench.query_one(f"#{panel}", Pane)
                await pane.remove_children("#first-frame-title")
                await pane.mount(make_panel(panel, self.cfg, self.config_path, self.predict_backend))
                if panel == initial:
                    self._panel_shown(initial, load=False)
        except MountError:  # quit before they were all mounted
            return
        self.panels_mounted.set()

    @asynccontextmanager
    async def run_test(self, *args: Any, **kwargs: Any) -> AsyncGenerator[Pilot[int], None]:
        """Textual's Pilot session, entered once every panel is mounted."""
        async with super().run_test(*args, **kwargs) as pilot:
            await self.panels_mounted.wait()
            yield pilot

    @staticmethod
    def _tab_label(panel: str) -> str:
        return f"{PANEL_KEYS[panel].upper()} {PANELS[panel][0]}"

    @property
    def workbench(self) -> Screen[Any]:
        """The screen that holds the panels (help, sample and quit dialogs stack above it)."""
        return self.screen_stack[0]

    @property
    def data_panel(self) -> DataPanel:
        return cast("DataPanel", self.workbench.query_one("#data-panel"))

    @property
    def config_panel(self) -> ConfigPanel:
        return cast("ConfigPanel", self.workbench.query_one("#config-panel"))

    @property
    def train_panel(self) -> TrainPanel:
        return cast("TrainPanel", self.workbench.query_one("#train-panel"))

    @property
    def predict_panel(self) -> PredictPanel:
        return cast("PredictPanel", self.workbench.query_one("#predict-panel"))

    @property
    def runs_panel(self) -> RunsPanel:
        return cast("RunsPanel", self.workbench.query_one("#runs-panel"))

    @property
    def active_panel(self) -> str:
        return self._panel_bar.active

    def on_mount(self) -> None:
        self._log_handler = LogBridge(self.post_message)
        logging.getLogger().addHandler(self._log_handler)
        self.training.render_run_bar()

    async def on_ready(self) -> None:
        """Textual's signal that the first frame (the panel bar, the initial panel's title, the footer) is on screen."""
        self.ready.set()
        await self._mount_panels()
        heap.start()  # the libraries and widgets of a started workbench live as long as it does
        # The data loads in a worker (a big or hub dataset imports `datasets`); started here, after the first frame.
        if self.panels_mounted.is_set():
            self._load_panel(self.initial_panel)
            if self.attach is not None:
                self.training.attach_run(self.attach)

    def on_unmount(self) -> None:
        # Quitting does not stop a thread worker: leave the run (a detached one trains on; one in this process
        # stops and saves) and wait for the worker, so no thread is left.
        self.training.leave_and_wait(timeout=120)
        if self._log_handler is not None:
            logging.getLogger().removeHandler(self._log_handler)
        heap.thaw()

    # -- panels ---------------------------------------------------------------------------------------------
    def action_show_panel(self, panel: str) -> None:
        # Shown, loaded and focused in this turn: the next key, or the palette action that asked for the panel,
        # may already be queued.
        shown = self.active_panel
        if panel != shown:
            self.workbench.query_one(f"#{shown}", Pane).display = False
            self.workbench.query_one(f"#{panel}", Pane).display = True
            self._panel_bar.active = panel
        self._panel_shown(panel)

    @on(PanelBar.Picked)
    def _on_panel_picked(self, message: PanelBar.Picked) -> None:
        self.action_show_panel(message.panel)

    @on(Pane.FocusStrayed)
    def _on_focus_strayed(self) -> None:
        if self._shown_panel == self.active_panel:
            self._focus_panel(self.active_panel)

    def _panel_shown(self, panel: str, load: bool = True) -> None:
        try:
            widget = self.workbench.query_one(f"#{panel}-panel")
        except NoMatches:  # shutting down
            return
        self._shown_panel = panel
        if load:
            self._load_panel(panel)
        widget.focus_main()  # type: ignore[attr-defined]
        self.refresh_bindings()

    def _focus_panel(self, panel: str) -> None:
        with contextlib.suppress(NoMatches):  # shutting down
            self.workbench.query_one(f"#{panel}-panel").focus_main()  # type: ignore[attr-defined]

    def _load_panel(self, panel: str) -> None:
        """Bring a panel's data up to date (each load runs in a worker)."""
        if panel == "data":
            self.data_panel.ensure_loaded()
        elif panel == "runs":
            self.runs_panel.refresh_runs()

    # -- keys -----------------------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """s shows on the Train panel (during a run too: it then says what stops the run); space and x wherever
        a run is active (greyed on Train when idle)."""
        on_train = self.active_panel == "train"
        if action == "show_panel":
            return len(self.screen_stack) == 1  # a dialog or the palette holds the panel keys
        if action == "start":
            return on_train
        if action in ("toggle_pause", "resume_run", "stop"):
            if action != "stop" and self.controller.paused != (action == "resume_run"):
                return False  # space is Pause while a run trains and Resume while it is paused: one shows
            if self.controller.controllable:
                return True
            return None if on_train else False
        return True

    def action_help(self) -> None:
        from tui.dialogs import HelpScreen
        from tui.keys import help_rows

        self.push_screen(HelpScreen(help_rows(self)))

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        from tui.keys import palette_commands

        yield from palette_commands(self)
        yield from super().get_system_commands(screen)

    def action_leave_field(self) -> None:
        """Escape out of a text field, so that single-key bindings (q, s, …) act again; tab goes back in."""
        from textual.widgets import Select, TextArea  # not at import: their modules would delay the first frame

        focused = self.focused
        if isinstance(focused, Input | TextArea):
            # The nearest container that takes the focus keeps its panel's keys working (Q in the Config form);
            # where none does, the panel's first widget that is no field (the Data table under its filter): with
            # the focus nowhere, the panel's own keys would not act.
            holder = next((n for n in focused.ancestors if isinstance(n, Widget) and n.can_focus), None)
            pane = next((n for n in focused.ancestors if isinstance(n, Pane)), None)
            if holder is None and pane is not None:
                holder = next(
                    (
                        w
                        for w in pane.query("*")
                        if w.focusable and not any(isinstance(n, Input | TextArea | Select) for n in (w, *w.ancestors))
                    ),
                    None,
                )
            self.screen.set_focus(holder)

    # -- config ---------------------------------------------------------------------------------------------
    # Panel messages are handled by name (on_<panel>_<message>): the panels' modules load after the first frame.
    def on_config_panel_changed(self, message: ConfigPanel.Changed) -> None:
        if not self.screen_stack or not self.workbench.query("#data-panel"):
            return  # shutting down
        if message.config == self.cfg:  # an invalid edit, or the form echoing a value it was filled with
            self.refresh_bindings()
            return
        self.cfg = message.config
        self.data_panel.set_config(self.cfg)
        self.train_panel.set_config(self.cfg)
        self.predict_panel.set_config(self.cfg)
        self.runs_panel.set_runs_dir(self.cfg.output.runs_dir)
        self.refresh_bindings()

    def on_data_panel_columns_loaded(self, message: DataPanel.ColumnsLoaded) -> None:
        self.config_panel.set_columns(message.source, message.columns)

    def on_data_panel_classes_loaded(self, message: DataPanel.ClassesLoaded) -> None:
        self.predict_panel.set_data_classes(message.key, message.classes)

    def on_predict_panel_classes_wanted(self, message: PredictPanel.ClassesWanted) -> None:
        self.data_panel.ensure_loaded()

    def on_runs_panel_listed(self, message: RunsPanel.Listed) -> None:
        self.training.runs_listed()

    def on_runs_panel_load_config(self, message: RunsPanel.LoadConfig) -> None:
        if self._edits_kept("l", "load its config", message.path.parent):
            return
        if self.config_panel.load_path(str(message.path)):
            self.notify(f"loaded the config of {message.path.parent.name}")
        self.action_show_panel("config")

    def on_runs_panel_clone_run(self, message: RunsPanel.CloneRun) -> None:
        if self._edits_kept("n", "start a new config from it", message.run_dir):
            return
        if self.config_panel.clone_run(message.run_dir):
            self.notify(f"a new config from {message.run_dir.name}; s on the Train panel starts it")
        self.action_show_panel("config")

    def _edits_kept(self, key: str, what: str, run_dir: Path) -> bool:
        """The first ``key`` that would replace the Config form while it holds unsaved edits names them and
        keeps them; the same key on the same run again replaces them."""
        unsaved = self.config_panel.edits_to_drop(key, str(run_dir))
        if unsaved:
            self.notify(
                f"{unsaved} in Config: {key} again drops them to {what}; ctrl+s there saves them",
                title=run_dir.name,
                severity="warning",
            )
        return bool(unsaved)

    def on_runs_panel_use_for_predict(self, message: RunsPanel.UseForPredict) -> None:
        self.predict_panel.set_tuned(str(message.run_dir), "picked in Runs")
        self.action_show_panel("predict")

    # -- the run (tui.run_driver) ---------------------------------------------------------------------------
    def action_start(self) -> None:
        self.training.start()

    def action_toggle_pause(self) -> None:
        self.training.toggle_pause()

    def action_resume_run(self) -> None:
        self.training.toggle_pause()

    def action_stop(self) -> None:
        self.training.stop()

    async def action_quit(self) -> None:
        if not self.controller.active and self._warn_of_unsaved_edits():
            return
        await self.training.quit()

    def _warn_of_unsaved_edits(self) -> bool:
        """The first quit key while the Config form holds edits its file lacks names them, as ctrl+l does; the
        next quit key quits (a run's own config is saved in its folder, so a run going asks its own question)."""
        unsaved = self.config_panel.unsaved() if self.panels_mounted.is_set() else ""
        if not unsaved or self._quit_warned:
            return False
        self._quit_warned = True
        self.notify(
            f"{unsaved} in Config: ctrl+s there saves them; q or ctrl+q again quits",
            title="quit",
            severity="warning",
        )
        return True

    def on_runs_panel_resume_run(self, message: RunsPanel.ResumeRun) -> None:
        self.training.resume_run(message.run_dir)

    def on_runs_panel_attach_run(self, message: RunsPanel.AttachRun) -> None:
        self.training.attach_run(message.run_dir)

    @on(StepsLogged)
    def _on_steps(self, message: StepsLogged) -> None:
        self.training.steps_logged(message)

    @on(RunHistory)
    def _on_history(self, message: RunHistory) -> None:
        self.training.history(message)

    @on(EngineEvent)
    def _on_engine_event(self, message: EngineEvent) -> None:
        self.training.engine_event(message)

    @on(LibraryLog)
    def _on_library_log(self, message: LibraryLog) -> None:
        self.training.library_log(message)

    @on(Worker.StateChanged)
    def _on_worker(self, event: Worker.StateChanged) -> None:
        self.training.worker_changed(event)
