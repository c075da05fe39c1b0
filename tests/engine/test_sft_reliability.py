"""SFT engine faults and resume: exact masked-LM resume after SIGKILL, NaN loss and out-of-memory failures."""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.events import RunFailed
from engine.runner import Runner
from tests.conftest import sentiment_rows, write_jsonl
from tests.engine.test_faults import _inject as inject_fault
from tests.engine.test_resume import _assert_same_result, _kill_resume_and_compare, _resumed_from

pytest.importorskip("trl")


def _mlm_config(make_config: Callable[..., Any], **sections: dict[str, Any]) -> Any:
    return make_config({"task": "masked-lm", "engine": "sft", "data.label_field": None}, **sections)


def _inject(monkeypatch: pytest.MonkeyPatch, fault: Callable[[int, dict[str, Any]], None]) -> list[Any]:
    """The loop's fault injection, pointed at the SFT engine."""
    import engine.sft

    return inject_fault(monkeypatch, fault, engine.sft)


@pytest.mark.slow
def test_sft_masked_lm_run_killed_mid_epoch_and_resumed_matches_uninterrupted_run(
    tmp_path: Path, make_config: Callable[..., Any]
) -> None:
    # 72 training rows in batches of 8: 9 batches per epoch, so step 7 is inside epoch 1 and checkpoint-6 too.
    cfg = _mlm_config(
        make_config,
        data={"source": str(write_jsonl(tmp_path / "rows.jsonl", sentiment_rows(96))), "eval_fraction": 0.25},
        train={"num_train_epochs": 2, "save_strategy": "steps", "save_steps": 3, "torch_threads": 1},
    )
    straight, resumed = _kill_resume_and_compare(tmp_path, cfg, freeze_at=7)
    assert _resumed_from(resumed) == 6
    _assert_same_result(straight, resumed)
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert summary["step"] == json.loads((straight / "summary.json").read_text())["step"]


def test_sft_nan_loss_fails_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(
    monkeypatch: pytest.MonkeyPatch, make_config: Callable[..., Any]
) -> None:
    import torch

    from engine.checkpoint import latest_checkpoint

    def poison(call: int, kwargs: dict[str, Any]) -> None:
        if call >= 4:  # from step 4 on, the embeddings (and so the loss) are NaN
            kwargs["inputs_embeds"] = torch.full((*kwargs["input_ids"].shape, 32), float("nan"))
            del kwargs["input_ids"]

    _inject(monkeypatch, poison)
    cfg = _mlm_config(make_config, train={"save_strategy": "steps", "save_steps": 2, "logging_steps": 3})
    events: list[Any] = []
    result = Runner(cfg, subscribers=[events.append]).run()

    assert result.status == "failed" and result.user_error
    assert result.error is not None
    lr = cfg.train.learning_rate
    assert result.error.startswith(f"loss became NaN at step 4; lower train.learning_rate (now {lr:g})")
    assert "checkpoint-2" in result.error
    assert "train.precision" not in result.error, "a run in fp32 is not told to use fp32"
    assert isinstance(events[-1], RunFailed) and events[-1].traceback is None
    assert result.run_dir is not None
    checkpoints = result.run_dir / "checkpoints"
    assert latest_checkpoint(checkpoints) == checkpoints / "checkpoint-2", "no NaN checkpoint is written"
    assert not (result.run_dir / "model").exists(), "NaN weights are not saved as the run's model"
    assert json.loads((result.run_dir / "summary.json").read_text())["status"] == "failed"


def test_sft_out_of_memory_is_a_clear_failure_that_frees_the_model(
    monkeypatch: pytest.MonkeyPatch, make_config: Callable[..., Any]
) -> None:
    import torch

    def oom(call: int, _kwargs: dict[str, Any]) -> None:
        if call == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    models = _inject(monkeypatch, oom)
    events: list[Any] = []
    result = Runner(_mlm_config(make_config), subscribers=[events.append]).run()

    assert result.status == "failed" and result.user_error
    assert result.error is not None
    assert result.error.startswith(
        "out of memory on the accelerator at step 2; lower train.per_device_train_batch_size (now 8"
    )
    assert "data.max_length" in result.error and "\n" not in result.error
    assert isinstance(events[-1], RunFailed) and events[-1].traceback is None
    gc.collect()
    assert models[0]() is None, "the failed run's model is still referenced, so its memory is not free"
