"""A run killed at any point of its life resumes to the result of a run never interrupted, in both engines.

Each case forks a run that SIGKILLs itself at one named point (engine.faults), resumes the run folder it left,
and compares the final weights, metrics and summary with one uninterrupted run of the same config.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from engine.config import RunConfig, from_dict
from engine.events import EpochEnded, Evaluated, LogMessage, RunFinished, RunStarted
from engine.faults import ENV
from engine.runner import Runner
from engine.runs import read_events
from tests.conftest import sentiment_rows, tiny_config, write_jsonl

# 72 training rows in batches of 8: 9 steps an epoch, 18 in all; a checkpoint every 3 steps, so checkpoint-9
# closes epoch 1 and checkpoint-18 the run, each before its epoch's evaluation.
#: case -> (TUNEBENCH_KILL_AT, the step the resumed run starts from)
KILLS = {
    "during model loading": ("model-load", 0),
    "mid-epoch between two checkpoints": ("step@7", 6),
    "right after a checkpoint is renamed into place": ("checkpoint-renamed@6", 6),
    "during a checkpoint write, before it is marked complete": ("checkpoint-write@6", 3),
    "at an epoch's end, before its evaluation": ("epoch-end@9", 9),
    "during an evaluation": ("evaluate", 9),
    "after the last checkpoint, before the final evaluation": ("epoch-end@18", 18),
    "during the final model save": ("model-save", 18),
    "during the summary write": ("summary-write", 18),
}


def config(tiny_bert_dir: Path, data: Path, runs: Path, engine: str) -> RunConfig:
    train = {"torch_threads": 1, "save_strategy": "steps", "save_steps": 3}
    return tiny_config(
        tiny_bert_dir, data, runs, task="masked-lm", engine=engine, data={"label_field": None}, train=train
    )


@pytest.fixture(scope="module", params=["loop", "sft"])
def straight(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path) -> Any:
    """(engine, config, the folder of an uninterrupted run of it)."""
    import torch

    threads = torch.get_num_threads()
    root = tmp_path_factory.mktemp(f"straight-{request.param}")
    cfg = config(tiny_bert_dir, write_jsonl(root / "rows.jsonl", sentiment_rows(96)), root / "runs", request.param)
    result = Runner(cfg).run()
    torch.set_num_threads(threads)
    assert result.status == "finished" and result.run_dir is not None, result.error
    return request.param, cfg, result.run_dir


def _train_until_killed(cfg: RunConfig, point: str) -> None:
    os.environ[ENV] = point
    Runner(cfg).run()
    os._exit(0)  # not killed: the parent reports the point as never reached


def _epochs(run: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """The last EpochEnded and Evaluated of each epoch in the run's events.jsonl, without their timings."""
    last: dict[tuple[str, int], dict[str, Any]] = {}
    for event in read_events(run / "events.jsonl"):
        if isinstance(event, EpochEnded | Evaluated):
            last[(event.type, event.epoch)] = _scores(
                {k: v for k, v in event.to_dict().items() if k not in ("time", "type")}
            )
    return last


def _scores(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k != "duration_seconds"}


def _weights(run: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(run / "model" / "model.safetensors")


@pytest.mark.parametrize(("point", "resumes_from"), list(KILLS.values()), ids=list(KILLS))
def test_a_run_killed_at_any_point_resumes_to_the_uninterrupted_result(
    straight: Any, tmp_path: Path, point: str, resumes_from: int
) -> None:
    import torch

    engine, cfg, done = straight
    killed_cfg = from_dict({**cfg.to_dict(), "output": {"runs_dir": str(tmp_path / "runs")}})
    # fork: the child starts with torch and the engine already imported, in a fraction of a second
    child = multiprocessing.get_context("fork").Process(target=_train_until_killed, args=(killed_cfg, point))
    child.start()
    child.join(timeout=300)
    assert child.exitcode == -signal.SIGKILL, f"{engine} never reached {point} (exit code {child.exitcode})"
    (run,) = (tmp_path / "runs").iterdir()

    threads = torch.get_num_threads()
    events: list[Any] = []
    result = Runner.from_run_dir(run, subscribers=[events.append]).run()
    torch.set_num_threads(threads)
    assert result.status == "finished", result.error
    assert next(e for e in events if isinstance(e, RunStarted)).start_step == resumes_from
    if resumes_from == 0:
        assert any(isinstance(e, LogMessage) and "no complete checkpoint" in e.message for e in events)

    expected, got = _weights(done), _weights(run)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected), "the resumed run trained other weights"
    want = json.loads((done / "summary.json").read_text())
    have = json.loads((run / "summary.json").read_text())
    assert (have["status"], have["step"]) == ("finished", want["step"])
    assert _scores(have["final_metrics"]) == _scores(want["final_metrics"])
    assert (have["best_metric"], have["best_value"]) == (want["best_metric"], want["best_value"])
    assert _epochs(run) == _epochs(done), "every epoch ends and is evaluated once, with the same figures"
    finished = [e for e in read_events(run / "events.jsonl") if isinstance(e, RunFinished)]
    assert (
        finished[-1].metrics
        == next(e for e in read_events(done / "events.jsonl") if isinstance(e, RunFinished)).metrics
    )
