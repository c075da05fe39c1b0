"""The TRL SFTTrainer engine: real MLM masking, the model's own loss, events, stop/pause, resume, saved models."""

from __future__ import annotations

import json
import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from engine.events import (
    CheckpointSaved,
    EpochEnded,
    Evaluated,
    LogMessage,
    Paused,
    RunFinished,
    RunStarted,
    StepLogged,
    StopRequested,
)
from engine.runner import Runner


def mlm_config(make_config: Callable[..., Any], **sections: dict[str, Any]) -> Any:
    return make_config({"task": "masked-lm", "engine": "sft", "data.label_field": None}, **sections)


def run_events(cfg: Any, *subscribers: Callable[[Any], None]) -> tuple[Any, list[Any]]:
    events: list[Any] = []
    result = Runner(cfg, subscribers=[events.append, *subscribers]).run()
    return result, events


def of(events: list[Any], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


@dataclass
class SharedRun:
    """One finished masked-LM SFT run, its events, and every training batch its trainer computed a loss on."""

    result: Any
    events: list[Any]
    batches: list[tuple[Any, dict[str, Any]]] = field(default_factory=list)


@pytest.fixture(scope="module")
def mlm_run(tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path) -> SharedRun:
    """Two epochs of the tiny BERT on short reviews, checkpointing every epoch (keeping one)."""
    from engine.config import from_dict
    from engine.sft import _trainer_classes

    root = tmp_path_factory.mktemp("sft-mlm")
    rng = random.Random(0)
    words = ["great", "lovely", "awful", "rude", "quiet", "busy", "clean", "cold"]
    places = ["cafe", "shop", "bakery", "diner", "bar"]
    rows = [f"the {rng.choice(places)} was {rng.choice(words)} today, visit {i}" for i in range(96)]
    source = root / "reviews.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in rows), encoding="utf-8")
    cfg = from_dict(
        {
            "task": "masked-lm",
            "engine": "sft",
            "model": {"name_or_path": str(tiny_bert_dir)},
            "data": {"source": str(source), "label_field": None, "eval_split": None, "eval_fraction": 0.25},
            "train": {
                "learning_rate": 3e-3,
                "num_train_epochs": 2,
                "per_device_train_batch_size": 8,
                "logging_steps": 1,
                "device": "cpu",
                "save_strategy": "epoch",
                "save_total_limit": 1,
            },
            "output": {"runs_dir": str(root / "runs")},
        }
    )
    masked_cls = _trainer_classes()[1]
    original = masked_cls.compute_loss
    shared = SharedRun(result=None, events=[])

    def spy(self: Any, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        if model.training:
            shared.batches.append((self, {k: v.detach().clone() for k, v in inputs.items()}))
        return original(self, model, inputs, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(masked_cls, "compute_loss", spy)
        shared.result, shared.events = run_events(cfg)
    assert shared.result.status == "finished", shared.result.error
    return shared


def test_sft_masked_lm_batches_are_really_masked(mlm_run: SharedRun, tiny_bert_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    specials = {tok.cls_token_id, tok.sep_token_id, tok.pad_token_id}
    labelled = ordinary = replaced_by_mask = 0
    for _trainer, batch in mlm_run.batches:
        # what the model needs besides the ids reaches it
        assert {"input_ids", "attention_mask", "token_type_ids", "labels"} <= set(batch)
        ids, labels, attention = batch["input_ids"], batch["labels"], batch["attention_mask"]
        restored = ids.clone()
        restored[labels != -100] = labels[labels != -100]
        # one [CLS] ... [SEP] per text: no EOS appended on top of the tokenizer's own [SEP]
        assert ((restored == tok.sep_token_id).sum(dim=1) == 1).all()
        is_special = sum((restored == s) for s in specials).bool() | (attention == 0)
        # labels only where a real token was chosen for prediction; -100 everywhere else
        assert not ((labels != -100) & is_special).any()
        labelled += int((labels != -100).sum())
        ordinary += int((~is_special).sum())
        replaced_by_mask += int(((labels != -100) & (ids == tok.mask_token_id)).sum())
    assert mlm_run.batches, "the trainer computed no training loss"
    assert 0.11 < labelled / ordinary < 0.19  # mlm_probability 0.15 of the non-special tokens
    assert 0.65 < replaced_by_mask / labelled < 0.95  # 80 % of those become [MASK]


def test_sft_masked_lm_loss_is_the_models_own_unshifted_loss(mlm_run: SharedRun) -> None:
    import torch

    trainer, batch = mlm_run.batches[-1]
    model = trainer.model.eval()
    with torch.no_grad():
        trainer_loss = trainer.compute_loss(model, dict(batch))
        own = model(**batch).loss
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        shifted = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)), batch["labels"][:, 1:].reshape(-1), ignore_index=-100
        )
    assert trainer_loss.item() == pytest.approx(own.item(), rel=1e-5)
    assert abs(trainer_loss.item() - shifted.item()) > 1e-3


def test_sft_masked_lm_head_on_masked_positions_only_gives_the_full_models_gradients(mlm_run: SharedRun) -> None:
    """The engine runs the MLM head on the masked positions only; the loss and every gradient match the
    model's own forward over all positions."""
    import torch

    from engine.sft import masked_lm_parts

    trainer, batch = mlm_run.batches[-1]
    model = trainer.model.eval()  # no dropout: both passes see the same network
    assert masked_lm_parts(model) is not None  # the fast path is the one under test

    def grads(loss_of: Callable[[], Any]) -> tuple[float, dict[str, Any]]:
        model.zero_grad(set_to_none=True)
        loss = loss_of()
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    fast_loss, fast = grads(lambda: trainer.compute_loss(model, dict(batch)))
    full_loss, full = grads(lambda: model(**batch).loss)
    model.zero_grad(set_to_none=True)
    assert fast_loss == pytest.approx(full_loss, rel=1e-5)
    assert fast.keys() == full.keys()
    for name in full:
        torch.testing.assert_close(fast[name], full[name], rtol=1e-4, atol=1e-6, msg=name)


def test_sft_masked_lm_run_streams_the_loop_events_and_checkpoints(mlm_run: SharedRun) -> None:
    events = mlm_run.events
    started = of(events, RunStarted)[0]
    assert (started.engine, started.task, started.precision) == ("sft", "masked-lm", "fp32")
    assert started.total_steps == 2 * math.ceil(started.num_train_samples / 8)
    steps = of(events, StepLogged)
    assert [s.step for s in steps] == list(range(1, started.total_steps + 1))  # logging_steps is 1
    assert all(s.samples_per_second > 0 and s.learning_rate > 0 for s in steps)
    assert [e.epoch for e in of(events, EpochEnded)] == [1, 2]
    evals = of(events, Evaluated)
    assert [e.epoch for e in evals] == [1, 2]
    for e in evals:
        assert e.perplexity == pytest.approx(math.exp(e.eval_loss))
        assert e.accuracy is not None and 0.0 <= e.accuracy <= 1.0
    saved = of(events, CheckpointSaved)
    assert [c.step for c in saved] == [started.total_steps // 2, started.total_steps]
    kept = sorted(p.name for p in Path(saved[-1].path).parent.iterdir())
    assert kept == [Path(saved[-1].path).name]  # save_total_limit 1 keeps only the newest
    finished = of(events, RunFinished)[0]
    assert finished.status == "finished" and finished.step == started.total_steps
    assert Path(finished.model_dir or "").joinpath("config.json").is_file()
    # the same events reach events.jsonl as plain JSON
    assert mlm_run.result.run_dir.joinpath("events.jsonl").read_text(encoding="utf-8").count('"Evaluated"') == 2


def test_sft_saved_model_fills_masks_in_plain_pipeline_like_engine_predict(mlm_run: SharedRun) -> None:
    from transformers import pipeline

    from engine.predict import load_predictor

    run_dir = mlm_run.result.run_dir
    text = "the cafe was [MASK] today"
    raw = pipeline("fill-mask", model=str(run_dir / "model"), device="cpu")(text, top_k=5)
    ours = load_predictor(str(run_dir), device="cpu").fill_mask(text, top_k=5)
    assert [t.token_str for t in ours.masks[0]] == [r["token_str"] for r in raw]
    assert [t.score for t in ours.masks[0]] == pytest.approx([r["score"] for r in raw], abs=1e-6)
    assert not ours.untrained_head


def test_sft_warns_when_the_mlm_head_is_new(tmp_path: Path, make_config: Callable[..., Any]) -> None:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    tiny = Path(make_config().model.name_or_path)
    headless = tmp_path / "headless-bert"
    BertModel(BertConfig.from_pretrained(tiny)).save_pretrained(headless)
    AutoTokenizer.from_pretrained(tiny).save_pretrained(headless)
    cfg = mlm_config(make_config, model={"name_or_path": str(headless)}, train={"num_train_epochs": 1})
    result, events = run_events(cfg)
    assert result.status == "finished", result.error
    warnings = [e for e in of(events, LogMessage) if e.logger == "tunebench.sft" and e.level == "warning"]
    assert any("MLM head was newly initialized" in w.message for w in warnings)


def test_sft_causal_lm_trains_a_tiny_gpt2(make_config: Callable[..., Any], tiny_gpt2_dir: Path) -> None:
    from engine.predict import load_predictor

    cfg = make_config(
        {"task": "causal-lm", "engine": "sft", "data.label_field": None},
        model={"name_or_path": str(tiny_gpt2_dir)},
        train={"num_train_epochs": 2},
    )
    result, events = run_events(cfg)
    assert result.status == "finished", result.error
    epochs = of(events, EpochEnded)
    assert epochs[-1].train_loss < epochs[0].train_loss
    evals = of(events, Evaluated)
    assert len(evals) == 2 and evals[-1].eval_loss < evals[0].eval_loss
    assert evals[-1].perplexity == pytest.approx(math.exp(evals[-1].eval_loss))
    assert evals[-1].accuracy is not None and 0.0 < evals[-1].accuracy <= 1.0  # next-token accuracy
    generated = load_predictor(str(result.run_dir), device="cpu").generate("the cafe was", max_new_tokens=4)
    assert generated.completion.strip()


def test_sft_causal_lm_loss_is_the_mean_over_the_shifted_tokens_for_gpt2(tmp_path: Path, tiny_gpt2_dir: Path) -> None:
    """GPT-2's class name names no loss type, and the Trainer counted its tokens unshifted, one too many a row:
    the loss it trained on was the mean over more tokens than were predicted."""
    import torch

    from engine.sft import _trainer_classes
    from tests.conftest import tiny_config, write_jsonl

    data = write_jsonl(tmp_path / "rows.jsonl", [{"text": f"the cafe was nice, visit {i}"} for i in range(24)])
    causal_cls = _trainer_classes()[0]
    original = causal_cls.training_step
    seen: list[tuple[Any, dict[str, Any], Any]] = []

    def spy(self: Any, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
        seen.append((self, {k: v.clone() for k, v in inputs.items()}, num_items_in_batch))
        return original(self, model, inputs, num_items_in_batch)

    cfg = tiny_config(
        tiny_gpt2_dir,
        data,
        tmp_path / "runs",
        {"engine": "sft", "task": "causal-lm", "train.num_train_epochs": 1, "train.eval_strategy": "no"},
        data={"label_field": None},
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(causal_cls, "training_step", spy)
        result, _events = run_events(cfg)
    assert result.status == "finished", result.error
    trainer, batch, counted = seen[-1]
    assert int(counted) == int(batch["labels"][:, 1:].ne(-100).sum())  # the tokens a causal LM predicts
    model = trainer.model.eval()
    with torch.no_grad():
        trained_on = trainer.compute_loss(model, dict(batch), num_items_in_batch=counted)
        own = model(**batch).loss
    assert trained_on.item() == pytest.approx(own.item(), rel=1e-5)


def test_an_encoder_loaded_as_a_causal_lm_attends_left_to_right_only(tiny_bert_dir: Path, tiny_gpt2_dir: Path) -> None:
    import torch

    from engine.models import load_model, untrained_head_warning

    model = load_model("causal-lm", str(tiny_bert_dir)).model.eval()
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102]])
    later_changed = ids.clone()
    later_changed[0, 4] = 2204
    with torch.no_grad():
        before, after = model(input_ids=ids).logits, model(input_ids=later_changed).logits
    # a position that saw the token after it would learn to copy it, not to predict it
    assert torch.allclose(before[0, :4], after[0, :4], atol=1e-5)
    assert not torch.allclose(before[0, 4:], after[0, 4:], atol=1e-5)
    assert not hasattr(load_model("causal-lm", str(tiny_gpt2_dir)).model.config, "is_decoder")
    assert untrained_head_warning(["cls.predictions.bias"], "causal-lm") is not None  # MiniLM's case


def test_loop_trains_masked_lm_through_the_same_masking_collator(
    make_config: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import DataCollatorForLanguageModeling

    import engine.loop
    from engine.data import build_collator

    built: list[Any] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        built.append(build_collator(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(engine.loop, "build_collator", spy)
    cfg = make_config({"task": "masked-lm", "engine": "loop", "data.label_field": None}, train={"mlm_probability": 0.2})
    result, events = run_events(cfg)
    assert result.status == "finished", result.error
    assert isinstance(built[0], DataCollatorForLanguageModeling)
    assert built[0].mlm and built[0].mlm_probability == 0.2
    evals = of(events, Evaluated)
    assert evals and all(e.perplexity == pytest.approx(math.exp(e.eval_loss)) for e in evals)


def test_stop_ends_an_sft_run_with_a_checkpoint_and_the_model_and_it_resumes_to_the_end(
    make_config: Callable[..., Any],
) -> None:
    from engine.checkpoint import latest_checkpoint

    cfg = mlm_config(make_config, train={"num_train_epochs": 2})  # save_strategy: no
    runner = Runner(cfg)
    events: list[Any] = []

    def stop_after_second_step(event: Any) -> None:
        events.append(event)
        if isinstance(event, StepLogged) and event.step == 2:
            runner.stop()

    runner.subscribe(stop_after_second_step)
    stopped = runner.run()
    assert stopped.status == "stopped", stopped.error
    # step 2 is logged after its step boundary, so the stop lands at the next one
    assert [e.step for e in of(events, StopRequested)] == [3]
    total = of(events, RunStarted)[0].total_steps
    assert max(e.step for e in of(events, StepLogged)) == 3 < total
    assert not of(events, EpochEnded)  # a partial epoch is not reported as an epoch
    assert [e.step for e in of(events, CheckpointSaved)] == [3]  # a stop writes a checkpoint even so
    assert of(events, RunFinished)[0].status == "stopped"
    assert (stopped.run_dir / "model" / "config.json").is_file()

    checkpoints = stopped.run_dir / "checkpoints"
    (checkpoints / "checkpoint-9").mkdir()  # cut off mid-save: no completion marker, so never resumed from
    assert latest_checkpoint(checkpoints) == checkpoints / "checkpoint-3"
    more: list[Any] = []
    resumed = Runner.from_run_dir(stopped.run_dir, subscribers=[more.append]).run()
    assert resumed.status == "finished", resumed.error
    assert of(more, RunStarted)[0].start_step == 3
    steps = [e.step for e in of(more, StepLogged)]
    assert steps[0] == 4 and steps[-1] == total
    assert [e.epoch for e in of(more, EpochEnded)] == [1, 2]


def test_pause_holds_an_sft_run_until_resumed(make_config: Callable[..., Any]) -> None:
    cfg = mlm_config(make_config, train={"num_train_epochs": 1})
    runner = Runner(cfg)
    timeline: list[Any] = []
    lock = threading.Lock()
    paused = threading.Event()

    def watch(event: Any) -> None:
        with lock:
            timeline.append(event)
        if isinstance(event, StepLogged) and event.step == 1:
            runner.pause()
        if isinstance(event, Paused):
            paused.set()

    runner.subscribe(watch)
    runner.start()
    assert paused.wait(timeout=120), "the run never paused"
    with lock:
        timeline.append("resume requested")
    runner.resume()
    result = runner.join(timeout=120)
    assert result is not None and result.status == "finished", result and result.error

    names = [e if isinstance(e, str) else e.type for e in timeline]
    pause_at = names.index("Paused")
    # while paused the worker does nothing: the next thing after Paused is our resume, then Resumed
    assert names[pause_at + 1 : pause_at + 3] == ["resume requested", "Resumed"]
    paused_step = timeline[pause_at].step
    assert timeline[pause_at + 2].step == paused_step
    assert max(e.step for e in of(timeline, StepLogged)) > paused_step


def test_masked_lm_sample_configs_train_with_sft() -> None:
    from engine.config import load_config

    root = Path(__file__).resolve().parents[2] / "sample_configs"
    quick = load_config(root / "quickstart-mlm.yaml")
    assert (quick.task, quick.engine, quick.model.name_or_path, quick.data.source) == (
        "masked-lm",
        "sft",
        "minilm",
        "movies-sample",
    )
    seed = load_config(root / "imdb-bert-mlm.yaml")
    assert (seed.task, seed.engine, seed.model.name_or_path, seed.data.source, seed.data.text_field) == (
        "masked-lm",
        "sft",
        "bert-base-uncased",
        "imdb",
        "text",
    )


def test_sft_group_by_length_trains_on_batches_of_similar_length(tmp_path: Path, tiny_gpt2_dir: Path) -> None:
    """train.group_by_length reaches the SFT engine's training batches: far less padding than shuffled ones."""
    from engine.sft import _trainer_classes
    from tests.conftest import tiny_config, write_jsonl

    rng = random.Random(0)
    filler = [" and so on" * rng.choice([rng.randint(0, 2), rng.randint(6, 9)]) for _ in range(160)]
    rows = [{"text": f"the cafe was nice, visit {i}{more}"} for i, more in enumerate(filler)]
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    causal_cls = _trainer_classes()[0]
    original = causal_cls.training_step

    def padding(grouped: bool) -> float:
        masks: list[Any] = []

        def spy(self: Any, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            masks.append(inputs["attention_mask"].clone())
            return original(self, model, inputs, *args, **kwargs)

        cfg = tiny_config(
            tiny_gpt2_dir,
            data,
            tmp_path / f"runs-{grouped}",
            {
                "engine": "sft",
                "task": "causal-lm",
                "train.group_by_length": grouped,
                "train.num_train_epochs": 1,
                "train.eval_strategy": "no",
            },
            data={"label_field": None},
        )
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(causal_cls, "training_step", spy)
            result, _events = run_events(cfg)
        assert result.status == "finished", result.error
        assert sum(len(m) for m in masks) == 120  # every training row once
        return 1 - sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)

    grouped, shuffled = padding(True), padding(False)
    assert grouped < shuffled / 2, (grouped, shuffled)
