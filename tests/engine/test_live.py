"""Live runs through their folder: the beacon's heartbeat and commands, following events.jsonl, finding a run by
name, and detached runs that outlive the command that started them."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import engine.live
from engine.cli import main
from engine.control import RunControl
from engine.errors import RunFolderError
from engine.events import EVENTS_FORMAT, Paused, Resumed, RunStarted, StepDone, StepLogged
from engine.live import (
    COMMANDS_DIR,
    LIVE_FILE,
    Beacon,
    EventFollower,
    resolve_run,
    send_command,
)
from engine.runner import Runner
from engine.runs import RunDir, list_runs
from tests.conftest import run_started, sentiment_rows, write_jsonl


def until(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def run_folder(path: Path) -> RunDir:
    path.mkdir(parents=True)
    (path / "config.yaml").write_text("task: classification\n", encoding="utf-8")
    return RunDir(path)


# -- following events.jsonl ------------------------------------------------------------------------------------


def test_a_follower_waits_for_a_torn_line_and_reads_a_growing_file(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    follower = EventFollower(path)
    assert follower.poll() == []  # no file yet
    first = json.dumps(StepDone(step=1, total_steps=3).to_dict())
    second = json.dumps(StepDone(step=2, total_steps=3).to_dict())
    path.write_text(first + "\n" + second[:10], encoding="utf-8")
    assert [e.step for e in follower.poll()] == [1]  # type: ignore[attr-defined]
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(second[10:] + "\n" + "not json\n")
    assert [e.step for e in follower.poll()] == [2]  # type: ignore[attr-defined]
    assert follower.poll() == []
    follower.close()


@pytest.mark.parametrize("odd", ["none", "nan loss", "bad line", "not an object", "older and newer lines"])
def test_a_follower_reads_a_long_history_whole_whatever_it_holds(
    tmp_path: Path, odd: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attach reads thousands of lines at once: a diverged (NaN) loss, which the fast parser refuses, a
    damaged line or one that is no object, which no parser takes, and lines of an older or newer version (a
    field missing, one unknown) still leave every other event read, in order."""
    steps = [
        StepLogged(
            step=i,
            total_steps=3000,
            epoch=i / 1000,
            loss=float("nan") if odd == "nan loss" and i == 1500 else 1.0 / i,
            learning_rate=1e-4,
            samples_per_second=10.0,
            elapsed_seconds=float(i),
            eta_seconds=3000.0 - i,
        )
        for i in range(1, 3001)
    ]
    lines = [json.dumps(s.to_dict()) for s in steps]
    if odd == "bad line":
        lines.insert(1500, '{"type": "StepLogged", "step": ')
    if odd == "not an object":
        lines.insert(1500, "7")
    if odd == "older and newer lines":
        older = steps[1499].to_dict()
        del older["device_memory_mb"]  # a field this version added, with its default
        lines[1499] = json.dumps(older)
        lines[1599] = json.dumps({**steps[1599].to_dict(), "from_a_newer_version": 1})
    (tmp_path / "events.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if odd in ("none", "older and newer lines"):  # read in one document, never line by line
        monkeypatch.setattr(engine.live, "_parse", lambda line: pytest.fail("read line by line"))
    read = EventFollower(tmp_path / "events.jsonl").poll()
    assert [e.step for e in read] == list(range(1, 3001))  # type: ignore[attr-defined]
    assert read[10] == steps[10] and read[-1] == steps[-1]
    if odd == "nan loss":
        assert read[1499].loss != read[1499].loss  # type: ignore[attr-defined]
    else:
        assert read == steps


def test_a_follower_refuses_a_newer_events_format_in_a_long_history(tmp_path: Path) -> None:
    started = run_started(run_dir=str(tmp_path / "run-x"), run_name="run-x")
    lines = [json.dumps({**started.to_dict(), "format": EVENTS_FORMAT + 1})]
    lines += [json.dumps(StepDone(step=i, total_steps=2000).to_dict()) for i in range(1, 2001)]
    (tmp_path / "events.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(RunFolderError, match=r"run-x was written by a newer Tunebench"):
        EventFollower(tmp_path / "events.jsonl").poll()


def test_a_follower_refuses_a_newer_events_format(tmp_path: Path) -> None:
    started = run_started(run_dir=str(tmp_path / "run-x"), run_name="run-x")
    record = {**started.to_dict(), "format": EVENTS_FORMAT + 1}
    (tmp_path / "events.jsonl").write_text(json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(
        RunFolderError, match=r"run-x was written by a newer Tunebench \(events format 2; this one reads 1\)"
    ):
        EventFollower(tmp_path / "events.jsonl").poll()


# -- finding a run ------------------------------------------------------------------------------------------------


def test_a_run_is_found_by_path_name_or_unique_prefix(tmp_path: Path) -> None:
    runs = tmp_path / "my runs ü"
    a = run_folder(runs / "20261205-101010-classification-minilm")
    b = run_folder(runs / "20261205-111111-masked-lm-minilm")
    run_folder(runs / "20261205-111112-masked-lm-minilm")
    assert resolve_run(str(a.path), tmp_path).path == a.path
    assert resolve_run(b.name, runs).path == b.path
    assert resolve_run("20261205-10", runs).path == a.path
    with pytest.raises(RunFolderError, match=r"20261205-1111 matches 2 runs \(20261205-111111-masked-lm-minilm, "):
        resolve_run("20261205-1111", runs)
    with pytest.raises(RunFolderError, match=r"nope: no run by that path, name or prefix in .*; tunebench runs"):
        resolve_run("nope", runs)
    # what a user types instead of a prefix: a part of the name, or the name with a typo
    with pytest.raises(RunFolderError, match=r'classification: no run .* \(did you mean "20261205-101010-classifi'):
        resolve_run("classification", runs)
    # alike by spelling (a date a minute off, too): it may be another run, the one meant in another folder
    with pytest.raises(
        RunFolderError, match=r'\(did you mean "20261205-111112-masked-lm-minilm", or another --runs-dir\?\)$'
    ):
        resolve_run("20261205-111112-masked-lm-minlm", runs)
    with pytest.raises(RunFolderError, match=r"masked-lm: no run name starts with it; 2 hold it \(20261205-111111-"):
        resolve_run("masked-lm", runs)


def test_a_run_is_found_by_prefix_in_a_runs_folder_given_under_home(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    a = run_folder(tmp_path / "runs" / "20261205-101010-classification-minilm")
    found = resolve_run("20261205-10", "~/runs")
    assert found.path == a.path and found.config_path.is_file()


# -- the beacon ----------------------------------------------------------------------------------------------------


def test_commands_reach_the_runs_control_only_from_its_owner(tmp_path: Path) -> None:
    run = run_folder(tmp_path / "run")
    control = RunControl()
    beacon = Beacon(run, control)
    with run.lock():
        beacon.start()
        try:
            commands = run.path / COMMANDS_DIR
            assert stat.S_IMODE(commands.stat().st_mode) == 0o700
            stranger = commands / f"{time.time_ns()}-1.stop"
            stranger.touch()
            os.chown(stranger, 12345, 12345)  # the tests run as root in CI; a real user cannot write here at all
            until(lambda: not stranger.exists(), "the stranger's command to be dropped")
            assert not control.should_stop
            send_command(run, "pause")
            until(control.pause.is_set, "the pause")
            send_command(run, "resume")
            until(lambda: not control.pause.is_set(), "the resume")
            send_command(run, "stop")
            until(lambda: control.should_stop, "the stop")
        finally:
            beacon.close()
    assert not (run.path / LIVE_FILE).exists()


def test_a_command_file_is_only_readable_by_its_owner(tmp_path: Path) -> None:
    run = run_folder(tmp_path / "run")
    (run.path / COMMANDS_DIR).mkdir(mode=0o700)
    with run.lock():  # live, with no beacon to take the command away
        send_command(run, "pause")
    (sent,) = (run.path / COMMANDS_DIR).iterdir()
    assert sent.name.endswith(".pause")
    assert stat.S_IMODE(sent.stat().st_mode) == 0o600


def test_a_stale_command_from_an_earlier_session_is_dropped(tmp_path: Path) -> None:
    run = run_folder(tmp_path / "run")
    (run.path / COMMANDS_DIR).mkdir()
    (run.path / COMMANDS_DIR / "1-1.stop").touch()
    control = RunControl()
    beacon = Beacon(run, control)
    beacon.start()
    time.sleep(0.5)
    beacon.close()
    assert not control.should_stop


def test_the_heartbeat_goes_on_while_paused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine.live, "HEARTBEAT_SECONDS", 0.1)
    run = run_folder(tmp_path / "run")
    beacon = Beacon(run, RunControl())
    with run.lock():
        beacon.start()
        try:
            beacon.see(Paused(step=3))
            until(lambda: run.live_state() == "paused", "the pause in live.json")
            first = json.loads((run.path / LIVE_FILE).read_text())
            assert (first["pid"], first["host"], first["state"]) == (os.getpid(), socket.gethostname(), "paused")
            until(lambda: json.loads((run.path / LIVE_FILE).read_text())["heartbeat"] > first["heartbeat"], "a beat")
            beacon.see(StepDone(step=4, total_steps=9))
            until(lambda: (run.read_live() or {}).get("step") == [4, 9], "the step under way in live.json")
            beacon.see(Resumed(step=3))
            until(lambda: run.live_state() == "running", "the resume in live.json")
        finally:
            beacon.close()


def test_a_run_without_its_process_is_killed_and_another_hosts_counts_while_its_heartbeat_is_fresh(
    tmp_path: Path,
) -> None:
    run = run_folder(tmp_path / "runs" / "20261205-101010-classification-minilm")
    assert run.live_state() is None
    assert [r.status for r in list_runs(tmp_path / "runs")] == ["killed"]
    record = {"pid": 1, "host": "another-host", "state": "running", "heartbeat": time.time()}
    (run.path / LIVE_FILE).write_text(json.dumps(record))
    assert run.live_state() == "running"
    (run.path / LIVE_FILE).write_text(json.dumps({**record, "heartbeat": time.time() - 31}))
    assert run.live_state() is None
    with pytest.raises(RunFolderError, match=r"is not live: it is killed \(tunebench run --resume .* continues it\)"):
        send_command(run, "stop")


# -- a run in this process, controlled through its folder ------------------------------------------------------------


def test_a_runner_obeys_commands_left_in_its_folder(
    tmp_path: Path, make_config: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from engine import cli

    cfg = make_config(data={"source": str(write_jsonl(tmp_path / "rows.jsonl", sentiment_rows(64)))})
    events: list[Any] = []
    gate = threading.Event()

    def hold_first_step(event: Any) -> None:  # the tiny run would end before a command could reach it
        if isinstance(event, StepLogged) and event.step == 1:
            gate.wait(30)

    runner = Runner(cfg, subscribers=[events.append, hold_first_step])
    runner.start()
    until(lambda: any(isinstance(e, StepLogged) for e in events), "the first step")
    assert runner.run_dir is not None
    run = runner.run_dir
    assert run.live_state() == "running"
    send_command(run, "pause")
    until(runner.control.pause.is_set, "the command to reach the run")
    gate.set()
    paused = until(lambda: next((e for e in events if isinstance(e, Paused)), None), "Paused")
    until(lambda: run.live_state() == "paused", "the paused state in live.json")
    (listed,) = list_runs(run.path.parent)
    total = next(e for e in events if isinstance(e, RunStarted)).total_steps
    assert listed.status_text.startswith(f"paused {paused.step}/{total} · loss ")
    assert "ETA" not in listed.status_text, "a paused run's ETA would be stale"
    capsys.readouterr()
    assert cli.main(["pause", str(run.path)]) == 0  # a second pause says what it found, and sends nothing
    assert f"pause: {run.name} is already paused; nothing sent" in capsys.readouterr().out
    assert not any((run.path / "commands").iterdir())
    send_command(run, "stop")
    result = runner.join(60)
    assert result is not None and result.status == "stopped"
    assert any(e.type == "StopRequested" and e.step == paused.step for e in events)
    assert not any(e.type == "Resumed" for e in events)  # a stop ends a pause without resuming
    assert [r.status for r in list_runs(run.path.parent)] == ["stopped"]
    with pytest.raises(RunFolderError, match="is not live: it is stopped"):
        send_command(run, "resume")


def test_a_live_run_lists_its_best_score_so_far(tmp_path: Path, make_config: Callable[..., Any]) -> None:
    """A live run has no summary yet: its best score comes from live.json, after each evaluation."""
    from engine.events import Evaluated

    cfg = make_config(
        data={"source": str(write_jsonl(tmp_path / "rows.jsonl", sentiment_rows(64)))}, train={"num_train_epochs": 2}
    )
    events: list[Any] = []
    gate = threading.Event()

    def hold_after_the_first_evaluation(event: Any) -> None:
        if isinstance(event, StepLogged) and any(isinstance(e, Evaluated) for e in events):
            gate.wait(30)

    runner = Runner(cfg, subscribers=[events.append, hold_after_the_first_evaluation])
    runner.start()
    try:
        evaluated = until(lambda: next((e for e in events if isinstance(e, Evaluated)), None), "the first evaluation")
        assert runner.run_dir is not None
        runs = runner.run_dir.path.parent
        listed = until(lambda: next((r for r in list_runs(runs) if r.best_value is not None), None), "a best score")
        assert listed.status == "running"
        assert (listed.best_metric, listed.best_value) == ("accuracy", evaluated.accuracy)
        seconds = (runner.run_dir.read_live() or {}).get("seconds")  # what a kill would leave the list
        assert isinstance(seconds, float) and 0 < seconds < 60
    finally:
        gate.set()
        runner.stop()
        runner.join(60)


# -- detached runs -------------------------------------------------------------------------------------------------


def test_detach_with_bad_data_exits_2_and_leaves_no_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("data:\n  source: no-such-file.csv\n", encoding="utf-8")
    runs = tmp_path / "runs"
    assert main(["run", str(config), "--detach", "--runs-dir", str(runs)]) == 2
    assert "data.source: no-such-file.csv not found" in capsys.readouterr().err
    assert not any(runs.iterdir())


@pytest.mark.slow
def test_a_detached_run_outlives_its_command_and_stop_and_resume_end_where_a_straight_run_does(
    tmp_path: Path, make_config: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import load_file

    rows = write_jsonl(tmp_path / "rows.jsonl", sentiment_rows(96))
    cfg = make_config(
        data={"source": str(rows)},
        train={"num_train_epochs": 3, "save_strategy": "steps", "save_steps": 2, "torch_threads": 1},
    )
    config = tmp_path / "run dir ü" / "config.yaml"  # a path with a space and a non-ASCII letter
    config.parent.mkdir()
    config.write_text(cfg.to_yaml(), encoding="utf-8")
    runs = config.parent / "runs"
    assert main(["run", str(config), "--detach", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    pid = int(out.split("(pid ")[1].split(")")[0])
    assert os.getsid(pid) != os.getsid(0), "the run is in a session of its own: a hang-up does not reach it"
    (run_path,) = runs.iterdir()
    run = RunDir(run_path)
    # Outside ./runs the hint names the folder, so that the commands it shows find the run as they are typed.
    assert f"tunebench follow {run_path}    tunebench pause|resume|stop {run_path}" in out
    until(lambda: any(isinstance(e, StepLogged) for e in run.events()), "the first logged step")
    assert main(["stop", run.name[:12], "--runs-dir", str(runs)]) == 0
    until(lambda: not _alive(pid), "the run's process to end", timeout=120)
    assert (run.read_summary() or {}).get("status") == "stopped"
    assert main(["run", "--resume", str(run.path), "--detach"]) == 0
    assert main(["follow", run.name, "--runs-dir", str(runs)]) == 0
    assert (run.read_summary() or {}).get("status") == "finished"
    assert capsys.readouterr().out.strip().endswith(f"finished: {run.path}")

    torch_threads = __import__("torch").get_num_threads()
    try:
        straight = Runner(cfg, runs_dir=tmp_path / "straight").run()
    finally:
        __import__("torch").set_num_threads(torch_threads)
    assert straight.run_dir is not None
    a, b = (load_file(p / "model" / "model.safetensors") for p in (straight.run_dir, run.path))
    worst = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
    assert worst <= 1e-6, f"weights differ by up to {worst}"


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_stop_of_a_run_that_is_not_live_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = run_folder(tmp_path / "runs" / "20261205-101010-classification-minilm")
    run.write_summary({"status": "finished"})
    assert main(["stop", run.name, "--runs-dir", str(tmp_path / "runs")]) == 2
    assert capsys.readouterr().err.strip() == (
        "tunebench: error: 20261205-101010-classification-minilm is not live: it is finished"
    )
