"""train.precision: what auto picks on each device, what is refused with a fix, and bf16 training on a CPU."""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch

from engine import models
from engine.errors import ModelError
from engine.models import native_bf16, pick_precision

CPU = torch.device("cpu")
ZEN4 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16 avx512_vnni\nbogomips\t: 4800\n"
SAPPHIRE_RAPIDS = "flags\t\t: fpu avx512f amx_bf16 amx_tile amx_int8\n"
SKYLAKE = "flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\n"


def test_native_bf16_is_read_from_the_cpu_flags() -> None:
    assert native_bf16(ZEN4) and native_bf16(SAPPHIRE_RAPIDS)
    assert not native_bf16(SKYLAKE)
    assert not native_bf16("")  # no flags line (not Linux, a container without /proc)
    assert not native_bf16("model name\t: avx512_bf16 in a name is not a flag\n")


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_on_a_cpu_is_bf16_only_where_the_cpu_computes_it(
    native: bool, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: native)
    assert pick_precision("auto", CPU) == expected
    assert pick_precision("fp32", CPU) == "fp32"


def test_bf16_on_a_cpu_without_it_and_fp16_on_any_cpu_are_refused_with_a_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(ModelError, match=r"^train.precision: bf16 needs a GPU or a CPU with native bf16 .*fp32$"):
        pick_precision("bf16", CPU)
    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: True)
    assert pick_precision("bf16", CPU) == "bf16"
    with pytest.raises(ModelError, match=r"^train.precision: fp16 needs a GPU; use precision: auto or fp32"):
        pick_precision("fp16", CPU)


@pytest.mark.parametrize(("engine", "task", "label"), [("loop", "classification", "label"), ("sft", "masked-lm", None)])
def test_both_engines_compute_in_bf16_on_a_cpu_that_has_it(
    engine: str, task: str, label: str | None, make_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every linear layer of the run, training and evaluation, runs under bf16 autocast (on a CPU without
    native bf16, torch emulates it: slower, the same math)."""
    from engine.events import RunFinished, RunStarted
    from engine.runner import Runner

    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: True)
    under_autocast: list[bool] = []
    linear = torch.nn.Linear.forward

    def recorded(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
        under_autocast.append(torch.is_autocast_enabled("cpu"))
        return linear(self, x)

    monkeypatch.setattr(torch.nn.Linear, "forward", recorded)
    overrides = {"engine": engine, "task": task, "data.label_field": label, "train.num_train_epochs": 1}
    cfg = make_config({**overrides, "train.precision": "auto"})
    events: list[Any] = []
    Runner(cfg, subscribers=[events.append]).run()
    started = next(e for e in events if isinstance(e, RunStarted))
    finished = next(e for e in events if isinstance(e, RunFinished))
    assert started.precision == "bf16"
    assert finished.status == "finished", finished.note
    assert under_autocast and all(under_autocast), f"{under_autocast.count(False)} linear calls ran in fp32"


def test_more_torch_threads_than_cores_are_cut_to_the_cores_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1})
    before = torch.get_num_threads()
    try:
        models.set_torch_threads(1000)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert "train.torch_threads: 1000 is more than the 2 cores this process may use; using 2" in caplog.text
