"""Faults during a run: NaN loss, out of memory, a full disk, a crash in the worker, SIGTERM. Each ends in a clear
message, keeps what was already saved, and leaves the process able to start the next run."""

from __future__ import annotations

import errno
import gc
import json
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import engine.loop
from engine.checkpoint import complete_checkpoints, latest_checkpoint
from engine.events import RunFailed, RunStarted
from engine.runner import Runner
from tests.conftest import hold_run_at, sentiment_rows, write_jsonl

REPO = Path(__file__).resolve().parents[2]


def _inject(
    monkeypatch: pytest.MonkeyPatch, fault: Callable[[int, dict[str, Any]], None], engine_module: Any = None
) -> list[Any]:
    """Make the engine's model call ``fault(call_number, forward_kwargs)`` before every training forward pass.

    ``engine_module`` is the engine whose ``load_model`` is wrapped (default: ``engine.loop``). Returns a list
    that receives a weak reference to each model built, to check later that it was freed.
    """
    target = engine_module or engine.loop
    real = target.load_model
    models: list[Any] = []

    def load_model(*args: Any, **kwargs: Any) -> Any:
        loaded = real(*args, **kwargs)
        calls = [0]

        def hook(_module: Any, _args: Any, forward_kwargs: dict[str, Any]) -> None:
            if _module.training:
                calls[0] += 1
                fault(calls[0], forward_kwargs)

        loaded.model.register_forward_pre_hook(hook, with_kwargs=True)
        models.append(weakref.ref(loaded.model))
        return loaded

    monkeypatch.setattr(target, "load_model", load_model)
    return models


def test_nan_loss_fails_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(
    monkeypatch: pytest.MonkeyPatch, make_config: Callable[..., Any]
) -> None:
    import torch

    def poison(call: int, kwargs: dict[str, Any]) -> None:
        if call >= 4:  # from step 4 on, the embeddings (and so the loss) are NaN
            kwargs["inputs_embeds"] = torch.full((*kwargs["input_ids"].shape, 32), float("nan"))
            del kwargs["input_ids"]

    _inject(monkeypatch, poison)
    cfg = make_config(train={"save_strategy": "steps", "save_steps": 2, "logging_steps": 3})
    events: list[Any] = []
    result = Runner(cfg, subscribers=[events.append]).run()

    assert result.status == "failed" and result.user_error
    assert result.error is not None
    lr = cfg.train.learning_rate
    assert result.error.startswith(f"loss became NaN at step 4; lower train.learning_rate (now {lr:g})")
    assert "checkpoint-2" in result.error
    assert "train.precision" not in result.error, "a run in fp32 is not told to use fp32"
    assert isinstance(events[-1], RunFailed) and events[-1].traceback is None
    assert events[-1].step == 4, "the step it failed at, though no loss was logged there"
    assert result.run_dir is not None
    assert [p.name for p in complete_checkpoints(result.run_dir / "checkpoints")] == ["checkpoint-2"]
    assert not (result.run_dir / "model").exists(), "NaN weights are not saved as the run's model"
    assert json.loads((result.run_dir / "summary.json").read_text())["status"] == "failed"


def test_out_of_memory_is_a_clear_failure_that_frees_the_model_for_the_next_run(
    monkeypatch: pytest.MonkeyPatch, make_config: Callable[..., Any], tmp_path: Path
) -> None:
    import torch

    def oom(call: int, _kwargs: dict[str, Any]) -> None:
        if call == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    models = _inject(monkeypatch, oom)
    events: list[Any] = []
    runner = Runner(make_config(), subscribers=[events.append])
    runner.start()
    result = runner.join()

    assert result is not None and result.status == "failed" and result.user_error
    assert result.error is not None
    assert result.error.startswith(
        "out of memory on the accelerator at step 2; lower train.per_device_train_batch_size"
    )
    assert "data.max_length" in result.error and "auto_find_batch_size" in result.error
    assert "\n" not in result.error
    gc.collect()
    assert models[0]() is None, "the failed run's model is still referenced, so its memory is not free"

    monkeypatch.undo()
    rows = write_jsonl(tmp_path / "rows.jsonl", sentiment_rows(24))
    again = Runner(make_config(data={"source": str(rows)}, train={"num_train_epochs": 1})).run()
    assert again.status == "finished", again.error


def test_auto_find_batch_size_halves_the_batch_on_out_of_memory(
    monkeypatch: pytest.MonkeyPatch, make_config: Callable[..., Any], tmp_path: Path
) -> None:
    import torch

    def oom_above_four(_call: int, kwargs: dict[str, Any]) -> None:
        if kwargs["input_ids"].shape[0] > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory.")

    _inject(monkeypatch, oom_above_four)
    events: list[Any] = []
    rows = write_jsonl(tmp_path / "rows.jsonl", sentiment_rows(40))
    cfg = make_config(data={"source": str(rows)}, train={"num_train_epochs": 1, "auto_find_batch_size": True})
    result = Runner(cfg, subscribers=[events.append]).run()

    assert result.status == "finished", result.error
    assert [e.batch_size for e in events if isinstance(e, RunStarted)] == [8, 4]
    assert any(e.type == "LogMessage" and "starting over with 4" in e.message for e in events)
    assert result.run_dir is not None
    saved = (result.run_dir / "config.yaml").read_text()
    assert "per_device_train_batch_size: 4" in saved, "a resume must use the batch size that fit"


def _safetensors_disk_full() -> Exception:
    from safetensors import SafetensorError

    return SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


@pytest.mark.parametrize(
    "disk_full",
    [lambda: OSError(errno.ENOSPC, "No space left on device"), _safetensors_disk_full],
    ids=["OSError", "SafetensorError"],  # safetensors' writer raises its own type for the same error
)
def test_full_disk_fails_clearly_and_keeps_the_checkpoint_already_written(
    monkeypatch: pytest.MonkeyPatch, make_config: Callable[..., Any], disk_full: Callable[[], Exception]
) -> None:
    real = engine.loop.save_training_checkpoint
    calls = [0]

    def fill_disk(folder: Path, **kwargs: Any) -> None:
        calls[0] += 1
        if calls[0] == 1:
            real(folder, **kwargs)
            return
        (folder / "model.safetensors").write_bytes(b"\0" * 128)  # a part was written before the disk filled
        raise disk_full()

    monkeypatch.setattr(engine.loop, "save_training_checkpoint", fill_disk)
    cfg = make_config(train={"num_train_epochs": 1, "save_strategy": "steps", "save_steps": 2})
    result = Runner(cfg).run()

    assert result.status == "failed" and result.user_error and result.run_dir is not None
    assert result.error is not None
    assert result.error.startswith("cannot write a checkpoint in ")
    assert "(No space left on device); checkpoint-2 is intact; free disk space" in result.error
    checkpoints = result.run_dir / "checkpoints"
    assert latest_checkpoint(checkpoints) == checkpoints / "checkpoint-2"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-2"], "no half-written folder is left"

    monkeypatch.undo()  # space freed: the run resumes from checkpoint-2
    events: list[Any] = []
    resumed = Runner.from_run_dir(result.run_dir, subscribers=[events.append]).run()
    assert resumed.status == "finished", resumed.error
    assert next(e for e in events if isinstance(e, RunStarted)).start_step == 2


def test_a_disk_that_fills_while_events_are_written_stops_the_run_which_then_resumes(
    monkeypatch: pytest.MonkeyPatch, make_config: Callable[..., Any]
) -> None:
    """events.jsonl is what every viewer follows: a run that cannot append to it stops at its next step, saves
    what it can and fails with the disk's message, so that nobody watches a run that looks frozen."""
    import engine.runs
    from engine.events import StepLogged

    real = engine.runs.EventLog.write

    def write(log: Any, event: Any) -> None:
        if isinstance(event, StepLogged) and event.step >= 4:
            log.write_error = log.write_error or OSError(errno.ENOSPC, "No space left on device")
        real(log, event)

    monkeypatch.setattr(engine.runs.EventLog, "write", write)
    cfg = make_config(train={"num_train_epochs": 2})  # 30 steps
    result = Runner(cfg).run()

    assert result.status == "failed" and result.user_error and result.run_dir is not None
    assert result.error == (
        f"cannot write to the run folder {result.run_dir} (No space left on device); free disk space or fix its "
        f"permissions, then resume with tunebench run --resume {result.run_dir}"
    )
    written = engine.runs.read_events(result.run_dir / "events.jsonl")
    assert [e.step for e in written if isinstance(e, StepLogged)] == [1, 2, 3]  # whole lines, nothing torn
    stopped_at = latest_checkpoint(result.run_dir / "checkpoints")
    assert stopped_at is not None and stopped_at.name in ("checkpoint-4", "checkpoint-5")  # the next step

    monkeypatch.undo()  # space freed: the run resumes from where it stopped
    events: list[Any] = []
    resumed = Runner.from_run_dir(result.run_dir, subscribers=[events.append]).run()
    assert resumed.status == "finished", resumed.error
    assert next(e for e in events if isinstance(e, RunStarted)).start_step == int(stopped_at.name.split("-")[1])


@pytest.mark.parametrize("crash", [RuntimeError("boom in forward"), SystemExit(3)], ids=["exception", "exit"])
def test_a_crash_in_the_worker_becomes_a_failed_result_and_never_reaches_the_caller(
    monkeypatch: pytest.MonkeyPatch, make_config: Callable[..., Any], crash: BaseException
) -> None:
    def explode(call: int, _kwargs: dict[str, Any]) -> None:
        if call == 3:
            raise crash

    _inject(monkeypatch, explode)
    events: list[Any] = []
    runner = Runner(make_config(), subscribers=[events.append])
    runner.start()
    result = runner.join()

    assert not runner.is_alive()
    assert result is not None and result.status == "failed" and not result.user_error
    assert result.error is not None and result.error.startswith("internal error: ")
    failed = [e for e in events if isinstance(e, RunFailed)]
    assert len(failed) == 1 and failed[0].traceback and type(crash).__name__ in failed[0].traceback


@pytest.mark.slow
def test_sigterm_on_a_headless_run_saves_a_checkpoint_and_marks_it_stopped(
    tmp_path: Path, make_config: Callable[..., Any], in_run_process: Callable[[str], None]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(make_config().to_yaml(), encoding="utf-8")
    runs, marker = tmp_path / "runs", tmp_path / "at-step-3"
    in_run_process(hold_run_at(3, marker))
    cli = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "run", str(config), "--runs-dir", str(runs)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not marker.exists() and cli.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), cli.communicate()[1][-2000:]
    cli.send_signal(signal.SIGTERM)
    _out, err = cli.communicate(timeout=120)

    assert cli.returncode == 130, err[-2000:]
    (run,) = list(runs.iterdir())
    assert json.loads((run / "summary.json").read_text())["status"] == "stopped"
    assert latest_checkpoint(run / "checkpoints") == run / "checkpoints" / "checkpoint-3"
    assert (run / "model" / "config.json").is_file()
    assert "Traceback" not in err
