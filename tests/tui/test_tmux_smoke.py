"""The workbench in a real terminal: tests/tmux_smoke.sh drives `tunebench` inside tmux."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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
