"""Where the UI thread's time goes while a run trains: garbage collections and widget rebuilds.

Not a benchmark (no goal): the diagnosis behind causes 3 and 4 in docs/perf-log.md. The real workbench under
Pilot, the run of ``ui_responsiveness.py`` (random small BERT, an event every step); while it trains, one
round of panel keys and typing (and two rounds before it, the panels' first visits, which load their data and
libraries). Printed: each garbage collection by generation (from ``gc.callbacks``) in both, how
often each kind of widget recomposed (Textual's footer did, four times per panel switch, until the workbench
drew its own), how many messages and events the widgets handled (a panel switch sends Show, Resize and Hide
to every widget that appears or goes), how long each kind of widget took to draw its lines, and each key's
time to its frame.

    python bench/ui_diagnose.py            # ~1 minute on 2 CPU cores
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchlib import machine_line, make_bert, parse_args, print_table, quiet_transformers, scratch_dir
from ui_responsiveness import KeyTimes, key_round, run_config
from uilib import FrameProbe


class GcLog:
    """Duration of every collection, by generation, while ``recording``."""

    def __init__(self) -> None:
        self.recording = False
        self.ms: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._start = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        elif self.recording:
            self.ms[info["generation"]].append((time.perf_counter() - self._start) * 1000)


async def diagnose(
    cfg: Any, config_path: Path
) -> tuple[KeyTimes, dict[str, GcLog], Counter[str], Counter[str], Counter[str]]:
    from textual.message import Message
    from textual.message_pump import MessagePump
    from textual.widget import Widget

    from tui.app import WorkbenchApp

    recomposed: Counter[str] = Counter()
    original = Widget.recompose

    async def counted(widget: Widget) -> None:
        recomposed[type(widget).__name__] += 1
        await original(widget)

    #: Messages and events handled during the round, by type: each one is a turn of a widget's own task.
    handled: Counter[str] = Counter()
    dispatch = MessagePump._dispatch_message

    async def counted_dispatch(pump: MessagePump, message: Message) -> None:
        handled[type(message).__name__] += 1
        await dispatch(pump, message)

    #: Milliseconds each kind of widget spent drawing its lines for the frames of the round.
    drawing: Counter[str] = Counter()
    #: How many times each kind drew (a widget draws again when it changed, or when what is under it moved).
    draws: Counter[str] = Counter()
    render_lines = Widget.render_lines

    def timed_render_lines(widget: Widget, crop: Any) -> Any:
        start = time.perf_counter()
        lines = render_lines(widget, crop)
        drawing[type(widget).__name__] += (time.perf_counter() - start) * 1000  # type: ignore[assignment]
        draws[type(widget).__name__] += 1
        return lines

    Widget.recompose = counted  # type: ignore[method-assign, assignment]
    MessagePump._dispatch_message = counted_dispatch  # type: ignore[method-assign, assignment]
    Widget.render_lines = timed_render_lines  # type: ignore[method-assign]
    idle_gc, gc_log, end_gc = GcLog(), GcLog(), GcLog()
    times = KeyTimes()
    app = WorkbenchApp(cfg, str(config_path), initial_panel="train")
    async with app.run_test(size=(120, 40)) as pilot:
        probe = FrameProbe(app)
        idle_gc.recording = True  # the panels load their data and libraries on their first visits
        for _ in range(2):
            await key_round(app, probe, KeyTimes(), training=False)  # first visits, then again; not counted
        idle_gc.recording = False
        await pilot.press("s")
        await app.controller.wait_for("training", "failed", "finished")
        recomposed.clear()
        handled.clear()
        drawing.clear()
        draws.clear()
        gc_log.recording = True
        await key_round(app, probe, times, training=True)
        gc_log.recording = False
        in_round = Counter(handled)  # not the run's end and the app's shutdown that follow
        drawn = {name: (ms, draws[name]) for name, ms in drawing.items()}
        end_gc.recording = True  # the app collects once when a run ends (tui/heap.py)
        if app.controller.state == "training":
            await pilot.press("x")
        await app.controller.wait_for("finished", "stopped", "failed")
        if app.training.worker is not None:
            with contextlib.suppress(Exception):  # the worker's own failure is the run's, reported elsewhere
                await app.training.worker.wait()
        end_gc.recording = False
    Widget.recompose = original  # type: ignore[method-assign]
    MessagePump._dispatch_message = dispatch  # type: ignore[method-assign]
    Widget.render_lines = render_lines  # type: ignore[method-assign]
    gcs = {"two rounds before the run": idle_gc, "the round while training": gc_log, "the run's end": end_gc}
    return times, gcs, recomposed, in_round, drawn


def main() -> None:
    parse_args(__doc__ or "")
    quiet_transformers()
    print(machine_line())
    with scratch_dir("ui-diagnose") as tmp:
        os.chdir(tmp)
        from engine.config import save_config

        model_dir = make_bert(tmp / "model", "small", max_positions=128)
        cfg = run_config(model_dir, tmp / "runs", False, None)
        save_config(cfg, tmp / "config.yaml")
        times, gcs, recomposed, handled, drawn = asyncio.run(diagnose(cfg, tmp / "config.yaml"))
        os.chdir(Path(__file__).resolve().parent.parent)
    print_table(
        ["phase", "generation", "collections", "total ms", "max ms"],
        [[phase, g, len(ms), sum(ms), max(ms, default=0.0)] for phase, log in gcs.items() for g, ms in log.ms.items()],
    )
    print(f"recomposed during the round: {dict(recomposed) or 'nothing'}")
    top = ", ".join(f"{name} {n}" for name, n in handled.most_common(8))
    print(f"messages and events handled during the round: {sum(handled.values())} ({top}, ...)")
    slowest = ", ".join(
        f"{name} {ms:.1f} in {n}" for name, (ms, n) in sorted(drawn.items(), key=lambda kv: -kv[1][0])[:8]
    )
    total = sum(ms for ms, _n in drawn.values())
    print(f"ms the widgets spent drawing their lines during the round, and in how many draws: {total:.1f}")
    print(f"  by kind: {slowest}, ...")
    print_table(
        ["panel key", "ms to frame"], [[k, " ".join(f"{v:.0f}" for v in vs)] for k, vs in times.by_panel_ms.items()]
    )
    print(f"typed keys, ms to frame: {' '.join(f'{v:.0f}' for v in times.typing_ms)}")


if __name__ == "__main__":
    main()
