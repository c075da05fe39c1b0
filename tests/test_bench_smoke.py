"""Every benchmark script still runs: each one once in its tiny ``--smoke`` mode (its numbers mean nothing).

A script that breaks (an engine or TUI API it uses changed) fails here instead of on the day someone
needs the figures. No timing is asserted: only that the script ends with a well-formed RATIO line.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs every benchmark script

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO_ROOT / "bench"
SCRIPTS = [
    "loop_overhead",
    "sft_overhead",
    "padding",
    "threads",
    "predict_latency",
    "startup",
    "ui_responsiveness",
    "live_follow",
    "data_browsing",
    "runs_list",
    "memory",
    "gpu_train",
    "lora",
    "scaling",
    "time_to_accuracy",
]
RATIO = re.compile(r"^RATIO [a-z0-9_]+=-?[0-9.]+ goal=(>=|<=)[0-9.]+ (PASS|FAIL)$")


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,  # a hung script fails the test rather than the whole suite
        check=False,
    )


@pytest.mark.parametrize("script", SCRIPTS)
def test_bench_script_smoke_run_ends_with_a_ratio_line(script: str) -> None:
    done = run_bench(str(BENCH_DIR / f"{script}.py"), "--smoke")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert lines and RATIO.match(lines[-1]), done.stdout[-2000:]


def test_run_all_lists_every_bench_script() -> None:
    sys.path.insert(0, str(BENCH_DIR))
    try:
        import run_all
    finally:
        sys.path.remove(str(BENCH_DIR))
    assert set(SCRIPTS) <= set(run_all.scripts())
    assert not {"benchlib", "uilib", "tui_subscribers", "run_all"} & set(run_all.scripts())


def test_the_step_profile_splits_the_operators_time_by_kind() -> None:
    """bench/step_profile.py is a diagnosis, not a benchmark (no RATIO line): its table must still add up."""
    done = run_bench(str(BENCH_DIR / "step_profile.py"), "--smoke")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    shares = re.findall(r"^(matrix products|dropout masks|optimizer|the rest) +[0-9.]+ +([0-9.]+)%", done.stdout, re.M)
    assert [kind for kind, _ in shares] == ["matrix products", "dropout masks", "optimizer", "the rest"]
    assert sum(float(share) for _, share in shares) == pytest.approx(100, abs=0.5)


def test_the_panel_keys_diagnosis_times_every_panel() -> None:
    """bench/panel_keys.py is a diagnosis, not a benchmark (no RATIO line): it times each panel's key."""
    done = run_bench(str(BENCH_DIR / "panel_keys.py"), "--smoke")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    timed = re.findall(r"^(config|data|predict|runs|train) +2 +[0-9.]+$", done.stdout, re.M)
    assert sorted(timed) == ["config", "data", "predict", "runs", "train"]
    assert re.search(r"^all keys: median [0-9.]+ ms, p90 [0-9.]+ ms", done.stdout, re.M)
