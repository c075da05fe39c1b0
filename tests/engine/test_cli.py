"""`tunebench run` and `tunebench runs`: output and exit codes (0 ok, 1 internal, 2 user error)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine import cli
from tests.conftest import run_started, tiny_config, write_jsonl


def write_config(tmp_path: Path, cfg: Any) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(cfg.to_yaml())
    return path


def test_run_trains_prints_epoch_rows_and_exits_0(
    make_config: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, make_config(train={"num_train_epochs": 2}))
    code = cli.main(["run", str(path), "--runs-dir", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0
    assert "train loss" in out and "accuracy" in out
    rows = [line.split() for line in out.splitlines() if re.fullmatch(r"\s*\d+(\s+[\d.]+){4}\s+\d+:\d\d", line)]
    assert [r[0] for r in rows] == ["1", "2"]
    run_dirs = list((tmp_path / "out").iterdir())
    assert len(run_dirs) == 1 and f"finished: {run_dirs[0]}" in out


def test_set_overrides_reach_the_run(make_config: Any, tmp_path: Path) -> None:
    path = write_config(tmp_path, make_config())
    code = cli.main(
        [
            "run",
            str(path),
            "--runs-dir",
            str(tmp_path / "out"),
            "--set",
            "train.num_train_epochs=1",
            "--set",
            "output.run_name=tiny",
        ]
    )
    assert code == 0
    (run,) = (tmp_path / "out").iterdir()
    assert run.name.endswith("-tiny")
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["num_train_epochs"] == 1


def test_bad_config_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  learning_rate: fast\n")
    assert cli.main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == 'tunebench: error: train.learning_rate: expected a positive number, got "fast"\n'


def test_data_error_exits_2_without_traceback(
    make_config: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, make_config(data={"text_field": "body"}))
    assert cli.main(["run", str(path), "--runs-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith('tunebench: error: data.text_field: column "body" not in split train')
    assert "Traceback" not in err


@pytest.mark.parametrize("engine", ["loop", "sft"])
def test_a_max_length_beyond_the_models_positions_exits_2_before_any_step(
    engine: str, tiny_gpt2_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tokenizer saved without its limit (int(1e30)): the model's 128 positions are the limit, not an
    IndexError at the first long batch."""
    import json
    import shutil

    model = shutil.copytree(tiny_gpt2_dir, tmp_path / "gpt2")
    tokenizer_config = json.loads((model / "tokenizer_config.json").read_text())
    tokenizer_config.pop("model_max_length")
    (model / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"text": "the cat eats apples. " * 60}] * 16)
    cfg = tiny_config(model, rows, tmp_path / "runs", task="causal-lm", engine=engine)
    path = write_config(tmp_path, cfg)
    assert cli.main(["run", str(path), "--set", "data.max_length=256"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "tunebench: error: data.max_length: 256 is above this model's limit of 128 tokens; use at most 128"
    )
    assert not list((tmp_path / "runs").glob("*/model")), "no run trained"


def test_the_position_limit_is_what_learned_positions_hold(tmp_path: Path) -> None:
    """RoBERTa's 514 embeddings hold 512 tokens; rotary positions (Llama's) set no hard limit."""
    from transformers import BertConfig, GPT2Config, LlamaConfig, RobertaConfig

    from engine.models import _position_limit

    configs = {
        "roberta": (RobertaConfig(max_position_embeddings=514, pad_token_id=1), 512),
        "bert": (BertConfig(max_position_embeddings=512), 512),
        "gpt2": (GPT2Config(n_positions=128), 128),
        "llama": (LlamaConfig(max_position_embeddings=2048), None),
    }
    for name, (config, limit) in configs.items():
        config.save_pretrained(tmp_path / name)
        assert _position_limit(str(tmp_path / name), False) == limit, name


def test_a_reader_that_leaves_early_is_no_traceback(make_config: Any, tmp_path: Path) -> None:
    """`tunebench queue ls | head -1`: the pipe closes before the command prints; `runs RUN` and `compare` print
    through rich, whose own handler would exit 1."""
    import os
    import subprocess
    import sys

    from engine.runs import create_run_dir

    runs = [create_run_dir(make_config(), tmp_path / "runs").name for _ in range(2)]
    for command in (["queue", "ls"], ["runs", runs[0]], ["compare", *runs]):
        read, write = os.pipe()
        os.close(read)
        done = subprocess.run(
            [sys.executable, "-m", "engine.cli", *command, "--runs-dir", str(tmp_path / "runs")],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        os.close(write)
        assert (done.returncode, done.stderr) == (0, ""), command


def test_internal_failure_exits_1_and_shows_the_traceback(
    make_config: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], in_run_process: Any
) -> None:
    in_run_process(
        "import engine.loop\ndef broken(*_args, **_kw):\n    raise RuntimeError('boom')\nengine.loop.run = broken\n"
    )
    path = write_config(tmp_path, make_config())
    assert cli.main(["run", str(path), "--runs-dir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "tunebench: error: internal error: RuntimeError: boom" in err and "Traceback" in err


def test_columns_are_aligned_one_line_per_row(capsys: pytest.CaptureFixture[str]) -> None:
    cli.print_columns(["run", "status"], [["a-long-name", "ok"], ["b", "killed"]])
    assert capsys.readouterr().out == "run          status\na-long-name  ok\nb            killed\n"


def test_runs_lists_finished_runs(make_config: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, make_config(train={"num_train_epochs": 1}))
    assert cli.main(["run", str(path), "--runs-dir", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    assert cli.main(["runs", "--runs-dir", str(tmp_path / "out")]) == 0
    header, row = capsys.readouterr().out.splitlines()[:2]
    assert header.split() == ["run", "status", "best", "time", "memory"]  # 80 columns: the name holds the rest
    name, status, best, value, _, memory, unit = row.split()
    assert (
        (status, best) == ("finished", "acc")
        and unit in ("MiB", "GiB")
        and name.startswith(next((tmp_path / "out").iterdir()).name)
    )
    assert 0 <= float(value) <= 1 and float(memory) > 0


def test_runs_run_shows_its_evaluations_and_the_last_confusion_matrix(
    make_config: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.events import Evaluated
    from engine.runs import read_events

    path = write_config(tmp_path, make_config(train={"num_train_epochs": 2}))
    assert cli.main(["run", str(path), "--runs-dir", str(tmp_path / "out")]) == 0
    run = next((tmp_path / "out").iterdir())
    last = [e for e in read_events(run / "events.jsonl") if isinstance(e, Evaluated)][-1]
    assert last.confusion is not None
    capsys.readouterr()
    assert cli.main(["runs", run.name, "--runs-dir", str(tmp_path / "out")]) == 0
    lines = [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]
    assert lines[0].endswith(": finished; classification, " + make_config().model.name_or_path)
    assert f"confusion matrix, epoch 2, step {last.step} (rows: true labels, columns: predicted)" in lines
    (bad, good) = last.confusion
    assert f"bad {bad[0]} {bad[1]}" in lines and f"good {good[0]} {good[1]}" in lines
    assert any(line.startswith("good ") and line.endswith(f" {sum(good)}") for line in lines)  # its support

    # Its history deleted, the run still shows its evaluations and labels, from summary.json, and says why.
    (run / "events.jsonl").unlink()
    assert cli.main(["runs", run.name, "--runs-dir", str(tmp_path / "out")]) == 0
    without = [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]
    assert without[0].endswith(f"{make_config().model.name_or_path} (its events.jsonl is missing)")
    assert without[1:] == lines[1:]


def test_runs_run_of_a_paused_run_says_paused_as_the_list_does(
    make_config: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from engine.runs import LIVE_FILE, create_run_dir

    run = create_run_dir(make_config(), tmp_path / "out")
    (run.path / LIVE_FILE).write_text(json.dumps({"state": "paused", "step": [57, 150]}))
    with run.lock():  # as the run's process holds it while paused
        assert cli.main(["runs", run.name, "--runs-dir", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith(f"{run.name}: paused 57/150; ")


def test_runs_run_names_a_model_path_as_written(
    make_config: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.runs import EventLog, create_run_dir

    run = create_run_dir(make_config(), tmp_path / "out")
    EventLog(run.events_path).write(run_started(run_dir=str(run.path), run_name=run.name, model="/m/a[b]/[/x]"))
    assert cli.main(["runs", run.name, "--runs-dir", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("; classification, /m/a[b]/[/x]")


def test_runs_run_of_a_failed_run_says_why(
    make_config: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, make_config(train={"num_train_epochs": 1, "learning_rate": 1e6}))
    assert cli.main(["run", str(path), "--runs-dir", str(tmp_path / "out")]) == 2
    run = next((tmp_path / "out").iterdir())
    capsys.readouterr()
    assert cli.main(["runs", run.name, "--runs-dir", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{run.name}: failed;")
    assert lines[1].startswith("failed: loss became NaN at step ")


def test_runs_of_a_folder_that_is_no_run_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["runs", "nothing-here", "--runs-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"tunebench: error: nothing-here: no run by that path, name or prefix in {tmp_path}/; "
        f"tunebench runs --runs-dir {tmp_path} lists them"  # the runs folder it looked in, not ./runs
    )


def test_runs_of_a_run_folder_without_its_config_says_what_it_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "events.jsonl").write_text("", encoding="utf-8")
    assert cli.main(["runs", "damaged", "--runs-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"tunebench: error: {tmp_path}/damaged: not a run folder (it has no config.yaml); pass a folder under the "
        "runs folder"
    )


def test_runs_of_a_missing_runs_folder_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "typo"
    assert cli.main(["runs", "--runs-dir", str(missing)]) == 0
    out, err = capsys.readouterr()
    assert out == "" and err == f"no runs: {missing}/ is not a folder (runs go where output.runs_dir says)\n"


def test_run_progress_shows_the_engines_eta(capsys: pytest.CaptureFixture[str]) -> None:
    from engine.events import StepLogged

    view = cli._Console()
    view(run_started(num_train_samples=10, num_eval_samples=2, num_epochs=1, batch_size=2))
    view(
        StepLogged(
            step=3,
            total_steps=10,
            epoch=0.3,
            loss=0.5,
            learning_rate=1e-5,
            samples_per_second=4.0,
            elapsed_seconds=3.0,
            eta_seconds=125.0,
        )
    )
    view.close()
    assert "ETA 2:05" in capsys.readouterr().out


def test_the_runs_first_line_names_its_precision_and_cpu_threads(capsys: pytest.CaptureFixture[str]) -> None:
    view = cli._Console()
    view(run_started(num_train_samples=10, num_eval_samples=2, num_epochs=1, batch_size=2, cpu_threads=1))
    view.close()
    assert " on cpu (fp32, 1 thread), " in capsys.readouterr().out.splitlines()[0]


def test_paths_and_warnings_print_as_written_with_the_lines_a_colon_introduces(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Rich would read "[b]" in a folder's name as bold, and "[/x]" as a tag it cannot close."""
    from engine.events import LogMessage, Status

    view = cli._Console()
    view(Status("loading data", "/data/a[b]/[/x]/reviews.jsonl"))
    changed = "Warning: The following arguments do not match the ones in the trainer_state.json:\n- logging_steps: 5"
    view(LogMessage("warning", changed + "\n\n"))
    view(LogMessage("warning", "list[str] inputs only\nTraceback (most recent call last): ..."))
    view.close()
    assert capsys.readouterr().out.splitlines() == [  # and no empty line for a bar that never started
        "loading data /data/a[b]/[/x]/reviews.jsonl",
        "warning: Warning: The following arguments do not match the ones in the trainer_state.json:",
        "  - logging_steps: 5",
        "warning: list[str] inputs only",
    ]


def test_a_score_table_lines_up_labels_that_take_two_cells_a_character() -> None:
    from rich.cells import cell_len

    table = cli._score_table([("日本語", 0.5), ("positif 😀", 0.3), ("neg", 0.2)], "text", "label")
    rows = table.splitlines()[2:]
    assert len({cell_len(row.split("0.")[0]) for row in rows}) == 1, table  # every score starts in one column


def test_columns_line_up_cells_that_take_two_cells_a_character(capsys: pytest.CaptureFixture[str]) -> None:
    from rich.cells import cell_len

    cli.print_columns(["class", "recall"], [["日本語", "0.50"], ["neg", "0.25"]])
    lines = capsys.readouterr().out.splitlines()
    assert {cell_len(line.split("0.")[0]) for line in lines[1:]} == {len(lines[0]) - len("recall")}


def test_the_progress_bar_ends_at_the_step_a_stop_came_at(capsys: pytest.CaptureFixture[str]) -> None:
    """Steps are logged every few; a stop between two logs leaves the bar at the stop's step, not the last log's."""
    from engine.events import StepDone, StepLogged, StopRequested

    view = cli._Console()
    view(run_started(num_train_samples=40, num_eval_samples=2, num_epochs=1, batch_size=2, total_steps=20))
    view(StepLogged(10, 20, 0.5, 0.5, 1e-5, 4.0, 3.0, 3.0))
    for step in range(11, 17):
        view(StepDone(step=step, total_steps=20))
    view(StopRequested(step=16))
    view.close()
    assert "step 16/20" in capsys.readouterr().out.splitlines()[-1]


def test_the_bar_names_the_epoch_its_steps_train_and_drops_the_eta_once_stopped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Losses are logged every few steps: the first steps of epoch 2 read "epoch 1" until one was logged, and a
    stopped run kept the ETA of its last log on screen."""
    from engine.events import EpochEnded, StepDone, StepLogged, StopRequested

    view = cli._Console()
    view(run_started(num_train_samples=20, num_eval_samples=2, num_epochs=2, batch_size=2, total_steps=20))
    view(StepLogged(10, 20, 1.0, 0.5, 1e-5, 4.0, 3.0, 13.0))
    view(EpochEnded(epoch=1, step=10, train_loss=0.5, duration_seconds=3.0))
    view(StepDone(step=11, total_steps=20))
    view(StopRequested(step=11))
    view.close()
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("epoch 2") and "step 11/20" in last and last.rstrip().endswith("loss 0.5000  ETA -")

    view = cli._Console()  # stopped at the end of epoch 1: the bar stays at epoch 1
    view(run_started(num_train_samples=20, num_eval_samples=2, num_epochs=2, batch_size=2, total_steps=20))
    view(StepDone(step=10, total_steps=20))
    view(EpochEnded(epoch=1, step=10, train_loss=0.5, duration_seconds=3.0))
    view(StopRequested(step=10))
    view.close()
    assert capsys.readouterr().out.splitlines()[-1].startswith("epoch 1")

    view = cli._Console()  # a session resumed in the middle of epoch 2
    view(
        run_started(num_train_samples=20, num_eval_samples=2, num_epochs=2, batch_size=2, total_steps=20, start_step=15)
    )
    view.close()
    assert capsys.readouterr().out.splitlines()[-1].startswith("epoch 2")


def test_a_run_shorter_than_its_logging_steps_ends_its_bar_at_its_last_step(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No step was logged (4 steps, logging_steps 5), and the last StepDone may not come before the end."""
    from engine.events import RunFinished, StepDone

    view = cli._Console()
    view(run_started(num_train_samples=8, num_eval_samples=2, num_epochs=1, batch_size=2, total_steps=4))
    view(StepDone(step=3, total_steps=4))
    view(RunFinished(status="finished", step=4, duration_seconds=2.0, model_dir=None))
    view.close()
    last = capsys.readouterr().out.splitlines()[-1]
    assert "step 4/4 loss -  ETA -" in last, "no speed known: nothing where it would be"


def test_a_followers_replay_says_each_pause_and_each_resume(capsys: pytest.CaptureFixture[str]) -> None:
    from engine.events import Paused, Resumed

    view = cli._Console()
    view(run_started(num_train_samples=40, num_eval_samples=2, num_epochs=1, batch_size=2, total_steps=20))
    for event in (Paused(step=5), Resumed(step=5), Paused(step=9)):
        view(event)
    view.close()
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("paused", "resumed"))]
    assert said == ["paused at step 5", "resumed at step 5", "paused at step 9"]


def test_a_followers_bar_stands_at_the_step_a_pause_came_at(capsys: pytest.CaptureFixture[str]) -> None:
    """A follower learns of steps from the run's beacon, which may lag the pause's event by a step."""
    from engine.events import Paused, StepDone

    view = cli._Console()
    view(run_started(num_train_samples=40, num_eval_samples=2, num_epochs=1, batch_size=2, total_steps=20))
    view(StepDone(step=16, total_steps=20))
    view(Paused(step=17))
    view(StepDone(step=16, total_steps=20))  # the beacon's reading from before the pause, read after it
    view.close()
    out = capsys.readouterr().out.splitlines()
    assert any("paused at step 17" in line for line in out) and "step 17/20" in out[-1]


def test_epoch_rows_join_an_epochs_end_with_its_evaluation_and_show_the_others_alone(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from engine.cli import _Console
    from engine.events import DeviceUsage, EpochEnded, Evaluated, RunFinished, Status, StepDone

    console = _Console()
    for event in [
        Evaluated(epoch=0.6, step=3, eval_loss=0.9, accuracy=0.5, macro_f1=0.4),
        EpochEnded(epoch=1, step=5, train_loss=0.8, duration_seconds=4.0),
        Evaluated(epoch=1.2, step=6, eval_loss=0.7, accuracy=0.6, macro_f1=0.5),
        EpochEnded(epoch=2, step=10, train_loss=0.5, duration_seconds=4.0),
        Status("evaluating", "epoch 2"),
        # a followed run's readings from live.json come between any two events
        StepDone(step=10, total_steps=10),
        DeviceUsage("CPU", 180.0, 900.0),
        Evaluated(epoch=2, step=10, eval_loss=0.6, accuracy=0.7, macro_f1=0.6, duration_seconds=1.0),
        RunFinished(status="finished", step=10, duration_seconds=9.0, model_dir=None),
    ]:
        console(event)
    console.close()
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.strip()[:1].isdigit()]
    assert rows == [
        ["0.60", "-", "0.9000", "0.500", "0.4000", "0:00"],
        ["1", "0.8000", "-", "-", "-", "0:04"],
        ["1.20", "-", "0.7000", "0.600", "0.5000", "0:00"],
        ["2", "0.5000", "0.6000", "0.700", "0.6000", "0:05"],
    ]


def test_a_config_given_without_a_command_opens_the_workbench_on_it() -> None:
    opened: list[str] = []
    assert cli.main(["my.yaml"], open_ui=lambda path: opened.append(path) or 0) == 0
    assert opened == ["my.yaml"]
