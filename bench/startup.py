"""Start-up: process start to first frame, the workbench against a bare Textual app with one Label.

Each app runs in a fresh Python process on a pseudo-terminal (120x40, the real Linux driver, so the first
frame is really written). Time runs from just before the process is spawned to the moment the app signals
that its first frame is on screen: Textual's ``Ready`` event in both apps (the workbench sets
``WorkbenchApp.ready`` from it); the ratio compares medians of that. The workbench's first frame holds the
tabs, the footer and the initial panel's title; it then mounts the initial panel and the four others, and
only then handles keys: the time to that point is shown too ("all panels"). Also shown: when a text of the
first frame (the bare app's label, the Data panel's title) reaches the terminal, as a user sees it.
Launches alternate bare, workbench, bare, workbench. Both apps load their modules from bytecode, as installed
packages do (``benchlib.compile_project``).

    python bench/startup.py            # ~30 seconds on 2 CPU cores
    python bench/startup.py --smoke
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from dataclasses import dataclass
from pathlib import Path

from benchlib import (
    REPO_ROOT,
    Spread,
    compile_project,
    machine_line,
    median,
    parse_args,
    print_table,
    ratio_line,
    scratch_dir,
)

GOAL = 1.5
#: Text each app's first frame puts on the terminal.
BARE_MARKER = b"ready"
WORKBENCH_MARKER = b"Data browser"
TIMEOUT_SECONDS = 60.0

# Both children write time.time() to the file named in argv[1] once the first frame is up, then exit.
BARE_APP = """
import sys, threading, time
from textual.app import App
from textual.widgets import Label

class Bare(App):
    def compose(self):
        yield Label("ready")
    def on_ready(self):
        open(sys.argv[1], "w").write(repr(time.time()))
        self.exit()

Bare().run()
"""

# The stamp is written on the UI thread when the app signals, as the bare app does (a thread waiting on the
# event would add its own wait for the interpreter lock to the figure).
WORKBENCH_APP = """
import sys, threading, time
from engine.config import load_config
from tui.app import WorkbenchApp

app = WorkbenchApp(load_config(sys.argv[2]), sys.argv[2])
signal = app.ready.set

def first_frame() -> None:
    open(sys.argv[1], "w").write(repr(time.time()))
    signal()
    app.call_later(all_mounted)  # runs once the app has mounted every panel (it handles nothing before)

def all_mounted() -> None:
    open(sys.argv[1] + ".all", "w").write(repr(time.time()))
    app.exit()

app.ready.set = first_frame
app.run()
"""


@dataclass
class Launch:
    """Seconds from spawn to the app's ready signal, and to its marker text reaching the terminal."""

    ready: float
    on_terminal: float
    #: Every panel mounted and keys handled (the workbench only; NaN for the bare app).
    all_panels: float


def launch(code: str, args: list[str], workdir: Path, marker: bytes) -> Launch:
    """Spawn an app on a fresh 120x40 pseudo-terminal and time its first frame two ways."""
    stamp = workdir / "first-frame.txt"
    stamp.unlink(missing_ok=True)
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40", "TEXTUAL": ""}
    start = time.time()
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(stamp), *args],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        cwd=workdir,
        env=env,
        start_new_session=True,
    )
    os.close(follower)
    output = bytearray()
    seen = float("nan")
    deadline = time.monotonic() + TIMEOUT_SECONDS
    try:
        while child.poll() is None and time.monotonic() < deadline:
            readable, _, _ = select.select([leader], [], [], 0.05)
            if readable:
                try:
                    output += os.read(leader, 65536)  # keep the terminal drained so the child never blocks
                except OSError:
                    break
                if seen != seen and marker in output:
                    seen = time.time() - start
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        os.close(leader)
    if not stamp.exists():
        tail = output.decode(errors="replace")[-800:]
        raise RuntimeError(f"the app never signalled its first frame (exit {child.returncode}): {tail}")
    done = stamp.with_name(stamp.name + ".all")
    all_panels = float(done.read_text()) - start if done.exists() else float("nan")
    done.unlink(missing_ok=True)
    return Launch(float(stamp.read_text()) - start, seen, all_panels)


def main() -> None:
    args = parse_args(__doc__ or "")
    print(machine_line(with_torch=False))
    compile_project()
    rounds = 1 if args.smoke else 5
    bare: list[Launch] = []
    workbench: list[Launch] = []
    with scratch_dir("startup") as tmp:
        config = REPO_ROOT / "sample_configs" / "quickstart-classify.yaml"
        apps = [(bare, BARE_APP, [], BARE_MARKER), (workbench, WORKBENCH_APP, [str(config)], WORKBENCH_MARKER)]
        for _, code, argv, marker in apps:
            launch(code, argv, tmp, marker)  # untimed: warms the file cache
        for _ in range(rounds):
            for store, code, argv, marker in apps:
                store.append(launch(code, argv, tmp, marker))
    print(f"workbench config: {config.relative_to(REPO_ROOT)}; {rounds} launches each, 120x40 pseudo-terminal")
    rows = []
    ready_p50: list[float] = []
    seen_p50: list[float] = []
    for name, launches in (("bare Textual app (one Label)", bare), ("Tunebench workbench", workbench)):
        ready = Spread.of([x.ready * 1000 for x in launches])
        seen = Spread.of([x.on_terminal * 1000 for x in launches])
        ready_p50.append(ready.p50)
        seen_p50.append(seen.p50)
        all_panels = median([x.all_panels * 1000 for x in launches])
        each = " ".join(f"{x.ready * 1000:.0f}" for x in launches)
        shown = all_panels if all_panels == all_panels else "-"  # NaN for the bare app
        rows.append([name, ready.n, seen.p50, ready.p50, ready.max, each, shown])
    headers = ["app", "launches", "text on terminal p50 ms", "ready p50 ms", "ready max ms", "ready, each ms"]
    print_table([*headers, "all panels p50 ms"], rows)
    print(f"first frame on the terminal: workbench / bare = {seen_p50[1] / seen_p50[0]:.2f}")
    ratio_line("startup_workbench_vs_bare", ready_p50[1] / ready_p50[0], GOAL, higher_is_better=False)


if __name__ == "__main__":
    main()
