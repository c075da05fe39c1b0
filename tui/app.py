"""WorkbenchApp: five panels, global keys, and the one training run the app owns.

Threads: the run trains in a child process (``engine.child.ChildRun``), which one app-level thread worker
starts, feeds control to and reads events from; the events reach the UI only through ``tui.bridge``
(``post_message``). Data loading, tokenizing, listing runs and predicting run in their own
thread workers and post typed messages back. No widget is touched off the UI thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import AsyncGenerator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.timer import Timer
from textual.widget import MountError
from textual.widgets import Input, Static, TabPane, TextArea
from textual.worker import Worker, WorkerFailed, WorkerState

from engine.config import RunConfig
from engine.errors import UserError
from engine.events import (
    RunFailed,
    RunFinished,
    RunStarted,
)
from tui import heap
from tui.bridge import (
    STEP_REFRESH_SECONDS,
    EngineEvent,
    EventBridge,
    LibraryLog,
    LogBridge,
    ResumeFactory,
    RunHistory,
    RunnerFactory,
    StepsLogged,
    engine_resumer,
    engine_runner,
)
from tui.controller import RunController, RunState
from tui.panels import PANELS, make_panel
from tui.widgets.fixed_text import FixedText
from tui.widgets.footer import WorkbenchFooter
from tui.widgets.panel_tabs import PanelTabs

if TYPE_CHECKING:  # each panel's module is imported when the panel is mounted (tui.panels.make_panel)
    from textual.pilot import Pilot

    from engine.runner import RunHandle
    from tui.panels.config import ConfigPanel
    from tui.panels.data import DataPanel
    from tui.panels.predict import Backend, PredictPanel
    from tui.panels.runs import RunsPanel
    from tui.panels.train import TrainPanel

PANEL_KEYS = {"data": "f2", "config": "f3", "train": "f4", "predict": "f5", "runs": "f6"}


class WorkbenchApp(App[int]):
    """The Tunebench workbench."""

    CSS_PATH = "workbench.tcss"
    TITLE = "Tunebench"
    AUTO_FOCUS = None  # each panel focuses its main widget when shown; "first focusable" would be an input
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]  # noqa: RUF012 - Textual declares it a plain list
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1", "help", "Help", key_display="F1", tooltip="Help: every key, where it applies"),
        Binding("question_mark", "help", "Help", show=False),
        # One footer entry for the five panel keys keeps the footer inside 80 columns; the tabs and F1 list each.
        *(
            Binding(
                key,
                f"show_panel('{panel}')",
                "Panels" if panel == "data" else name,
                key_display="F2-F6" if panel == "data" else key.upper(),
                show=panel == "data",
                tooltip=f"Show the {name} panel: {title}",
            )
            for panel, key in PANEL_KEYS.items()
            for name, title in [PANELS[panel]]
        ),
        Binding("s", "start", "Start", tooltip="Start a run with the current config (Train panel)"),
        Binding("space", "toggle_pause", "Pause", tooltip="Pause the run at the next step, or resume it"),
        Binding("x", "stop", "Stop", tooltip="Stop the run at the next step and save the model"),
        Binding("q", "quit", "Quit", tooltip="Quit (asks first while a run is going; the run is saved)"),
        Binding("escape", "leave_field", "Leave field", show=False, tooltip="Leave the text field: q, s, … act again"),
    ]

    def __init__(
        self,
        cfg: RunConfig,
        config_path: str,
        *,
        runner_factory: RunnerFactory = engine_runner,
        resume_factory: ResumeFactory = engine_resumer,
        predict_backend: Backend | None = None,
        initial_panel: str = "data",
    ) -> None:
        super().__init__()
        if "TEXTUAL_ANIMATIONS" not in os.environ:
            # Each animation frame is a screen update sent to the terminal (over SSH, often): Textual's tab
            # underline slid over 18 frames on every panel key, each frame the UI thread's time and a CPU core's
            # (docs/perf-log.md, cause 11). The workbench shows a change in one frame;
            # TEXTUAL_ANIMATIONS=full brings the animations back.
            self.animation_level = "none"
        self.cfg = cfg
        self.config_path = config_path
        self.runner_factory = runner_factory
        self.resume_factory = resume_factory
        self.predict_backend = predict_backend
        self.initial_panel = initial_panel
        #: Set once the first frame is on screen (Textual's Ready event; start-up benchmarks wait on it).
        self.ready = threading.Event()
        self.controller = RunController(self._run_changed)
        self.train_worker: Worker[Any] | None = None
        self.quitting = False
        self._run_done = threading.Event()
        self._run_done.set()
        self._log_handler: LogBridge | None = None
        self.quit_worker: Worker[None] | None = None
        self._steps_shown_at = 0.0
        self._steps_timer: Timer | None = None
        #: Set once all five panels are mounted (the first frame holds only the initial one).
        self.panels_mounted = asyncio.Event()
        #: The panel last brought on screen, whose data has been loaded.
        self._shown_panel: str | None = None

    # -- layout ---------------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        with PanelTabs(initial=self.initial_panel, id="panels"):
            for panel in PANELS:
                with TabPane(self._tab_label(panel), id=panel):
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
                pane = self.workbench.query_one(f"#{panel}", TabPane)
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
        return self.workbench.query_one(PanelTabs).active

    def on_mount(self) -> None:
        self._log_handler = LogBridge(self.post_message)
        logging.getLogger().addHandler(self._log_handler)
        self._render_run_bar()

    async def on_ready(self) -> None:
        """Textual's signal that the first frame (the tabs, the initial panel's title, the footer) is on screen."""
        self.ready.set()
        await self._mount_panels()
        heap.freeze()  # the libraries and widgets of a started workbench live as long as it does
        # Loading the data imports `datasets` in a worker; started here, it does not slow the first frame.
        if self.panels_mounted.is_set():
            self._load_panel(self.initial_panel)

    def on_unmount(self) -> None:
        # Quitting does not stop a thread worker; stop the run and wait for it to save, so no thread is left.
        if self.controller.handle is not None and not self._run_done.is_set():
            self.controller.handle.stop()
            self._run_done.wait(timeout=120)
        if self._log_handler is not None:
            logging.getLogger().removeHandler(self._log_handler)
        heap.thaw()

    # -- panels ---------------------------------------------------------------------------------------------
    def action_show_panel(self, panel: str) -> None:
        # Shown and focused here, not when the tabs' TabActivated message arrives: the next key, or the palette
        # action that asked for the panel, may already be queued before that message.
        self.workbench.query_one(PanelTabs).active = panel
        self._panel_shown(panel)

    @on(PanelTabs.TabActivated)
    def _on_tab(self, event: PanelTabs.TabActivated) -> None:
        # An activation reaches the app after the keys already queued: one for a pane a later key has replaced
        # is stale, and acting on it would focus a panel that is no longer on show. The tabs' own first
        # activation (the initial panel) can arrive before or after the panels mount; either way on_ready has
        # loaded that panel, and a second load would redraw its list under the user.
        pane = event.pane.id
        if pane and pane == self.active_panel and pane != self._shown_panel and self.panels_mounted.is_set():
            self._panel_shown(pane)

    @on(PanelTabs.FocusStrayed)
    def _on_focus_strayed(self, message: PanelTabs.FocusStrayed) -> None:
        if message.active == self.active_panel and self._shown_panel == message.active:
            self._focus_panel(message.active)

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
        """s shows on the Train panel; space and x wherever a run is active (greyed on Train when idle)."""
        on_train = self.active_panel == "train"
        if action == "start":
            if not on_train:
                return False
            return None if self.controller.active else True
        if action in ("toggle_pause", "stop"):
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
        if isinstance(self.focused, Input | TextArea):
            self.screen.set_focus(None)

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

    def on_runs_panel_load_config(self, message: RunsPanel.LoadConfig) -> None:
        if self.config_panel.load_path(str(message.path)):
            self.notify(f"loaded the config of {message.path.parent.name}")
        self.action_show_panel("config")

    def on_runs_panel_resume_run(self, message: RunsPanel.ResumeRun) -> None:
        self.resume_run(message.run_dir)

    def on_runs_panel_use_for_predict(self, message: RunsPanel.UseForPredict) -> None:
        self.predict_panel.set_tuned(str(message.run_dir), "picked in Runs")
        self.action_show_panel("predict")

    # -- the run --------------------------------------------------------------------------------------------
    def action_start(self) -> None:
        if self.controller.active:
            self.notify("a run is already in progress; x stops it", severity="warning")
            return
        panel = self.config_panel
        if not panel.is_valid:
            path, (_value, message) = next(iter(panel.errors.items()))
            self.notify(f"{path}: {message}", title="fix the config first", severity="error")
            self.action_show_panel("config")
            panel.focus_field(path)
            return
        bridge = EventBridge(self.post_message)
        self._launch(self.runner_factory(panel.config, [bridge]), bridge, "loading libraries, data and model")

    def resume_run(self, run_dir: Path) -> None:
        """Continue a stopped, failed or killed run in its own folder, streaming to the Train panel."""
        if self.controller.active:
            self.notify(f"a run is already in progress; stop it (x) before resuming {run_dir.name}", severity="warning")
            return
        bridge = EventBridge(self.post_message)
        try:
            runner = self.resume_factory(run_dir, [bridge])
        except UserError as exc:  # finished, not a run, or trained by another process: the engine says which
            self.notify(str(exc), title="cannot resume", severity="error", timeout=10)
            return
        self._launch(runner, bridge, f"resuming {run_dir.name} from its latest checkpoint", resumed=run_dir)

    def _launch(self, runner: RunHandle, bridge: EventBridge, detail: str, resumed: Path | None = None) -> None:
        """Run ``runner`` in the app's training worker; its events reach the Train panel through ``bridge``.

        ``resumed`` is the folder of a resumed run: its earlier events are read in the worker and posted first.
        """
        self.train_panel.reset(runner.cfg, f"resuming {resumed.name}" if resumed else "new run")
        self.controller.begin(runner, bridge, detail)
        if self.active_panel != "train":
            self.action_show_panel("train")
        done = self._run_done = threading.Event()

        def run() -> Any:
            try:
                if resumed is not None:
                    from engine.runs import RunDir, read_events

                    self.post_message(RunHistory(bridge, read_events(RunDir(resumed).events_path)))
                return runner.run()
            finally:
                heap.collect_and_freeze()  # the sweep for what was frozen and has since become garbage
                done.set()

        self.train_worker = self.run_worker(
            run, name="training", group="train", thread=True, exclusive=True, exit_on_error=False, description="run"
        )

    def action_toggle_pause(self) -> None:
        self.controller.toggle_pause()

    def action_stop(self) -> None:
        self.controller.stop()

    async def action_quit(self) -> None:
        if not self.controller.active:
            self.exit(0)
            return
        if self.quitting:
            self.notify("still saving the run; the workbench closes when it is done")
            return
        from tui.dialogs import ConfirmQuit

        self.push_screen(ConfirmQuit(), callback=self._on_quit_answer)

    def _on_quit_answer(self, stop: bool | None) -> None:
        if not stop:
            return
        if not self.controller.active:
            self.exit(0)
            return
        self.quitting = True
        self.controller.stop("saving, then quitting")
        self.quit_worker = self.run_worker(self._exit_after_run(), group="quit", exclusive=True, exit_on_error=False)

    async def _exit_after_run(self) -> None:
        if self.train_worker is not None:
            with contextlib.suppress(WorkerFailed):  # a failure is already on screen; quitting goes on
                await self.train_worker.wait()
        self.exit(0)

    def _run_changed(self) -> None:
        """The controller's state or detail changed: the Train panel, the run bars and the footer follow."""
        self.train_panel.set_state(self.controller.state, self.controller.detail)
        self._render_run_bar()
        self.refresh_bindings()

    @on(StepsLogged)
    def _on_steps(self, message: StepsLogged) -> None:
        if message.bridge is not self.controller.bridge:
            message.bridge.take_steps()  # a previous run's last steps
            return
        self.controller.steps_arrived()
        wait = self._steps_shown_at + STEP_REFRESH_SECONDS - time.monotonic()
        if wait <= 0:
            self._show_steps()
        elif self._steps_timer is None:
            self._steps_timer = self.set_timer(wait, self._show_steps)

    def _show_steps(self) -> None:
        """Hand the steps waiting in the bridge to the Train panel and the run bar."""
        if self._steps_timer is not None:
            self._steps_timer.stop()
            self._steps_timer = None
        self._steps_shown_at = time.monotonic()
        if self.controller.bridge is None:
            return
        steps = self.controller.bridge.take_steps()
        if steps:
            self.train_panel.add_steps(steps)
            self._render_run_bar()

    @on(RunHistory)
    def _on_history(self, message: RunHistory) -> None:
        if message.bridge is self.controller.bridge:
            self.train_panel.set_history(message.events)

    @on(EngineEvent)
    def _on_engine_event(self, message: EngineEvent) -> None:
        event = message.event
        if message.bridge is not self.controller.bridge:
            return
        self._show_steps()  # the steps before this event first, in order
        self.train_panel.handle(event)
        self.controller.take(event)
        if isinstance(event, RunStarted):
            heap.freeze()  # the modules imported to start the run stay as long as the workbench
        elif isinstance(event, RunFinished):
            run_dir = self.controller.run_dir
            if event.model_dir and run_dir:
                self.predict_panel.set_tuned(run_dir, "this session's run")
            self.notify(f"run {event.status}: {Path(run_dir or '').name}", title="training")
        elif isinstance(event, RunFailed):
            self.notify(event.error, title="the run failed", severity="error", timeout=10)

    @on(LibraryLog)
    def _on_library_log(self, message: LibraryLog) -> None:
        self.train_panel.write_log(f"{message.event.level}: {message.event.message}")

    @on(Worker.StateChanged)
    def _on_worker(self, event: Worker.StateChanged) -> None:
        if event.worker is not self.train_worker or not event.worker.is_finished:
            return
        if self.screen_stack and self.workbench.query("#runs-panel"):
            self.runs_panel.refresh_runs()  # the summary is written after the last event: list the final status
        if event.state == WorkerState.ERROR and self.controller.active:
            # A run reports its own end as an event; a worker that raised is a bug outside the run.
            assert event.worker.error is not None
            from tui.panels.data import describe_failure

            message, tb = describe_failure(event.worker.error)
            self.train_panel.show_failure(message, tb)
            self.controller.crashed()

    def _render_run_bar(self) -> None:
        state = self.controller.state
        text = f"{state.mark} {state}"
        if self.controller.detail:
            text += f" ({self.controller.detail})"
        if state is not RunState.IDLE:
            text += " · " + self.train_panel.progress_text()
        else:
            text += " · s on the Train panel (F4) starts a run"
        content = Content(text)
        for bar in self.workbench.query(".run-bar").results(FixedText):
            bar.update(content)
