"""The step bookkeeping both engines share (engine.stepping): progress at every optimizer step, reported before a
pause holds the run there."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from engine.events import DeviceUsage, Event, Paused, Resumed, RunStarted, StepDone, StepLogged
from engine.runner import Runner

ENGINES = {
    "loop": {"task": "classification", "engine": "loop"},
    "sft": {"task": "masked-lm", "engine": "sft", "data.label_field": None},
}


def _config(make_config: Callable[..., Any], engine: str) -> Any:
    # Two batches to an optimizer step, logged every 4th step: StepDone is not StepLogged, nor one per batch.
    return make_config(
        ENGINES[engine],
        train={"num_train_epochs": 1, "gradient_accumulation_steps": 2, "logging_steps": 4},
    )


def _of(events: list[Event], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


@pytest.mark.parametrize("engine", list(ENGINES))
def test_each_engine_reports_every_optimizer_step_once_in_order(make_config: Callable[..., Any], engine: str) -> None:
    events: list[Event] = []
    result = Runner(_config(make_config, engine), subscribers=[events.append]).run()
    assert result.status == "finished", result.error

    total = _of(events, RunStarted)[0].total_steps
    done = _of(events, StepDone)
    assert [e.step for e in done] == list(range(1, total + 1)), "one StepDone per optimizer step, not per batch"
    assert {e.total_steps for e in done} == {total}
    for logged in _of(events, StepLogged):  # a logged step was reported as done first
        assert events.index(done[logged.step - 1]) < events.index(logged)
    assert result.run_dir is not None
    kept = [json.loads(line)["type"] for line in (result.run_dir / "events.jsonl").read_text().splitlines()]
    assert "StepDone" not in kept, "progress events are not history"


@pytest.mark.parametrize("engine", list(ENGINES))
def test_a_pause_holds_the_run_at_a_step_already_reported_done(make_config: Callable[..., Any], engine: str) -> None:
    events: list[Event] = []
    runner = Runner(_config(make_config, engine))

    def pause_at_step_3(event: Event) -> None:
        events.append(event)
        if isinstance(event, StepDone) and event.step == 3:
            runner.pause()
        elif isinstance(event, Paused):
            runner.resume()

    runner.subscribe(pause_at_step_3)
    result = runner.run()
    assert result.status == "finished", result.error

    (paused,) = _of(events, Paused)
    (resumed,) = _of(events, Resumed)
    assert paused.step == resumed.step == 3, "the pause lands at the step whose StepDone asked for it"
    done_3 = next(e for e in _of(events, StepDone) if e.step == 3)
    done_4 = next(e for e in _of(events, StepDone) if e.step == 4)
    assert events.index(done_3) < events.index(paused) < events.index(resumed) < events.index(done_4)


def test_a_paused_run_goes_on_reading_its_device(make_config: Callable[..., Any], monkeypatch: Any) -> None:
    """The header's CPU and memory must not stand still while a run is paused: readings go on coming."""
    import engine.resources
    import engine.stepping

    monkeypatch.setattr(engine.resources, "READ_EVERY_SECONDS", 0.05)
    monkeypatch.setattr(engine.stepping, "READ_EVERY_SECONDS", 0.05)
    events: list[Event] = []
    runner = Runner(_config(make_config, "loop"))

    readings_paused: list[DeviceUsage] = []

    def pause_at_step_3(event: Event) -> None:
        events.append(event)
        if isinstance(event, StepDone) and event.step == 3:
            runner.pause()
        elif isinstance(event, DeviceUsage) and _of(events, Paused):
            readings_paused.append(event)
            if len(readings_paused) == 3:
                runner.resume()

    runner.subscribe(pause_at_step_3)
    result = runner.run()
    assert result.status == "finished", result.error
    (paused,), (resumed,) = _of(events, Paused), _of(events, Resumed)
    between = events[events.index(paused) : events.index(resumed)]
    readings = [e for e in between if isinstance(e, DeviceUsage)]
    assert len(readings) >= 3 and all(r.utilization_percent is not None for r in readings)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_nan_loss_suggests_fp32_only_to_a_run_in_lower_precision(tmp_path: Any, precision: str) -> None:
    import torch

    from engine.errors import TrainingDiverged
    from engine.stepping import DivergenceWatch

    watch = DivergenceWatch(1e-3, tmp_path, torch.device("cpu"), precision=precision)
    watch.record(torch.tensor(float("nan")), 3)
    with pytest.raises(TrainingDiverged) as raised:
        watch.check()
    suggested = "or use train.precision: fp32 (now bf16)"
    assert str(raised.value).startswith("loss became NaN at step 3; lower train.learning_rate (now 0.001)")
    assert (suggested in str(raised.value)) == (precision == "bf16")
