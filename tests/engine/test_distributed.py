"""A run on many processes (``launch.num_processes``): one detached run whose launcher starts the ranks through
torchrun, on CPU with gloo; the same numbers as one process with the same global batch, one run folder, and
commands that reach every rank."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main
from engine.config import RunConfig, from_dict, load_config
from engine.detached import DetachedRun, launch_argv, launch_processes
from engine.errors import ConfigError, UserError
from engine.events import (
    CheckpointSaved,
    EpochEnded,
    Evaluated,
    Event,
    Paused,
    Resumed,
    RunFinished,
    RunStarted,
    StepLogged,
    StopRequested,
)
from engine.runner import Runner
from engine.runs import EventLog, create_run_dir, list_runs, read_events
from tests.conftest import TINY_BERT, _minilm_tokenizer, run_started, sentiment_rows, tiny_config, write_jsonl

#: How far a 2-process run's logged losses and eval scores may be from one process's with the same global batch.
#: Measured on a 2-core CPU (gloo, fp32): the largest difference over the 16 losses and 2 evaluations of the test
#: below was 1.2e-7, one float32 rounding step at a loss of 0.7 (two means of 8 and an all-reduce against one
#: mean of 16, batches padded to their own longest text); 1e-5 leaves room for other CPUs' kernels and for the
#: rounding to grow over more steps, and is still far below what a repeated or missing sample changes (> 1e-3).
EQUIVALENCE_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def no_dropout_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT without dropout: dropout draws from each process's own random stream, so only a model
    without it computes the same on 1 and 2 processes."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    tok = _minilm_tokenizer()
    path = tmp_path_factory.mktemp("tiny-bert-no-dropout")
    config = BertConfig(
        vocab_size=tok.vocab_size, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **TINY_BERT
    )
    BertForMaskedLM(config).save_pretrained(path)
    tok.model_max_length = TINY_BERT["max_position_embeddings"]
    tok.save_pretrained(path)
    return path


def _config(model_dir: Path, tmp_path: Path, **train: Any) -> RunConfig:
    # 160 rows, 20 % held out: 128 train rows, a whole number of global batches of 16 (no batch is padded by
    # repeating samples to even out the processes), and 32 eval rows, two eval batches of 16.
    rows = write_jsonl(tmp_path / "data.jsonl", sentiment_rows(160))
    return tiny_config(model_dir, rows, tmp_path / "runs", data={"eval_fraction": 0.2}, train=train)


def _losses(events: list[Event]) -> list[float]:
    return [e.loss for e in events if isinstance(e, StepLogged)]


def _scores(events: list[Event]) -> list[float]:
    evals = [e for e in events if isinstance(e, Evaluated)]
    return [score for e in evals for score in (e.eval_loss, e.accuracy or 0.0, e.macro_f1 or 0.0)]


@pytest.mark.slow
@pytest.mark.parametrize("grouped", [False, True], ids=["shuffled", "group_by_length"])
def test_two_processes_of_batch_8_log_what_one_process_of_batch_16_does(
    no_dropout_bert_dir: Path, tmp_path: Path, grouped: bool
) -> None:
    """Also with train.group_by_length: both processes draw the same grouped order, and each takes its share of
    every step's 16 samples."""
    one: list[Event] = []
    single = _config(no_dropout_bert_dir, tmp_path / "one", per_device_train_batch_size=16, group_by_length=grouped)
    outcome = Runner(single, subscribers=[one.append]).run()
    assert outcome.status == "finished", outcome.error

    two: list[Event] = []
    cfg = _config(no_dropout_bert_dir, tmp_path / "two", per_device_train_batch_size=8, group_by_length=grouped)
    cfg = from_dict({**cfg.to_dict(), "launch": {"num_processes": 2}})
    result = DetachedRun(cfg, subscribers=[two.append], runs_dir=cfg.output.runs_dir).run()
    assert result.status == "finished", result.error

    started = next(e for e in two if isinstance(e, RunStarted))
    assert (started.num_processes, started.backend, started.batch_size) == (2, "gloo", 16)
    assert started.total_steps == next(e for e in one if isinstance(e, RunStarted)).total_steps == 16
    assert len(_losses(two)) == len(_losses(one)) == 16
    assert _losses(two) == pytest.approx(_losses(one), abs=EQUIVALENCE_TOLERANCE)
    assert _scores(two) == pytest.approx(_scores(one), abs=EQUIVALENCE_TOLERANCE)
    lr_one = [e.learning_rate for e in one if isinstance(e, StepLogged)]
    assert [e.learning_rate for e in two if isinstance(e, StepLogged)] == pytest.approx(lr_one)
    # every eval sample once: the confusion matrix adds up to the 32 eval rows
    confusion = next(e for e in two if isinstance(e, Evaluated)).confusion
    assert confusion is not None and sum(map(sum, confusion)) == 32

    # one run folder, written by rank 0 alone: each event once
    assert result.run_dir is not None and [r.path for r in list_runs(cfg.output.runs_dir)] == [result.run_dir]
    on_disk = read_events(result.run_dir / "events.jsonl")
    assert sum(isinstance(e, RunStarted) for e in on_disk) == 1
    assert [e.step for e in on_disk if isinstance(e, StepLogged)] == list(range(1, 17))
    assert [e.epoch for e in on_disk if isinstance(e, EpochEnded)] == [1, 2]
    assert (result.run_dir / "model").is_dir()


@pytest.mark.slow
def test_pause_and_stop_reach_both_processes_and_the_stopped_run_resumes_on_one(
    make_config: Callable[..., Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = make_config({"launch.num_processes": 2, "train.num_train_epochs": 30})
    events: list[Event] = []
    logged = threading.Event()
    handle: DetachedRun

    def watch(event: Event) -> None:
        events.append(event)
        if isinstance(event, StepLogged) and event.step == 3:
            logged.set()

    handle = DetachedRun(cfg, subscribers=[watch], runs_dir=cfg.output.runs_dir)
    runner = threading.Thread(target=handle.run)
    runner.start()
    try:
        assert logged.wait(120), "the run did not reach step 3"
        handle.pause()
        deadline = threading.Event()
        for _ in range(200):
            if any(isinstance(e, Paused) for e in events):
                break
            deadline.wait(0.1)
        paused = next(e for e in events if isinstance(e, Paused))
        deadline.wait(2.0)  # longer than a few rounds of the paused processes' all-reduce
        assert not [e for e in events if isinstance(e, StepLogged) and e.step > paused.step]
        handle.resume()
        handle.stop()
    finally:
        runner.join(120)
    assert not runner.is_alive()
    assert any(isinstance(e, Resumed) for e in events) or any(isinstance(e, StopRequested) for e in events)
    finished = next(e for e in events if isinstance(e, RunFinished))
    assert finished.status == "stopped" and finished.step < 30 * 8
    saved = [e for e in events if isinstance(e, CheckpointSaved)]
    assert saved and saved[-1].step == finished.step

    # It goes on with one process: the global batch stays 2 x 8 samples, so its steps and schedule do too.
    # (An exact resume on the same processes: test_a_two_process_run_stopped_and_resumed_ends_with_...)
    run_dir = Path(next(e for e in events if isinstance(e, RunStarted)).run_dir)
    code = main(["run", "--resume", str(run_dir), "--set", "launch.num_processes=1"])
    assert code == 0
    assert f"note: {run_dir.name} trained on 2 processes and goes on with 1, 16 samples each" in capsys.readouterr().err
    saved_config = load_config(run_dir / "config.yaml")
    assert (saved_config.launch.num_processes, saved_config.train.per_device_train_batch_size) == (1, 16)
    sessions = [e for e in read_events(run_dir / "events.jsonl") if isinstance(e, RunStarted)]
    assert [(e.num_processes, e.batch_size, e.total_steps) for e in sessions] == [(2, 16, 30 * 8), (1, 16, 30 * 8)]
    assert sessions[1].start_step == finished.step
    steps = [e.step for e in read_events(run_dir / "events.jsonl") if isinstance(e, StepLogged)]
    assert steps[-1] == 30 * 8 and sorted(set(steps)) == list(range(1, 30 * 8 + 1))


def test_a_resumed_run_changes_only_its_processes_and_keeps_its_global_batch(
    make_config: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 4)  # room for 2 processes on any CI machine
    cfg = make_config({"train.per_device_train_batch_size": 3})
    run = create_run_dir(cfg)
    EventLog(run.events_path).write(run_started(run_dir=str(run.path), run_name=run.name, num_processes=1))
    before = run.config_path.read_bytes()

    with pytest.raises(UserError, match=r"^--set train.seed: a resumed run keeps its saved config.yaml but for launch"):
        DetachedRun.relaunch(run.path, ["launch.num_processes=2", "train.seed=3"])
    with pytest.raises(
        UserError,
        match=r"^launch.num_processes=2: the run's global batch of 3 \(per_device_train_batch_size 3 × 1 process\) "
        r"does not split over 2; pick a divisor of 3$",
    ):
        DetachedRun.relaunch(run.path, ["launch.num_processes=2"])
    assert run.config_path.read_bytes() == before  # nothing written on a refusal

    with pytest.raises(ConfigError, match=r"^launch\.backend"):
        DetachedRun.relaunch(run.path, ["launch.backend=smoke-signals"])
    assert DetachedRun.relaunch(run.path, ["launch.num_processes=1", "launch.backend=gloo"]) is None
    assert load_config(run.config_path).launch.backend == "gloo"

    even = create_run_dir(make_config({"train.per_device_train_batch_size": 4}))
    EventLog(even.events_path).write(run_started(run_dir=str(even.path), run_name=even.name, num_processes=1))
    with caplog.at_level(logging.WARNING, logger="tunebench.detached"):
        note = DetachedRun.relaunch(even.path, ["launch.num_processes=2"])
    assert note is not None and note.startswith(f"{even.name} trained on 1 process and goes on with 2, 2 samples each")
    assert caplog.records == [], "processes sharing the cores is said once, where the resumed run starts"


def test_a_bad_launch_value_names_its_key(make_config: Callable[..., Any]) -> None:
    cfg = make_config()
    with pytest.raises(ConfigError, match=r"^launch\.num_processes: .*or auto"):
        from_dict({**cfg.to_dict(), "launch": {"num_processes": 0}})
    with pytest.raises(ConfigError, match=r"^launch\.backend: "):
        from_dict({**cfg.to_dict(), "launch": {"backend": "mpi"}})
    with pytest.raises(ConfigError, match=r"^launch\.accelerate_config: .* is not a file"):
        from_dict({**cfg.to_dict(), "launch": {"accelerate_config": "/nowhere/accelerate.yaml"}})
    with pytest.raises(ConfigError, match=r"^launch\.gpu_ids: "):
        from_dict({**cfg.to_dict(), "launch": {"gpu_ids": "0;1"}})
    many = from_dict({**cfg.to_dict(), "launch": {"num_processes": 10_000}})
    with pytest.raises(ConfigError, match=r"^launch\.num_processes: 10000 processes on CPU, but"):
        launch_processes(many)
    nccl = from_dict({**cfg.to_dict(), "launch": {"num_processes": 2, "backend": "nccl"}})
    with pytest.raises(ConfigError, match=r"^launch\.backend: nccl needs CUDA"):
        launch_processes(nccl)
    auto = from_dict({**cfg.to_dict(), "launch": {"num_processes": "auto"}})
    assert launch_processes(auto) == 1  # one process on CPU


def test_the_launch_command_line_is_torchrun_or_accelerate_launch(
    make_config: Callable[..., Any], tmp_path: Path
) -> None:
    cfg = make_config({"launch.num_processes": 2})
    run = tmp_path / "runs" / "r"
    assert launch_argv(cfg, run, 2) == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--standalone",
        "-m",
        "engine.detached",
        str(run),
        "--rank",
    ]
    # Two machines of 8 GPUs each: accelerate's config file says so; this is the README's example.
    accelerate_yaml = tmp_path / "two-machines.yaml"
    accelerate_yaml.write_text(
        "compute_environment: LOCAL_MACHINE\n"
        "distributed_type: MULTI_GPU\n"
        "num_machines: 2\n"
        "machine_rank: 0\n"
        "main_process_ip: 10.0.0.1\n"
        "main_process_port: 29500\n"
        "num_processes: 16\n"
        "mixed_precision: bf16\n",
        encoding="utf-8",
    )
    from accelerate.commands.config.config_args import ClusterConfig

    machines = ClusterConfig.from_yaml_file(str(accelerate_yaml))
    assert (machines.num_machines, machines.machine_rank, machines.main_process_ip) == (2, 0, "10.0.0.1")
    two = from_dict({**cfg.to_dict(), "launch": {"accelerate_config": str(accelerate_yaml)}})
    assert launch_argv(two, run, 1, resume=True) == [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(accelerate_yaml),
        "--module",
        "engine.detached",
        str(run),
        "--rank",
        "--resume",
    ]


def _ranks(launcher: int) -> dict[int, int]:
    """rank -> pid of the rank processes under the launcher ``launcher`` (found through /proc)."""
    import psutil

    out: dict[int, int] = {}
    for child in psutil.Process(launcher).children(recursive=True):
        try:
            rank = child.environ().get("RANK")  # torchrun's own process has none
            if "--rank" in child.cmdline() and rank is not None:
                out[int(rank)] = child.pid
        except psutil.Error:
            continue
    return out


def _start_and_wait_for_step(cfg: RunConfig, step: int) -> tuple[DetachedRun, threading.Thread, list[Event]]:
    events: list[Event] = []
    reached = threading.Event()

    def watch(event: Event) -> None:
        events.append(event)
        if isinstance(event, StepLogged) and event.step >= step:
            reached.set()

    handle = DetachedRun(cfg, subscribers=[watch], runs_dir=cfg.output.runs_dir)
    thread = threading.Thread(target=handle.run)
    thread.start()
    assert reached.wait(120), f"the run did not reach step {step}"
    return handle, thread, events


@pytest.mark.slow
def test_sigterm_to_the_launcher_stops_every_rank_and_saves(make_config: Callable[..., Any]) -> None:
    import os
    import signal

    cfg = make_config({"launch.num_processes": 2, "train.num_train_epochs": 30})
    handle, thread, events = _start_and_wait_for_step(cfg, 3)
    assert handle.pid is not None
    ranks = _ranks(handle.pid)
    assert sorted(ranks) == [0, 1]
    os.kill(handle.pid, signal.SIGTERM)
    thread.join(120)
    assert not thread.is_alive()
    finished = next(e for e in events if isinstance(e, RunFinished))
    assert finished.status == "stopped"
    assert [e for e in events if isinstance(e, CheckpointSaved)][-1].step == finished.step
    import psutil

    assert not [pid for pid in ranks.values() if psutil.pid_exists(pid)]


@pytest.mark.slow
def test_a_killed_rank_ends_the_others_and_the_run_resumes(make_config: Callable[..., Any]) -> None:
    import os
    import signal
    import time

    import psutil

    cfg = make_config({"launch.num_processes": 2, "train.num_train_epochs": 3, "train.save_strategy": "epoch"})
    handle, thread, events = _start_and_wait_for_step(cfg, 10)  # past the first epoch's checkpoint (step 8)
    assert handle.pid is not None
    ranks = _ranks(handle.pid)
    killed_at = time.monotonic()
    os.kill(ranks[1], signal.SIGKILL)
    thread.join(60)
    assert not thread.is_alive(), "the run did not end within 60 s of a rank's death"
    assert time.monotonic() - killed_at < 60
    assert not [pid for pid in [handle.pid, *ranks.values()] if psutil.pid_exists(pid)]
    assert not any(isinstance(e, RunFinished) for e in events)
    run_dir = Path(next(e for e in events if isinstance(e, RunStarted)).run_dir)
    assert list_runs(cfg.output.runs_dir)[0].status in ("failed", "killed")

    again: list[Event] = []
    result = DetachedRun.from_run_dir(run_dir, subscribers=[again.append]).run()
    assert result.status == "finished", result.error
    assert next(e for e in again if isinstance(e, RunStarted)).start_step == 8


@pytest.mark.slow
@pytest.mark.parametrize(
    ("task", "grouped"),
    [("masked-lm", False), ("causal-lm", False), ("causal-lm", True)],
    ids=["masked-lm", "causal-lm", "causal-lm-group_by_length"],
)
def test_the_sft_engine_finishes_on_two_processes_in_one_run_folder(
    task: str, grouped: bool, tiny_bert_dir: Path, tiny_gpt2_dir: Path, tmp_path: Path
) -> None:
    rows = write_jsonl(tmp_path / "data.jsonl", sentiment_rows(160))
    model = tiny_bert_dir if task == "masked-lm" else tiny_gpt2_dir
    cfg = tiny_config(
        model,
        rows,
        tmp_path / "runs",
        {
            "engine": "sft",
            "task": task,
            "launch.num_processes": 2,
            "train.metric_for_best_model": "eval_loss",
            "train.group_by_length": grouped,
        },
        data={"label_field": None},
    )
    events: list[Event] = []
    result = DetachedRun(cfg, subscribers=[events.append], runs_dir=cfg.output.runs_dir).run()
    assert result.status == "finished", result.error
    started = next(e for e in events if isinstance(e, RunStarted))
    assert (started.num_processes, started.backend, started.batch_size) == (2, "gloo", 16)
    assert result.run_dir is not None and [r.path for r in list_runs(cfg.output.runs_dir)] == [result.run_dir]
    on_disk = read_events(result.run_dir / "events.jsonl")
    steps = [e.step for e in on_disk if isinstance(e, StepLogged)]
    assert steps == sorted(set(steps)) and steps[-1] == started.total_steps == 16  # 120 rows, 16 a step, 2 epochs
    assert [e.epoch for e in on_disk if isinstance(e, EpochEnded)] == [1, 2]
    assert len([e for e in on_disk if isinstance(e, Evaluated)]) == 2


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["loop", "sft"])
def test_a_two_process_run_stopped_and_resumed_ends_with_the_weights_of_one_never_stopped(
    engine: str, make_config: Callable[..., Any], tiny_gpt2_dir: Path
) -> None:
    """Exact resume on 2 processes, dropout on: each rank's random streams are in the checkpoint (on this data
    the two ranks happen to draw alike, so the weights alone would not tell a lost rank stream)."""
    from safetensors.torch import load_file

    if engine == "loop":
        cfg = make_config({"launch.num_processes": 2, "train.num_train_epochs": 4})
    else:  # a causal LM through the Trainer, GPT-2's dropout on
        cfg = make_config(
            {"launch.num_processes": 2, "train.num_train_epochs": 4, "engine": "sft", "task": "causal-lm"},
            model={"name_or_path": str(tiny_gpt2_dir)},
            data={"label_field": None},
        )
    whole = DetachedRun(cfg, runs_dir=cfg.output.runs_dir).run()
    assert whole.status == "finished" and whole.run_dir is not None

    handle, thread, events = _start_and_wait_for_step(cfg, 3)
    handle.stop()
    thread.join(120)
    finished = next(e for e in events if isinstance(e, RunFinished))
    assert finished.status == "stopped" and 3 <= finished.step < 32
    run_dir = Path(next(e for e in events if isinstance(e, RunStarted)).run_dir)
    import torch

    checkpoint = run_dir / "checkpoints" / f"checkpoint-{finished.step}"
    if engine == "loop":
        rng = torch.load(checkpoint / "rng.pt", weights_only=True)
        assert len(rng["ranks"]) == 2  # each rank's random states, written by rank 0
    else:
        assert (checkpoint / "rng_state_1.pth").is_file()  # rank 1's random states, written by rank 0
    resumed = DetachedRun.from_run_dir(run_dir).run()
    assert resumed.status == "finished", resumed.error

    expected = load_file(str(whole.run_dir / "model" / "model.safetensors"))
    got = load_file(str(run_dir / "model" / "model.safetensors"))
    assert expected.keys() == got.keys()
    assert all(bool((expected[k] == got[k]).all()) for k in expected), f"stopped at step {finished.step}"
