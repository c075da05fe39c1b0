"""The workbench in a real terminal: tests/tmux_smoke.sh drives `tunebench` inside tmux."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # starts the real app in a terminal

SCRIPT = Path(__file__).resolve().parents[1] / "tmux_smoke.sh"


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_tunebench_shows_every_panel_in_a_real_terminal(size: tuple[int, int]) -> None:
    env = {
        **os.environ,
        "TUNEBENCH": f"{sys.executable} -m tui.launch",
        "WIDTH": str(size[0]),
        "HEIGHT": str(size[1]),
    }
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def _tmux(session: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """tmux on a server of the session's own: the default server may be on its way out after the last session's
    kill-session, and a new-session that reaches it fails with "server exited unexpectedly"."""
    done = subprocess.run(["tmux", "-L", session, *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise AssertionError(f"tmux {' '.join(args)} failed: {done.stderr.strip()}")
    return done


def _screen(session: str) -> str:
    return _tmux(session, "capture-pane", "-p", "-t", session, check=False).stdout


def _wait(what: str, ready: Callable[[], bool], timeout: float = 120.0, screen: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}; the screen was:\n{_screen(screen) if screen else ''}")
        time.sleep(0.2)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_a_run_outlives_a_hung_up_and_killed_workbench_and_attach_shows_it_finishing(tmp_path: Path) -> None:
    """As an SSH drop does: the app's terminal goes (SIGHUP), then the app is killed (SIGKILL); the run trains on,
    and `tunebench attach` in a new terminal shows it to its end."""
    from engine.config import from_dict, save_config
    from engine.runs import RunDir
    from tests.conftest import sentiment_rows, write_jsonl

    rows = write_jsonl(tmp_path / "rows.jsonl", sentiment_rows(400))
    cfg = from_dict(
        {
            "data": {"source": str(rows), "eval_split": None, "eval_fraction": 0.25, "max_length": 32},
            "train": {"num_train_epochs": 4, "per_device_train_batch_size": 8, "device": "cpu"},
            "output": {"runs_dir": str(tmp_path / "runs")},
        }
    )
    save_config(cfg, tmp_path / "c.yaml")
    launch = f"cd '{tmp_path}' && {sys.executable} -m tui.launch"
    first, second = f"tb-run-{os.getpid()}", f"tb-attach-{os.getpid()}"
    _tmux(first, "new-session", "-d", "-s", first, "-x", "120", "-y", "40", f"{launch} ui c.yaml")
    try:
        _wait("the workbench", lambda: "Data browser" in _screen(first), screen=first)
        _tmux(first, "send-keys", "-t", first, "F4")
        _wait("the Train panel", lambda: "Training" in _screen(first), screen=first)
        _tmux(first, "send-keys", "-t", first, "s")
        runs = tmp_path / "runs"
        _wait(
            "the run's first step",
            lambda: any(
                b'"StepLogged"' in (p / "events.jsonl").read_bytes()
                for p in runs.glob("*")
                if (p / "events.jsonl").exists()
            ),
            screen=first,
        )
        app_pid = int(_tmux(first, "list-panes", "-t", first, "-F", "#{pane_pid}").stdout.split()[0])
        _tmux(first, "kill-session", "-t", first)  # the terminal hangs up
        with contextlib.suppress(ProcessLookupError):
            os.killpg(app_pid, signal.SIGKILL)  # and whatever is left of the app dies
        (run_path,) = runs.iterdir()
        run = RunDir(run_path)
        assert run.live_state() in ("running", "paused"), "the run died with the workbench"

        _tmux(second, "new-session", "-d", "-s", second, "-x", "120", "-y", "40", f"{launch} attach --runs-dir runs")
        _wait("the attached run to finish", lambda: "✓ finished" in _screen(second), timeout=240, screen=second)
        assert (run.read_summary() or {}).get("status") == "finished"
        _tmux(second, "send-keys", "-t", second, "q")
    finally:
        for session in (first, second):
            _tmux(session, "kill-server", check=False)
