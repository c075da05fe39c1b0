"""The Textual side of the workbench's run: the training worker, the run keys, and the run's messages.

``tui.controller.RunController`` knows the state of the run; ``RunDriver`` starts the worker, paces the steps into
the Train panel, and makes the end of a run show in the other panels. The app forwards its run keys and the
run's messages here.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual.content import Content
from textual.timer import Timer
from textual.worker import Worker, WorkerFailed, WorkerState

from engine.errors import UserError, describe_failure
from engine.events import RunFailed, RunFinished, RunStarted
from engine.runs import LIVE, RunDir
from tui import heap
from tui.bridge import STEP_REFRESH_SECONDS, EngineEvent, EventBridge, LibraryLog, RunHistory, StepsLogged
from tui.controller import RunState
from tui.widgets.fixed_text import FixedText

if TYPE_CHECKING:
    from engine.runner import RunHandle
    from tui.app import WorkbenchApp

#: Seconds after a run's worker ends before the heap's sweep (tui/heap.py).
SWEEP_DELAY_SECONDS = 2.0


class RunDriver:
    """Runs the app's one run in a thread worker and shows what it says."""

    def __init__(self, app: WorkbenchApp) -> None:
        self.app = app
        #: The thread worker that runs the current (or last) run.
        self.worker: Worker[Any] | None = None
        #: The worker that waits for a stopping run, then quits the app.
        self.quit_worker: Worker[None] | None = None
        self.quitting = False
        #: The run the user quit and left training (or paused), for the terminal's last line.
        self.left_run: Path | None = None
        self._run_done = threading.Event()
        self._run_done.set()
        self._steps_shown_at = 0.0
        self._steps_timer: Timer | None = None

    def leave_and_wait(self, timeout: float) -> None:
        """Leave the run (a detached one trains on) and wait for the worker (quitting does not stop a thread)."""
        handle = self.app.controller.handle
        if handle is not None and not self._run_done.is_set():
            handle.leave()
            self._run_done.wait(timeout=timeout)

    def start(self) -> None:
        if self.app.controller.active:
            self.app.notify("a run is already in progress; x stops it", severity="warning")
            return
        panel = self.app.config_panel
        if not panel.is_valid:
            path, message = next(iter(panel.problems.items()))
            self.app.notify(f"{path}: {message}", title="fix the config first", severity="error")
            self.app.action_show_panel("config")
            panel.focus_field(path)
            return
        bridge = EventBridge(self.app.post_message)
        runner = self.app.runner_factory(panel.config, [bridge])
        self._launch(runner, bridge, "loading libraries, data and model", from_form=True)

    def resume_run(self, run_dir: Path) -> None:
        """Continue a stopped, failed or killed run in its own folder, streaming to the Train panel."""
        if self.app.controller.active:
            current = self.app.controller.run_dir
            if current is not None and Path(current).resolve() == run_dir.resolve():
                self.app.notify(f"{run_dir.name} trains already; the Train panel (F4) shows it")
            else:
                self.app.notify(
                    f"a run is in progress; x on the Train panel (F4) stops it, then r resumes {run_dir.name}",
                    severity="warning",
                )
            return
        bridge = EventBridge(self.app.post_message)
        try:
            runner = self.app.resume_factory(run_dir, [bridge])
        except UserError as exc:  # finished, not a run, or trained by another process: the engine says which
            self.app.notify(str(exc), title="cannot resume", severity="error", timeout=10)
            return
        self._launch(runner, bridge, f"resuming {run_dir.name} from its latest checkpoint", resumed=run_dir)

    def attach_run(self, run_dir: Path) -> None:
        """Follow the run in ``run_dir`` on the Train panel: its whole history, then live if it still trains."""
        if self.app.controller.active:
            self.app.notify(f"a run is already on the Train panel; leave it (q) before attaching {run_dir.name}")
            return
        bridge = EventBridge(self.app.post_message)
        try:
            runner = self.app.attach_factory(run_dir, [bridge])
        except UserError as exc:
            self.app.notify(str(exc), title="cannot attach", severity="error", timeout=10)
            return
        self._launch(runner, bridge, f"attached to {run_dir.name}", title=f"attached to {run_dir.name}")

    def _launch(
        self,
        runner: RunHandle,
        bridge: EventBridge,
        detail: str,
        resumed: Path | None = None,
        title: str = "new run",
        *,
        from_form: bool = False,
    ) -> None:
        """Run ``runner`` in the app's training worker; its events reach the Train panel through ``bridge``.

        ``resumed`` is the folder of a resumed run: its earlier events are read in the worker and posted first.
        ``from_form``: the run of the Config form's config (s), not of a folder's own.
        """
        if self._steps_timer is not None:  # the last run's: firing now, it would take the new run's first steps
            self._steps_timer.stop()  # before its RunStarted, which then redraws the chart without them
            self._steps_timer = None
        what = f"resuming {resumed.name}" if resumed else title
        self.app.train_panel.reset(runner.cfg, what, from_form=from_form)
        self.app.controller.begin(runner, bridge, detail)
        if self.app.active_panel != "train":
            self.app.action_show_panel("train")
        done = self._run_done = threading.Event()

        def run() -> Any:
            try:
                if resumed is not None:
                    from engine.runs import RunDir, read_events

                    self.app.post_message(RunHistory(bridge, read_events(RunDir(resumed).events_path)))
                return runner.run()
            finally:
                done.set()

        self.worker = self.app.run_worker(
            run, name="training", group="train", thread=True, exclusive=True, exit_on_error=False, description="run"
        )

    def toggle_pause(self) -> None:
        if self._controls("pause or resume"):
            self.app.controller.toggle_pause()

    def stop(self) -> None:
        if self._controls("stop"):
            self.app.controller.stop()

    def _controls(self, what: str) -> bool:
        """Whether the run on the Train panel takes commands; said when not (the palette offers the action,
        where the footer greys its key)."""
        if self.app.controller.controllable:
            return True
        if self.app.controller.active:
            self.app.notify(f"nothing to {what}: the run is stopping, and saves first")
        else:
            self.app.notify(f"nothing to {what}: no run is going; s on the Train panel (F4) starts one")
        return False

    async def quit(self) -> None:
        if not self.app.controller.active:
            self.app.exit(0)
            return
        if self.quitting:
            self.app.notify("still saving the run; the workbench closes when it is done")
            return
        from tui.dialogs import ConfirmQuit

        if isinstance(self.app.screen, ConfirmQuit):  # ctrl+q in the question: its default, the run trains on
            self.app.screen.dismiss("leave")
            return
        self.app.push_screen(ConfirmQuit(paused=self.app.controller.paused), callback=self._on_quit_answer)

    def _on_quit_answer(self, answer: str | None) -> None:
        if answer is None:
            return
        if not self.app.controller.active or self.app.controller.handle is None:
            self.app.exit(0)
            return
        self.quitting = True
        if answer == "stop":
            self.app.controller.stop("saving, then quitting")
        else:
            self.app.controller.handle.leave()
            if self.app.controller.run_dir:
                self.left_run = Path(self.app.controller.run_dir)
        self.quit_worker = self.app.run_worker(
            self._exit_after_run(), group="quit", exclusive=True, exit_on_error=False
        )

    async def _exit_after_run(self) -> None:
        if self.worker is not None:
            with contextlib.suppress(WorkerFailed):  # a failure is already on screen; quitting goes on
                await self.worker.wait()
        self.app.exit(0)

    def changed(self) -> None:
        """The controller's state or detail changed: the Train panel, the run bars and the footer follow."""
        self.app.train_panel.set_state(self.app.controller.state, self.app.controller.detail)
        self.app.runs_panel.watch_folder = not self.app.controller.active
        self.render_run_bar()
        self.app.refresh_bindings()
        if not self.app.controller.active and not self.quitting:
            from tui.dialogs import ConfirmQuit

            if isinstance(self.app.screen, ConfirmQuit):  # its question is moot: the run under it has ended
                self.app.screen.dismiss(None)
                self.app.notify(f"the run {self.app.controller.state} meanwhile; q quits now", title="quit")

    def steps_logged(self, message: StepsLogged) -> None:
        if message.bridge is not self.app.controller.bridge:
            message.bridge.take_steps()  # a previous run's last steps
            return
        self.app.controller.steps_arrived()
        wait = self._steps_shown_at + STEP_REFRESH_SECONDS - time.monotonic()
        if wait <= 0:
            self._show_steps()
        elif self._steps_timer is None:
            self._steps_timer = self.app.set_timer(wait, self._show_steps)

    def _show_steps(self, upto: int | None = None) -> None:
        """Hand the steps waiting in the bridge (``upto``: the first that many of the run's) to the Train panel
        and the run bar."""
        if upto is None:
            if self._steps_timer is not None:
                self._steps_timer.stop()
                self._steps_timer = None
            self._steps_shown_at = time.monotonic()
        if self.app.controller.bridge is None:
            return
        steps = self.app.controller.bridge.take_steps(upto)
        if steps:
            self.app.train_panel.add_steps(steps)
            self.render_run_bar()

    def history(self, message: RunHistory) -> None:
        if message.bridge is self.app.controller.bridge:
            self.app.train_panel.set_history(message.events)

    def engine_event(self, message: EngineEvent) -> None:
        event = message.event
        if message.bridge is not self.app.controller.bridge:
            return
        self._show_steps(upto=message.steps_before)  # the steps before this event first, and only those
        self.app.train_panel.handle(event)
        self.app.controller.take(event)
        if isinstance(event, RunStarted):
            heap.freeze()  # the modules imported to start the run stay as long as the workbench
        elif isinstance(event, RunFinished):
            run_dir = self.app.controller.run_dir
            if event.model_dir and run_dir:
                self.app.predict_panel.set_tuned(run_dir, "this session's run")
            self.app.notify(f"run {event.status}: {Path(run_dir or '').name}", title="training")
        elif isinstance(event, RunFailed):
            self.app.notify(event.error, title="the run failed", severity="error", timeout=10)

    def library_log(self, message: LibraryLog) -> None:
        self.app.train_panel.write_log(f"{message.event.level}: {message.event.message}")

    def worker_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is not self.worker or not event.worker.is_finished:
            return
        # The sweep for what was frozen and has since become garbage: a full pass over the heap, once the run's
        # last frames are drawn (an attach to a long finished run ends at once, while its history is still
        # being shown, and the pass would hold the interpreter lock the UI draws with).
        self.app.set_timer(SWEEP_DELAY_SECONDS, heap.collect_and_freeze)
        if self.app.screen_stack and self.app.workbench.query("#runs-panel"):
            self.app.runs_panel.refresh_runs()  # the summary is written after the last event: list the final status
        if event.state == WorkerState.ERROR and self.app.controller.active:
            # A run reports its own end as an event; a worker that raised is a bug outside the run.
            assert event.worker.error is not None
            message, tb = describe_failure(event.worker.error)
            self.app.train_panel.show_failure(message, tb)
            self.app.controller.crashed()

    def runs_listed(self) -> None:
        """The Runs panel listed the folder again: the run bar names the runs that train there while this
        workbench does not, and what became of its own ended run if another process resumed it."""
        if not self.app.screen_stack:
            return  # a listing that arrives while the app closes: its screens, and the bars, are gone
        since = self._own_run_since()
        if since:
            self.app.controller.carried_on(since)  # re-renders the run bar
        else:
            self.render_run_bar()

    def _own_run_since(self) -> str:
        """How the workbench's stopped or failed run stands after another process took it up ("resumed
        elsewhere: finished, acc 0.8000"); "" while the listing shows it as this workbench left it."""
        controller = self.app.controller
        if controller.state not in (RunState.STOPPED, RunState.FAILED) or not controller.run_dir:
            return ""
        name = Path(controller.run_dir).name
        info = next((r for r in self.app.runs_panel.runs if r.name == name), None)
        left = {"stopped"} if controller.state is RunState.STOPPED else {"failed", "killed"}  # killed: no summary
        if info is None or info.status in left:
            return ""
        if info.status in LIVE:
            # A listing made before the run's end here can still say it trains: its lock says for sure.
            state = RunDir(Path(controller.run_dir)).live_state()
            if state is None:
                return ""
            doing = "paused" if state == "paused" else "training"
            progress = f" at step {info.progress}" if info.progress else ""
            return f"resumed elsewhere: {doing}{progress}; a in the Runs panel follows it"
        best = f", {info.best_text}" if info.best_value is not None else ""
        return f"resumed elsewhere since: {info.status}{best}"

    def _elsewhere_text(self) -> str:
        """The runs that train in the runs folder while the workbench trains nothing itself (a queue runner's,
        another terminal's); "" when none does."""
        if not self.app.panels_mounted.is_set():
            return ""
        own = self.app.controller.run_dir  # just ended: the last listing may still have it training
        live = self.app.runs_panel.live_runs(but=Path(own).name if own else None)
        if not live:
            return ""
        where = self.app.runs_panel.runs_dir
        if len(live) > 1:
            return f"{len(live)} runs train in {where}/ · F6 lists them"
        run = live[0]
        doing = "is paused" if run.status == "paused" else "trains"
        progress = f" (step {run.progress})" if run.progress else ""
        return f"{run.name} {doing} in {where}/{progress} · F6 lists it"

    def render_run_bar(self) -> None:
        if not self.app.screen_stack:
            return  # the app is closing (a run's last event, a listing, can come after its screens went)
        state = self.app.controller.state
        text = f"{state.mark} {state}"
        if self.app.controller.detail:
            text += f" ({self.app.controller.detail})"
        elsewhere = self._elsewhere_text() if not state.active else ""
        if state is RunState.IDLE:
            text += " · " + (elsewhere or "s on the Train panel (F4) starts a run")
        else:  # the workbench's last run, unless others train in its runs folder now (the Train panel shows it)
            text += " · " + (elsewhere or self.app.train_panel.progress_text())
        content = Content(text)
        for bar in self.app.workbench.query(".run-bar").results(FixedText):
            bar.update(content)
