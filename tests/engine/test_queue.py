"""The run queue and grid sweeps: entries kept in order on disk, checked when queued, never lost by two writers;
one queue runner per runs folder, which starts each entry once, even across a kill -9 of the runner."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine import cli, queue
from engine.config import RunConfig, load_config
from engine.errors import ConfigError, UserError
from engine.faults import ENV as KILL_AT
from engine.runs import read_events
from tests.conftest import hold_run_at

GRID = ["--grid", "train.learning_rate=1e-5,3e-5,1e-4", "--grid", "train.per_device_train_batch_size=8,16"]


def write_config(tmp_path: Path, text: str = "", name: str = "base.yaml") -> Path:
    """A valid config (the defaults, runs in tmp_path/runs) with ``text`` appended."""
    path = tmp_path / name
    path.write_text(f"output:\n  runs_dir: {tmp_path / 'runs'}\n{text}", encoding="utf-8")
    return path


def labels(runs: Path) -> list[str]:
    return [e.label for e in queue.list_queue(runs)]


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[Path]:
    """A runs folder; any queue runner left on it is stopped at the end."""
    folder = tmp_path / "runs"
    yield folder
    pid = queue.runner_state(folder)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)


# ----------------------------------------------------------------------------------------------------------
# The queue


def test_entries_keep_their_order_and_move_among_the_queued(runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in "abcd":
        queue.add(runs, RunConfig(), name)
    assert labels(runs) == ["a", "b", "c", "d"]
    assert [e.id for e in queue.list_queue(runs)] == ["1", "2", "3", "4"]
    assert queue.move(runs, "3", -1) == 2
    assert labels(runs) == ["a", "c", "b", "d"]
    assert queue.move(runs, "1", +1) == 2
    assert labels(runs) == ["c", "a", "b", "d"]
    assert queue.move(runs, "4", -(10**9)) == 1  # top
    assert labels(runs) == ["d", "c", "a", "b"]
    assert queue.move(runs, "4", -1) == 1  # already first: it stays
    assert cli.main(["queue", "move", "4", "up", "--runs-dir", str(runs)]) == 0
    assert capsys.readouterr().out.startswith("4 is first in the queue already (number 1 of ")
    assert labels(runs) == ["d", "c", "a", "b"]


def test_removing_an_entry_keeps_the_others_and_ids_are_never_reused(runs: Path) -> None:
    for name in "abc":
        queue.add(runs, RunConfig(), name)
    [removed] = queue.remove(runs, ["2"])
    assert removed.label == "b" and labels(runs) == ["a", "c"]
    assert queue.add(runs, RunConfig(), "d").id == "4"
    with pytest.raises(UserError, match=r"^2: no entry by that id .*tunebench queue ls"):
        queue.remove(runs, ["2"])
    with pytest.raises(UserError, match=r"^9: no entry by that id .*tunebench queue ls"):
        queue.move(runs, "9", 1)


def test_queue_cli_adds_lists_moves_and_removes(tmp_path: Path, runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    assert cli.main(["queue", "add", str(config), "--set", "train.learning_rate=3e-5"]) == 0
    capsys.readouterr()
    assert cli.main(["queue", "add", str(config)]) == 0  # runs dir: the config's output.runs_dir
    # which `queue ls` without --runs-dir (./runs) would not show
    assert f"in {runs}/.queue; tunebench queue ls --runs-dir {runs} lists it)" in capsys.readouterr().out
    assert cli.main(["queue", "move", "2", "top", "--runs-dir", str(runs)]) == 0
    capsys.readouterr()
    assert cli.main(["queue", "ls", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["#", "id", "state", "label", "run"]
    assert out[1].split() == ["1", "2", "queued", "base.yaml"]
    assert out[2].split() == ["2", "1", "queued", "base.yaml", "train.learning_rate=3e-5"]
    assert "not running" in out[3]
    assert {e.cwd for e in queue.list_queue(runs)} == {os.getcwd()}  # where its relative paths start from
    assert cli.main(["queue", "rm", "1", "--runs-dir", str(runs)]) == 0
    assert labels(runs) == ["base.yaml"]
    assert cli.main(["queue", "rm", "7", "--runs-dir", str(runs)]) == 2
    assert capsys.readouterr().err.strip().endswith(f"tunebench queue ls --runs-dir {runs} lists them")
    typo = runs.parent / "runz"
    for command in (["rm", "1"], ["move", "1", "up"], ["clear"]):  # a mistyped --runs-dir makes no folder
        cli.main(["queue", *command, "--runs-dir", str(typo)])
        assert not typo.exists(), command


def test_queue_rm_takes_several_ids_ranges_and_a_sweep_all_or_none(
    runs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Undoing a mistyped sweep of hundreds of runs is one command, with the sweep's id or the range it printed."""
    for name in "abcdef":
        queue.add(runs, RunConfig(), name)
    queue.add_sweep(runs, [({"train.seed": str(n)}, RunConfig()) for n in (1, 2, 3)], "5a7e01", "sweep.yaml")
    capsys.readouterr()
    assert cli.main(["queue", "rm", "2-4", "6", "--runs-dir", str(runs)]) == 0
    assert capsys.readouterr().out == "removed 4 entries: 2-4, 6\n"
    assert labels(runs) == ["a", "e", "sweep.yaml seed=1", "sweep.yaml seed=2", "sweep.yaml seed=3"]
    assert cli.main(["queue", "rm", "5a7e01", "--runs-dir", str(runs)]) == 0
    assert capsys.readouterr().out == "removed 3 entries: 7-9\n"
    for bad, error in [
        (["1", "99"], "99: no entry by that id in the queue"),
        (["1", "10-12"], "10-12: no entry in that range in the queue"),
        (["5-1"], "5-1: a range goes from the lower id to the higher, as in 1-5"),
    ]:
        assert cli.main(["queue", "rm", *bad, "--runs-dir", str(runs)]) == 2
        assert error in capsys.readouterr().err
        assert labels(runs) == ["a", "e"]  # nothing removed


def test_an_entry_whose_run_has_ended_is_said_to_have_ended_when_removed_or_moved(
    runs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.runs import SUMMARY_FILE

    queue.add(runs, RunConfig(), "done")
    queue.add(runs, RunConfig(), "training")
    with queue._changing(runs) as q:
        for entry, run in zip(q.entries, ["20260101-000000-done", "20260101-000001-training"], strict=True):
            entry.state, entry.run = queue.STARTED, run
    (runs / "20260101-000000-done").mkdir()
    (runs / "20260101-000000-done" / SUMMARY_FILE).write_text('{"status": "finished"}', encoding="utf-8")
    capsys.readouterr()
    assert cli.main(["queue", "move", "1", "up", "--runs-dir", str(runs)]) == 2
    assert capsys.readouterr().err == "tunebench: error: 1: it is finished, not queued; only queued entries move\n"
    assert cli.main(["queue", "rm", "1", "--runs-dir", str(runs)]) == 0
    assert capsys.readouterr().out == "removed 1: done; its run 20260101-000000-done had ended (finished)\n"
    assert cli.main(["queue", "rm", "2", "--runs-dir", str(runs)]) == 0
    assert capsys.readouterr().out == "removed 2: training; its run folder 20260101-000001-training is gone\n"


def test_a_sweep_of_a_config_given_as_a_tilde_path_reads_it_from_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    write_config(tmp_path, name="sweep.yaml")
    grid = queue.expand_grid("~/sweep.yaml", ["train.learning_rate=1e-5,3e-5"])
    assert [cfg.train.learning_rate for _, cfg in grid] == [1e-5, 3e-5]


@pytest.mark.parametrize(
    "text, overrides, culprit",
    [
        ("train:\n  learning_rate: fast\n", [], "train.learning_rate"),
        ("", ["--set", "train.num_train_epochs=0"], "train.num_train_epochs"),
        ("", ["--set", "train.epochs=3"], "train.epochs"),
    ],
)
def test_a_bad_config_is_refused_when_queued_and_nothing_is_queued(
    tmp_path: Path, runs: Path, capsys: pytest.CaptureFixture[str], text: str, overrides: list[str], culprit: str
) -> None:
    config = write_config(tmp_path, text)
    assert cli.main(["queue", "add", str(config), *overrides]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"tunebench: error: {culprit}:")
    assert queue.list_queue(runs) == []
    assert not (runs / ".queue" / "queue.json").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["queue", "add", "CONFIG"],
        ["sweep", "CONFIG", "--grid", "train.seed=1,2"],
        ["sweep", "CONFIG", "--dry-run", "--grid", "train.seed=1,2"],
    ],
)
@pytest.mark.parametrize(
    "override, message",
    [
        ("model.name_or_path={tmp}/no-model", "model.name_or_path: {tmp}/no-model is not a folder"),
        ("data.source={tmp}/no-data.jsonl", "data.source: {tmp}/no-data.jsonl not found"),
    ],
)
def test_a_missing_local_model_or_data_is_refused_when_queued(
    tmp_path: Path,
    runs: Path,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    override: str,
    message: str,
) -> None:
    argv = [str(write_config(tmp_path)) if arg == "CONFIG" else arg for arg in command]
    assert cli.main([*argv, "--set", override.format(tmp=tmp_path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"tunebench: error: {message.format(tmp=tmp_path)}")
    assert queue.list_queue(runs) == []


def test_a_run_folder_whose_model_is_not_written_yet_can_be_queued_to_continue(tmp_path: Path, runs: Path) -> None:
    earlier = tmp_path / "earlier-run"  # a run still training: its config, no model yet
    earlier.mkdir()
    (earlier / "config.yaml").write_text("task: classification\n", encoding="utf-8")
    cfg = load_config(write_config(tmp_path), [f"model.name_or_path={earlier}"])
    queue.add(runs, cfg, "after the earlier run")
    assert labels(runs) == ["after the earlier run"]


def test_add_checks_a_config_built_in_code(runs: Path) -> None:
    cfg = RunConfig()
    cfg.train.learning_rate = -1.0
    with pytest.raises(ConfigError, match=r"train\.learning_rate"):
        queue.add(runs, cfg, "bad")
    assert queue.list_queue(runs) == []


def test_two_processes_adding_at_once_lose_no_entry(runs: Path) -> None:
    code = (
        "import sys\nfrom engine.config import RunConfig\nfrom engine import queue\n"
        "for i in range(25):\n    queue.add(sys.argv[1], RunConfig(), f'{sys.argv[2]}-{i}')\n"
    )
    writers = [subprocess.Popen([sys.executable, "-c", code, str(runs), name]) for name in ("a", "b")]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    entries = queue.list_queue(runs)
    assert sorted(e.label for e in entries) == sorted(f"{n}-{i}" for n in "ab" for i in range(25))
    assert sorted(int(e.id) for e in entries) == list(range(1, 51))
    for name in "ab":  # each writer's entries in the order it added them
        assert [e.label for e in entries if e.label.startswith(name)] == [f"{name}-{i}" for i in range(25)]


# ----------------------------------------------------------------------------------------------------------
# Sweeps


def test_a_sweep_expands_to_every_combination_with_its_sweep_id_and_run_names(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    runs = queue.expand_grid(config, GRID[1::2], ["train.num_train_epochs=1"], sweep="abc123")
    assert [grid for grid, _cfg in runs] == [
        {"train.learning_rate": lr, "train.per_device_train_batch_size": bs}
        for lr in ("1e-5", "3e-5", "1e-4")
        for bs in ("8", "16")
    ]
    for grid, cfg in runs:
        assert cfg.train.learning_rate == float(grid["train.learning_rate"])
        assert cfg.train.per_device_train_batch_size == int(grid["train.per_device_train_batch_size"])
        assert cfg.train.num_train_epochs == 1
        assert cfg.output.sweep == "abc123"
    names = [cfg.output.run_name for _grid, cfg in runs]
    assert names[0] == "classification-minilm-lr1e-5_bs8" and names[-1] == "classification-minilm-lr1e-4_bs16"
    assert len(set(names)) == 6


def test_a_sweeps_long_values_cut_its_runs_names_alike(tmp_path: Path) -> None:
    """The name's base is cut to fit the longest values of the sweep, not each run's own, and at a word's end."""
    grid = "model.lora.target_modules=[query,value],[query,key,value]"
    runs = queue.expand_grid(write_config(tmp_path), [grid], sweep="abc123")
    assert [cfg.output.run_name for _grid, cfg in runs] == [
        "classification-target_modules-query-value",
        "classification-target_modules-query-key-value",
    ]


def test_sweep_queues_its_runs_as_one_sweep_and_dry_run_queues_nothing(
    tmp_path: Path, runs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    assert cli.main(["sweep", str(config), *GRID, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "6 runs" in out and "classification-minilm-lr3e-5_bs16" in out and "nothing queued" in out
    assert queue.list_queue(runs) == []

    assert cli.main(["sweep", str(config), *GRID]) == 0
    entries = queue.list_queue(runs)
    assert len(entries) == 6 and len({e.sweep for e in entries}) == 1
    (sweep,) = {e.sweep for e in entries}
    assert sweep is not None and f"sweep {sweep}" in capsys.readouterr().out
    first = entries[0]
    assert first.grid == {"train.learning_rate": "1e-5", "train.per_device_train_batch_size": "8"}
    assert first.label == "base.yaml learning_rate=1e-5 per_device_train_batch_size=8"
    assert first.run_config().output.sweep == sweep
    assert yaml.safe_load(first.config_yaml)["output"]["run_name"] == "classification-minilm-lr1e-5_bs8"
    assert cli.main(["queue", "ls", "--runs-dir", str(runs)]) == 0  # the id that queue rm takes for them all
    header, row = capsys.readouterr().out.splitlines()[:2]
    assert header.split() == ["#", "id", "state", "sweep", "label", "run"] and row.split()[3] == sweep


def test_a_sweep_of_many_runs_is_queued_on_yes_only_and_a_huge_one_not_at_all(
    tmp_path: Path, runs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    seeds = ["--grid", f"train.seed={','.join(map(str, range(101)))}"]
    assert cli.main(["sweep", str(config), *seeds]) == 2
    assert capsys.readouterr().err == (
        "tunebench: error: --grid: 101 runs; pass --yes to queue that many (--dry-run lists them)\n"
    )
    assert queue.list_queue(runs) == []
    assert cli.main(["sweep", str(config), *seeds, "--yes"]) == 0
    assert len(queue.list_queue(runs)) == 101

    lrs = ["--grid", f"train.learning_rate={','.join(f'{n}e-5' for n in range(1, 11))}"]
    assert cli.main(["sweep", str(config), *seeds, *lrs, "--yes", "--dry-run"]) == 2
    assert capsys.readouterr().err.startswith("tunebench: error: --grid: 101 × 10 = 1,010 runs; a sweep queues at most")
    assert len(queue.list_queue(runs)) == 101


def test_the_same_sweep_given_again_queues_only_the_runs_not_waiting_already(
    tmp_path: Path, runs: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path)
    assert cli.main(["sweep", str(config), "--grid", "train.seed=1,2"]) == 0
    assert cli.main(["sweep", str(config), "--grid", "train.seed=1,2"]) == 0
    out = capsys.readouterr().out
    assert "seed=1  (waits in the queue already: entry 1)" in out and "nothing queued" in out
    assert len(queue.list_queue(runs)) == 2

    # --follow on the sweep given again (say, after the runner died) starts the runner and follows every run
    started, followed = [], []
    monkeypatch.setattr(queue, "start_runner", lambda root, parallel: started.append(root) or 4242)
    monkeypatch.setattr(queue, "follow_sweep", lambda root, sweep, ids: followed.append(list(ids)) or 0)
    assert cli.main(["sweep", str(config), "--grid", "train.seed=2,3", "--follow"]) == 0
    out = capsys.readouterr().out
    assert "queued as entry 3 in" in out and "left out the 1 waiting already" in out
    assert [e.grid for e in queue.list_queue(runs)][2:] == [{"train.seed": "3"}]
    assert started == [runs] and followed == [["3", "2"]]
    new_sweep = queue.list_queue(runs)[2].sweep
    assert new_sweep is not None
    assert [row.entry.id for row in queue.sweep_rows(runs, new_sweep, ["2"]) if row.entry] == ["2", "3"]


def test_a_waiting_sweep_given_again_with_more_values_continues_under_its_id(
    tmp_path: Path, runs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its waiting runs kept the first sweep's id and the new one got another: the id printed named only the
    run added, so compare and queue rm on it missed the rest."""
    config = write_config(tmp_path)
    assert cli.main(["sweep", str(config), "--grid", "train.seed=1,2"]) == 0
    first = queue.list_queue(runs)[0].sweep
    assert cli.main(["sweep", str(config), "--grid", "train.seed=1,2,3"]) == 0
    assert f"sweep {first}: 3 runs of" in capsys.readouterr().out
    assert [(e.sweep, e.config["output"]["sweep"]) for e in queue.list_queue(runs)] == [(first, first)] * 3


def test_a_grid_path_written_two_ways_is_one_value_and_values_that_slug_alike_get_their_own_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    (tmp_path / "d.jsonl").write_text('{"text": "a", "label": 0}\n')
    grid = f"data.source={tmp_path}/d.jsonl,{tmp_path}/./d.jsonl"
    assert cli.main(["sweep", str(config), "--grid", grid, "--dry-run"]) == 2
    assert "are the same value; give it once" in capsys.readouterr().err
    runs = queue.expand_grid(config, ["data.text_field=a b,a-b"])
    assert [cfg.output.run_name for _grid, cfg in runs] == [
        "classification-minilm-text_fielda-b",
        "classification-minilm-text_fielda-b-2",
    ]


@pytest.mark.parametrize(
    "grid, message",
    [
        ("train.learning_rate=1e-5,-3e-5", '--grid train.learning_rate: expected a positive number, got "-3e-5"'),
        ("train.lr_scheduler_type=linear,cosin", "--grid train.lr_scheduler_type: expected one of"),
        ("train.learnin_rate=1e-5", '--grid train.learnin_rate: unknown key (did you mean "learning_rate"?)'),
        ("trian.learning_rate=1e-5", "--grid trian.learning_rate: unknown key"),
        ("train.learning_rate=1e-5,,3e-5", "--grid train.learning_rate: an empty value"),
        (
            "train.learning_rate=1e-5,0.00001",
            '--grid train.learning_rate: "1e-5" and "0.00001" are the same value; give it once',
        ),
        ("output.run_name=a,b", "--grid output.run_name: a sweep's runs share their output settings"),
        ("output.report_to=[],[tensorboard]", "--grid output.report_to: a sweep's runs share their output settings"),
        ("train.learning_rate", "--grid: expected section.key=v1,v2"),
    ],
)
def test_a_bad_grid_value_queues_nothing_and_names_it(
    tmp_path: Path, runs: Path, capsys: pytest.CaptureFixture[str], grid: str, message: str
) -> None:
    config = write_config(tmp_path)
    code = cli.main(["sweep", str(config), "--grid", "train.per_device_train_batch_size=8,16", "--grid", grid])
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"tunebench: error: {message}")
    assert queue.list_queue(runs) == []


def test_a_grid_over_list_values_keeps_each_bracketed_list_whole(tmp_path: Path) -> None:
    assert queue.parse_grid("model.lora.target_modules=[query,value], [query, key,value]") == (
        "model.lora.target_modules",
        ["[query,value]", "[query, key,value]"],
    )
    runs = queue.expand_grid(
        write_config(tmp_path, "model:\n  lora:\n    r: 4\n"), ["model.lora.target_modules=[query,value],[key]"]
    )
    assert [cfg.model.lora.target_modules for _grid, cfg in runs] == [["query", "value"], ["key"]]


def test_a_grid_key_also_set_with_set_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--grid train.seed: is also given with --set; keep it in one of them"):
        queue.expand_grid(write_config(tmp_path), ["train.seed=1,2"], ["train.seed=7"])
    with pytest.raises(ConfigError, match=r"--grid model.lora.r: overlaps model.lora, given with --set"):
        queue.expand_grid(write_config(tmp_path), ["model.lora.r=4,8"], ["model.lora=null"])


def test_two_grids_one_inside_the_other_are_refused_in_either_order(tmp_path: Path) -> None:
    """Which one won depended on their order: model.lora=null after model.lora.r=4,8 queued the same run twice,
    labelled r=4 and r=8, with no LoRA at all."""
    for grids in (["model.lora.r=4,8", "model.lora=null"], ["model.lora=null", "model.lora.r=4,8"]):
        with pytest.raises(ConfigError, match=r"^--grid model.lora.r: overlaps --grid model.lora; keep one of them"):
            queue.expand_grid(write_config(tmp_path), grids)


def test_a_combination_that_breaks_a_rule_between_settings_names_its_grid_values(tmp_path: Path) -> None:
    config = write_config(tmp_path, "train:\n  load_best_model_at_end: true\n")
    with pytest.raises(ConfigError, match=r"train.load_best_model_at_end: .*\(with --grid train.save_strategy=steps"):
        queue.expand_grid(config, ["train.save_strategy=epoch,steps"])


def test_following_a_sweep_prints_a_row_per_run_as_it_ends(
    tmp_path: Path, runs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid_runs = queue.expand_grid(write_config(tmp_path), ["train.seed=1,2,3"], sweep="s1")
    done, failed, removed = queue.add_sweep(runs, grid_runs, "s1", "base.yaml")
    folder = runs / "20250101-000000-classification-minilm-seed1"
    folder.mkdir(parents=True)
    summary = {"status": "finished", "best_metric": "accuracy", "best_value": 0.8}
    (folder / "summary.json").write_text(json.dumps(summary))
    with queue._changing(runs) as q:  # as the runner leaves them: one run finished, one failed to start
        q.entries[0].state, q.entries[0].run = "started", folder.name
        q.entries[1].state, q.entries[1].error = "failed", "model.name_or_path: no such model"
    queue.remove(runs, [removed.id])
    assert queue.follow_sweep(runs, "s1", [done.id, failed.id, removed.id]) == 1
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert rows[0] == ["seed=1", "finished", "acc", "0.8000", folder.name]
    assert rows[1][:3] == ["seed=2", "failed", "-"] and rows[1][-2:] == ["such", "model"]
    assert rows[2] == ["removed", "-", "entry", removed.id]
    assert rows[3] == ["sweep", "s1:", "1", "of", "3", "runs", "finished"]


def test_following_a_sweep_whose_runner_died_ends_and_says_how_to_start_it(
    tmp_path: Path, runs: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner was killed with one run ended and one claimed: the run still trained to its end, and the
    entry read "starting" for ever, and --follow waited for ever on the one still queued."""
    entries = queue.add_sweep(runs, queue.expand_grid(write_config(tmp_path), ["train.seed=1,2,3"]), "s3", "x")
    folder = runs / "20250101-000000-classification-minilm-seed2"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"status": "finished"}))
    with queue._changing(runs) as q:  # as a runner killed after starting its second run leaves them
        q.entries[0].state, q.entries[0].run = "failed", None
        q.entries[1].state, q.entries[1].run = "claimed", folder.name
    assert queue.run_status(runs, queue.list_queue(runs)[1]) == "finished"
    clock = iter(range(0, 1000, 5))  # five seconds a look
    monkeypatch.setattr(queue.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(queue.time, "sleep", lambda _seconds: None)
    assert queue.follow_sweep(runs, "s3", [e.id for e in entries]) == 1
    assert next(clock) > queue.RUNNER_GONE_SECONDS  # not at the first look: a slow runner may not hold its lock yet
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == (
        f"the queue runner of {runs}/ is not running, so 1 run of the sweep cannot start; "
        f"tunebench queue start --runs-dir {runs} starts it"
    )


def test_ctrl_c_stops_following_a_sweep_and_leaves_it_queued(
    tmp_path: Path, runs: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = queue.add_sweep(runs, queue.expand_grid(write_config(tmp_path), ["train.seed=1,2"]), "s2", "x")

    def interrupt(_seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(queue.time, "sleep", interrupt)
    monkeypatch.setattr(queue, "runner_state", lambda _runs_dir: 4242)  # a runner would start them
    assert queue.follow_sweep(runs, "s2", [e.id for e in entries]) == 130
    assert "the sweep goes on" in capsys.readouterr().out
    assert [e.state for e in queue.list_queue(runs)] == ["queued", "queued"]


# ----------------------------------------------------------------------------------------------------------
# The runner: one per runs folder, GPUs, and the claim across a kill -9


def test_more_runs_at_a_time_than_cores_is_said(
    runs: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queue, "start_runner", lambda root, parallel: 4242)
    monkeypatch.setattr(queue.os, "cpu_count", lambda: 2)
    assert cli.main(["queue", "start", "--runs-dir", str(runs), "--parallel", "99"]) == 0
    assert capsys.readouterr().out.startswith(
        "tunebench: warning: --parallel 99: more runs at a time than this machine's 2 CPU cores; on CPU they share "
        "them, one thread each\n"
    )
    assert cli.main(["queue", "start", "--runs-dir", str(runs), "--parallel", "2"]) == 0
    assert "warning" not in capsys.readouterr().out


def test_two_queue_runners_on_one_runs_folder_never_both_run(runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pid = queue.start_runner(runs)
    assert queue.runner_state(runs) == pid and os.getsid(pid) == pid  # a session of its own
    with pytest.raises(queue.RunnerRunning, match=f"already runs .*pid {pid}"):
        queue.start_runner(runs)
    second = subprocess.run(
        [sys.executable, "-m", "engine.queue", str(runs)], capture_output=True, text=True, timeout=60
    )
    assert second.returncode == queue.EXIT_RUNNER_RUNNING and f"pid {pid}" in second.stderr
    assert cli.main(["queue", "start", "--runs-dir", str(runs)]) == 2
    assert "already runs" in capsys.readouterr().err
    assert queue.stop_runner(runs) == pid
    assert queue.runner_state(runs) is None
    assert queue.stop_runner(runs) is None


def test_gpus_come_from_cuda_visible_devices_and_each_run_gets_the_least_busy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,2")
    assert queue.detect_gpus() == ["0", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert queue.detect_gpus() == []
    assert queue.pick_gpu(["0", "2"], []) == "0"
    assert queue.pick_gpu(["0", "2"], ["0"]) == "2"
    assert queue.pick_gpu(["0", "2"], ["0", "2", "2"]) == "0"
    assert queue.pick_gpu([], ["0"]) is None


# In a run's process: wait before training until a file appears, after writing the process's pid and the GPUs it
# sees to another.
HOLD_BEFORE_TRAINING = """
import os, pathlib, time
import engine.runner

real_init = engine.runner.Runner.__init__

def init(self, *args, **kwargs):
    pathlib.Path({pid_file!r}).write_text(f"{{os.getpid()}} {{os.environ.get('CUDA_VISIBLE_DEVICES', '-')}}")
    while not pathlib.Path({release!r}).exists():
        time.sleep(0.05)
    real_init(self, *args, **kwargs)

engine.runner.Runner.__init__ = init
"""


def wait_for(check: Callable[[], Any], seconds: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}")


@pytest.mark.parametrize(
    "kill_at, outcome",
    [
        ("queue-claimed", "queued"),  # its folder never appeared
        ("queue-folder", "queued"),  # its folder and config.yaml were written, its process never started
        ("queue-spawned", "started"),  # its process started: it holds the claim
    ],
)
def test_a_runner_killed_at_each_step_of_a_claim_leaves_an_entry_that_starts_at_most_once(
    tmp_path: Path,
    runs: Path,
    monkeypatch: pytest.MonkeyPatch,
    in_run_process: Callable[[str], None],
    kill_at: str,
    outcome: str,
) -> None:
    pid_file, release = tmp_path / "run.pid", tmp_path / "release"
    in_run_process(HOLD_BEFORE_TRAINING.format(pid_file=str(pid_file), release=str(release)))
    queue.add(runs, load_config(write_config(tmp_path)), "held")
    monkeypatch.setenv(KILL_AT, kill_at)
    runner = subprocess.run([sys.executable, "-m", "engine.queue", str(runs)], capture_output=True, timeout=60)
    assert runner.returncode == -signal.SIGKILL
    (entry,) = queue.list_queue(runs)
    assert entry.state == "claimed" and entry.run is not None
    assert queue.run_status(runs, entry) == "starting"
    try:
        if outcome == "started":
            wait_for(pid_file.exists, what="the run's process")
        (settled,) = queue._recover_claims(runs)  # what the next runner does first
        assert settled.state == outcome
        (after,) = queue.list_queue(runs)
        assert after.state == outcome
        if outcome == "queued":
            assert after.run is None and not (runs / entry.run).exists()
            assert not pid_file.exists()
        else:
            assert after.run == entry.run and (runs / entry.run / "config.yaml").is_file()
            assert queue.run_status(runs, after) == "starting"  # alive, not training yet: it is held
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
    if outcome == "started":
        wait_for(lambda: queue.run_status(runs, after) == "killed", 30, "the run's end")


def test_a_run_sees_only_the_gpu_the_runner_gives_it(
    tmp_path: Path,
    runs: Path,
    monkeypatch: pytest.MonkeyPatch,
    in_run_process: Callable[[str], None],
) -> None:
    pid_file, release = tmp_path / "run.pid", tmp_path / "release"
    in_run_process(HOLD_BEFORE_TRAINING.format(pid_file=str(pid_file), release=str(release)))
    queue.add(runs, load_config(write_config(tmp_path)), "on a GPU")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    monkeypatch.setenv(KILL_AT, "queue-spawned")  # the runner stops there; its run's process waits, held
    subprocess.run([sys.executable, "-m", "engine.queue", str(runs)], capture_output=True, timeout=60)
    try:
        seen = wait_for(lambda: pid_file.exists() and len(pid_file.read_text().split()) == 2, what="the run")
        assert seen and pid_file.read_text().split()[1] == "3"
        assert queue.list_queue(runs)[0].gpu == "3"
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)


# ----------------------------------------------------------------------------------------------------------
# Runs started by the runner (slow)


def wait_ended(runs: Path, count: int, seconds: float = 600.0) -> list[queue.QueueEntry]:
    def ended() -> list[queue.QueueEntry] | None:
        entries = queue.list_queue(runs)
        done = len(entries) == count and all(queue.run_status(runs, e) in queue.ENDED for e in entries)
        return entries if done else None

    result: list[queue.QueueEntry] = wait_for(ended, seconds, "the queue's runs to end")
    return result


def summary(runs: Path, entry: queue.QueueEntry) -> dict[str, Any]:
    assert entry.run is not None
    result: dict[str, Any] = json.loads((runs / entry.run / "summary.json").read_text())
    return result


@pytest.mark.slow
def test_the_runner_starts_queued_runs_one_after_another_and_goes_on_past_one_that_fails(
    make_config: Callable[..., Any], tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    queue.add(runs, make_config(train={"num_train_epochs": 1}), "first")
    # A model folder that goes after the run is queued (queuing refuses one that is not there).
    gone = tmp_path / "no-such-model"
    shutil.copytree(make_config().model.name_or_path, gone)
    queue.add(runs, make_config(model={"name_or_path": str(gone)}), "bad model")
    shutil.rmtree(gone)
    queue.add(runs, make_config(train={"num_train_epochs": 1}), "third")
    try:
        pid = queue.start_runner(runs)
        first, bad, third = wait_ended(runs, 3)
    finally:
        queue.stop_runner(runs)
    assert queue.runner_state(runs) is None
    assert [queue.run_status(runs, e) for e in (first, bad, third)] == ["finished", "failed", "finished"]
    assert bad.state == "failed" and bad.error is not None and "no-such-model" in bad.error and bad.run is None
    one, two = summary(runs, first), summary(runs, third)
    assert two["started"] >= one["ended"]  # one at a time
    assert sorted(p.name for p in runs.iterdir() if not p.name.startswith(".")) == sorted([first.run, third.run])
    log = (runs / ".queue" / "stdout.log").read_text()
    assert f"runner {pid}" in log and "failed to start" in log


def test_a_run_that_failed_to_start_is_looked_at_once_its_process_has_removed_its_folder(tmp_path: Path) -> None:
    """A fresh run that fails before training writes RunFailed, then removes its folder, then ends: the runner
    decides whether the entry keeps a folder only after that (it read the event first and kept a name whose
    folder was about to go)."""
    from engine.live import EventFollower
    from engine.runs import RunDir

    run = RunDir(tmp_path / "runs" / "20250101-000000-classification-minilm")
    run.path.mkdir(parents=True)
    run.events_path.touch()
    follower = EventFollower(run.events_path)
    follower.open()
    code = (
        "import shutil, sys, time\n"
        "from engine.events import RunFailed\n"
        "from engine.runs import EventLog\n"
        "log = EventLog(sys.argv[1] + '/events.jsonl')\n"
        "log.write(RunFailed(error='model.name_or_path: no such model', user_error=True))\n"
        "log.close()\n"
        "time.sleep(0.5)\n"
        "shutil.rmtree(sys.argv[1])\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code, str(run.path)])
    try:
        assert queue._await_training(run, process, follower) == "model.name_or_path: no such model"
        assert not run.path.exists()  # as the runner looks at it next
    finally:
        follower.close()
        process.wait(30)


@pytest.mark.slow
def test_a_runner_killed_mid_run_comes_back_without_starting_any_run_twice(
    make_config: Callable[..., Any], tmp_path: Path, in_run_process: Callable[[str], None]
) -> None:
    runs, marker, release = tmp_path / "runs", tmp_path / "at-step-3", tmp_path / "go-on"
    in_run_process(hold_run_at(3, marker, release))
    queue.add(runs, make_config(train={"num_train_epochs": 1}), "first")
    queue.add(runs, make_config(train={"num_train_epochs": 1}), "second")
    try:
        old = queue.start_runner(runs)
        wait_for(marker.exists, 300, "the first run to reach step 3")
        # the runner marks the entry started once it reads the run's start, which a busy machine may let the run
        # outpace to step 3: killed before that, the entry is still claimed (kill points cover that case)
        log = runs / ".queue" / "stdout.log"
        wait_for(lambda: "entry 1: training in" in log.read_text(), 30, "the runner to see the run train")
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: queue.runner_state(runs) is None, 30, "the runner's end")
        first = queue.list_queue(runs)[0]
        assert first.state == "started" and queue.run_status(runs, first) == "running"

        new = queue.start_runner(runs)
        wait_for(lambda: f"runner {new} on" in log.read_text(), 30, "the new runner")
        time.sleep(4 * queue.POLL_SECONDS)  # a few rounds of the new runner: the first run still holds the one slot
        assert [p.name for p in runs.iterdir() if not p.name.startswith(".")] == [first.run]
        assert [e.state for e in queue.list_queue(runs)] == ["started", "queued"]

        release.touch()
        one, two = wait_ended(runs, 2)
    finally:
        release.touch()
        queue.stop_runner(runs)
    assert one.run == first.run and two.run != one.run
    assert [queue.run_status(runs, e) for e in (one, two)] == ["finished", "finished"]
    for entry in (one, two):
        assert entry.run is not None
        starts = [e for e in read_events(runs / entry.run / "events.jsonl") if e.type == "RunStarted"]
        assert len(starts) == 1
    assert summary(runs, two)["started"] >= summary(runs, one)["ended"]
