"""LoRA adapters (model.lora), gradient checkpointing and torch.compile, in both engines.

A LoRA run trains adapters on a frozen base, says how much of the model trains, writes its adapter (not the
whole model) into checkpoints and model/, resumes exactly, and predicts as its base with the adapter merged in.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.config import RunConfig, apply_overrides, field_docs, from_dict, validate_field
from engine.errors import ConfigError
from engine.events import (
    CheckpointSaved,
    EpochEnded,
    Evaluated,
    Paused,
    RunStarted,
    Status,
    StepLogged,
    event_from_dict,
    fmt_parameters,
)
from engine.faults import ENV
from engine.runner import Runner
from engine.runs import read_events
from tests.conftest import sentiment_rows, tiny_config, write_jsonl

pytest.importorskip("peft")

REPO = Path(__file__).resolve().parents[2]
ADAPTER_FILES = {"adapter_config.json", "adapter_model.safetensors", "config.json"}


def of(events: list[Any], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def lora_config(model: Path, rows: Path, runs: Path, **sections: Any) -> RunConfig:
    """A tiny classification run with LoRA adapters (r=4) on every attention projection."""
    sections["model"] = {"lora": {"r": 4}, **sections.get("model", {})}
    return tiny_config(model, rows, runs, **sections)


def causal_lora_config(gpt2: Path, rows: Path, runs: Path, engine: str = "loop", **train: Any) -> RunConfig:
    """A tiny GPT-2 causal LM with LoRA: learnable in a few steps, unlike a random encoder's classifier."""
    return tiny_config(
        gpt2,
        rows,
        runs,
        task="causal-lm",
        engine=engine,
        data={"label_field": None},
        model={"lora": {"r": 8}},
        train={"learning_rate": 5e-2, "num_train_epochs": 3, **train},
    )


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path) -> tuple[Path, list[Any]]:
    """A finished two-epoch LoRA classification run of the tiny BERT: (its folder, its events)."""
    root = tmp_path_factory.mktemp("lora-run")
    cfg = lora_config(tiny_bert_dir, write_jsonl(root / "rows.jsonl", sentiment_rows(96)), root / "runs")
    events: list[Any] = []
    result = Runner(cfg, subscribers=[events.append]).run()
    assert result.status == "finished" and result.run_dir is not None, result.error
    return result.run_dir, events


# ---------------------------------------------------------------------------------------------------------
# Config


def test_lora_keys_are_set_by_path_and_null_turns_lora_off() -> None:
    raw = apply_overrides({}, ["model.lora.r=16", "model.lora.target_modules=query, value"])
    cfg = from_dict(raw)
    assert cfg.model.lora is not None
    assert (cfg.model.lora.r, cfg.model.lora.alpha, cfg.model.lora.target_modules) == (16, 16, ["query", "value"])
    assert from_dict(yaml.safe_load(cfg.to_yaml())) == cfg, "the nested block survives a save and a load"
    assert from_dict(apply_overrides(cfg.to_dict(), ["model.lora=null"])).model.lora is None
    assert RunConfig().model.lora is None, "full fine-tuning by default"
    assert validate_field(RunConfig(), "model.lora.dropout", 0.1).model.lora.dropout == 0.1  # type: ignore[union-attr]
    assert {"model.lora", "model.lora.r", "model.lora.modules_to_save"} <= field_docs().keys()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.lora.r=0"], "model.lora.r: expected an integer >= 1, got 0"),
        (["model.lora.dropout=1.5"], "model.lora.dropout: expected a number in [0, 1), got 1.5"),
        (["model.lora=8"], "model.lora: expected a mapping of keys (r, alpha, dropout, target_modules, "),
        (["model.lora.rank=8"], "model.lora.rank: unknown key (known keys: r, alpha, dropout, target_modules, "),
        (["model.lora.target_modules=auto, query"], "model.lora.target_modules: give auto alone or a list"),
        (["model.load_in_4bit=true"], "model.load_in_4bit: a quantized model trains only through adapters"),
        (["model.lora.r=8", "model.load_in_4bit=true", "model.load_in_8bit=true"], "model.load_in_8bit: "),
    ],
)
def test_bad_lora_values_give_one_line_naming_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        from_dict(apply_overrides({}, overrides))
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_a_lora_run_without_peft_installed_names_the_pip_command(
    tmp_path: Path, tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine import adapters

    monkeypatch.setattr(adapters, "installed", lambda package: package != "peft")
    cfg = lora_config(tiny_bert_dir, write_jsonl(tmp_path / "rows.jsonl", sentiment_rows(24)), tmp_path / "runs")
    result = Runner(cfg).run()
    assert result.user_error and result.run_dir is None
    assert result.error == "model.lora: LoRA needs peft, which is not installed; pip install 'tunebench[lora]'"
    assert list((tmp_path / "runs").iterdir()) == []


# ---------------------------------------------------------------------------------------------------------
# Training


def test_lora_run_says_how_much_trains_and_writes_only_its_adapter(lora_run: tuple[Path, list[Any]]) -> None:
    run, events = lora_run
    started = of(events, RunStarted)[0]
    assert started.adapter == "LoRA r=4"
    assert started.trainable_parameters is not None and 0 < started.trainable_parameters < started.num_parameters
    share = 100 * started.trainable_parameters / started.num_parameters
    assert started.parameters_text.startswith(f"LoRA r=4 · {share:.2g} % of 1.0 M parameters trainable")
    assert [e.detail for e in of(events, Status) if e.stage == "adapters"] == [started.parameters_text]
    kept = [e for e in read_events(run / "events.jsonl") if isinstance(e, RunStarted)]
    assert kept[0].adapter == "LoRA r=4", "events.jsonl keeps the new fields"

    names = {p.name for p in (run / "model").iterdir()}
    assert names >= ADAPTER_FILES and "model.safetensors" not in names, "model/ holds the adapter, not the model"
    adapter = json.loads((run / "model" / "adapter_config.json").read_text())
    assert Path(adapter["base_model_name_or_path"]).is_absolute()
    assert {"query", "key", "value"} == set(adapter["target_modules"]), "auto: BERT's attention projections"
    # the classifier trains in full, and so does the pooler the masked-LM checkpoint lacks (else it stays random)
    assert {"classifier", "bert.pooler.dense"} <= set(adapter["modules_to_save"])


def test_runstarted_of_an_older_run_reads_as_full_fine_tuning() -> None:
    line = {
        "type": "RunStarted",
        "time": 1.0,
        **{k: v for k, v in _run_started_fields().items() if k not in ("trainable_parameters", "adapter")},
    }
    event = event_from_dict(line)
    assert isinstance(event, RunStarted)
    assert (event.trainable_parameters, event.adapter, event.parameters_text) == (None, "", "22.7 M parameters")
    assert fmt_parameters(22_700_000, 204_000, "LoRA r=8") == "LoRA r=8 · 0.9 % of 22.7 M parameters trainable"


def _run_started_fields() -> dict[str, Any]:
    from tests.conftest import run_started

    return {k: v for k, v in run_started(num_parameters=22_700_000).to_dict().items() if k not in ("type", "time")}


def test_lora_learns_on_a_tiny_causal_lm(tmp_path: Path, tiny_gpt2_dir: Path) -> None:
    cfg = causal_lora_config(tiny_gpt2_dir, write_jsonl(tmp_path / "rows.jsonl", sentiment_rows(96)), tmp_path)
    events: list[Any] = []
    result = Runner(cfg, subscribers=[events.append]).run()
    assert result.status == "finished", result.error
    losses = [e.train_loss for e in of(events, EpochEnded)]
    evals = of(events, Evaluated)
    assert losses[-1] < losses[0] and evals[-1].eval_loss < evals[0].eval_loss, losses
    assert evals[-1].accuracy > evals[0].accuracy


def test_merged_and_unmerged_adapters_give_the_same_logits(lora_run: tuple[Path, list[Any]]) -> None:
    import torch
    from transformers import AutoTokenizer

    from engine.adapters import attach
    from engine.models import load_model

    model_dir = lora_run[0] / "model"
    labels = {"id2label": {0: "bad", 1: "good"}, "label2id": {"bad": 0, "good": 1}}
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    inputs = tokenizer(["the cafe was lovely", "the bar was rude today"], return_tensors="pt", padding=True)
    adapter = json.loads((model_dir / "adapter_config.json").read_text())

    def base_model() -> Any:
        return load_model("classification", adapter["base_model_name_or_path"], **labels).model

    unmerged = attach(base_model(), model_dir, merge=False).eval()
    merged = attach(base_model(), model_dir, merge=True).eval()
    assert type(merged).__name__ == "BertForSequenceClassification"
    with torch.no_grad():
        a, b = unmerged(**inputs).logits, merged(**inputs).logits
    assert torch.allclose(a, b, atol=1e-5), (a, b)
    lora_b = [p for n, p in unmerged.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b), "the adapter trained (B starts at zero)"


def test_a_full_fine_tune_starts_from_a_lora_run_with_its_adapter_merged_in(
    lora_run: tuple[Path, list[Any]], tiny_bert_dir: Path, tmp_path: Path
) -> None:
    from engine.events import RunStarted

    cfg = tiny_config(lora_run[0], write_jsonl(tmp_path / "rows.jsonl", sentiment_rows(32)), tmp_path / "runs")
    cfg.train.num_train_epochs = 1
    events: list[Any] = []
    result = Runner(cfg, subscribers=[events.append]).run()
    assert result.status == "finished", result.error
    (started,) = of(events, RunStarted)
    assert not started.adapter and started.trainable_parameters is None  # all of them train


def test_lora_model_folder_predicts_as_adapter_on_its_base(
    lora_run: tuple[Path, list[Any]], tiny_bert_dir: Path
) -> None:
    from engine.cli import main
    from engine.predict import clear_cache, compare, describe, load_predictor

    run = lora_run[0]
    clear_cache()
    tuned = load_predictor(str(run))
    assert tuned.task == "classification" and tuned.head_warning is None
    result = tuned.predict("the cafe was lovely")
    assert result.description == describe(str(run)) == f"adapter on {tiny_bert_dir.name}"
    assert {s.label for s in result.labels} == {"bad", "good"}
    pair = compare("the cafe was lovely", str(run))
    assert pair.tuned == result and pair.base.untrained_head
    assert main(["predict", "--model", str(run), "--json", "the cafe was lovely"]) == 0


def test_stopped_lora_run_checkpoints_its_adapter_and_resumes_to_the_end(tmp_path: Path, tiny_bert_dir: Path) -> None:
    rows = write_jsonl(tmp_path / "rows.jsonl", sentiment_rows(64))  # 48 to train on: 6 steps an epoch
    cfg = lora_config(tiny_bert_dir, rows, tmp_path / "runs")
    events: list[Any] = []
    runner = Runner(cfg, subscribers=[events.append])
    paused = threading.Event()

    def pause_then_stop(event: Any) -> None:
        if isinstance(event, StepLogged) and event.step == 2:
            runner.pause()
        elif isinstance(event, Paused):
            paused.set()
        elif isinstance(event, StepLogged) and event.step == 8:
            runner.stop()

    runner.subscribe(pause_then_stop)
    runner.start()
    assert paused.wait(60), "the run never paused"
    runner.resume()
    stopped = runner.join(120)
    assert stopped is not None and stopped.status == "stopped" and stopped.run_dir is not None, stopped
    (saved,) = of(events, CheckpointSaved)
    names = {p.name for p in Path(saved.path).iterdir()}
    assert names >= ADAPTER_FILES and "model.safetensors" not in names

    more: list[Any] = []
    resumed = Runner.from_run_dir(stopped.run_dir, subscribers=[more.append]).run()
    assert resumed.status == "finished", resumed.error
    start = of(more, RunStarted)[0]
    assert start.start_step == saved.step and start.adapter == "LoRA r=4"
    assert [e.step for e in of(more, StepLogged)][-1] == start.total_steps


def _train_until_killed(cfg: RunConfig, point: str) -> None:
    os.environ[ENV] = point
    Runner(cfg).run()
    os._exit(0)  # not killed: the parent reports the point as never reached


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["loop", "sft"])
def test_lora_run_killed_mid_epoch_resumes_to_the_uninterrupted_result(
    engine: str, tmp_path: Path, tiny_bert_dir: Path, tiny_gpt2_dir: Path
) -> None:
    import torch
    from safetensors.torch import load_file

    rows = write_jsonl(tmp_path / "rows.jsonl", sentiment_rows(96))  # 72 to train on: 9 steps an epoch
    every_3 = {"save_strategy": "steps", "save_steps": 3, "torch_threads": 1, "num_train_epochs": 2}
    if engine == "loop":
        cfg = lora_config(tiny_bert_dir, rows, tmp_path / "straight", train=every_3)
    else:
        cfg = causal_lora_config(tiny_gpt2_dir, rows, tmp_path / "straight", engine="sft", **every_3)
    threads = torch.get_num_threads()
    straight = Runner(cfg).run()
    assert straight.status == "finished" and straight.run_dir is not None, straight.error

    killed_cfg = from_dict({**cfg.to_dict(), "output": {"runs_dir": str(tmp_path / "killed")}})
    child = multiprocessing.get_context("fork").Process(target=_train_until_killed, args=(killed_cfg, "step@7"))
    child.start()
    child.join(timeout=300)
    assert child.exitcode == -signal.SIGKILL, f"never reached step 7 (exit code {child.exitcode})"
    (run,) = (tmp_path / "killed").iterdir()
    events: list[Any] = []
    resumed = Runner.from_run_dir(run, subscribers=[events.append]).run()
    torch.set_num_threads(threads)
    assert resumed.status == "finished", resumed.error
    assert of(events, RunStarted)[0].start_step == 6

    want = load_file(straight.run_dir / "model" / "adapter_model.safetensors")
    got = load_file(run / "model" / "adapter_model.safetensors")
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want), "the resumed run trained another adapter"
    evals = [
        [e for e in read_events(r / "events.jsonl") if isinstance(e, Evaluated)][-1] for r in (straight.run_dir, run)
    ]
    assert evals[0].eval_loss == evals[1].eval_loss and evals[0].step == evals[1].step


# ---------------------------------------------------------------------------------------------------------
# Gradient checkpointing and torch.compile


def test_gradient_checkpointing_trains_the_same_weights_in_the_loop_engine(
    tmp_path: Path, tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import transformers.modeling_utils
    from safetensors.torch import load_file

    recomputed: list[int] = []
    checkpoint = transformers.modeling_utils.checkpoint

    def counting(*args: Any, **kwargs: Any) -> Any:
        recomputed.append(1)
        return checkpoint(*args, **kwargs)

    monkeypatch.setattr(transformers.modeling_utils, "checkpoint", counting)
    rows = write_jsonl(tmp_path / "rows.jsonl", sentiment_rows(48))
    weights = []
    for on in (False, True):
        cfg = tiny_config(
            tiny_bert_dir, rows, tmp_path / str(on), train={"num_train_epochs": 1, "gradient_checkpointing": on}
        )
        events: list[Any] = []
        result = Runner(cfg, subscribers=[events.append]).run()
        assert result.status == "finished" and result.run_dir is not None, result.error
        weights.append(load_file(result.run_dir / "model" / "model.safetensors"))
        assert bool(recomputed) == on, "each layer goes through torch's checkpoint only when asked"
        assert not [e.message for e in events if e.type == "LogMessage" and e.level == "warning"]
    plain, checkpointed = weights
    worst = max(float((plain[k] - checkpointed[k]).abs().max()) for k in plain)
    assert worst < 1e-5, f"recomputing activations changed the weights by {worst}"


def test_gradient_checkpointing_and_lora_train_in_the_sft_engine(tmp_path: Path, tiny_gpt2_dir: Path) -> None:
    rows = write_jsonl(tmp_path / "rows.jsonl", sentiment_rows(48))
    cfg = causal_lora_config(tiny_gpt2_dir, rows, tmp_path, engine="sft", gradient_checkpointing=True)
    events: list[Any] = []
    result = Runner(cfg, subscribers=[events.append]).run()
    assert result.status == "finished" and result.run_dir is not None, result.error
    assert of(events, RunStarted)[0].adapter == "LoRA r=8"
    assert not [e for e in events if e.type == "LogMessage" and e.level == "warning"]
    assert {p.name for p in (result.run_dir / "model").iterdir()} >= ADAPTER_FILES


def test_sft_engine_passes_gradient_checkpointing_and_torch_compile_to_its_training_arguments(
    tmp_path: Path, tiny_gpt2_dir: Path
) -> None:
    import torch

    from engine.runs import RunDir
    from engine.sft import sft_config

    rows = write_jsonl(tmp_path / "rows.jsonl", sentiment_rows(8))
    cfg = causal_lora_config(
        tiny_gpt2_dir, rows, tmp_path, engine="sft", gradient_checkpointing=True, torch_compile=True
    )
    args = sft_config(cfg, RunDir(tmp_path / "run"), torch.device("cpu"), "fp32", has_eval=True)
    assert args.torch_compile and args.gradient_checkpointing
    assert args.gradient_checkpointing_kwargs == {"use_reentrant": False}
    off = sft_config(
        causal_lora_config(tiny_gpt2_dir, rows, tmp_path, engine="sft"),
        RunDir(tmp_path / "r"),
        torch.device("cpu"),
        "fp32",
        True,
    )
    assert not off.torch_compile and not off.gradient_checkpointing


def test_torch_compile_where_the_platform_cannot_compile_is_one_line(tmp_path: Path, tiny_bert_dir: Path) -> None:
    """No C++ compiler for torch's CPU backend: the run ends before it starts, in one line, with no folder."""
    rows = write_jsonl(tmp_path / "rows.jsonl", sentiment_rows(24))
    cfg = tiny_config(tiny_bert_dir, rows, tmp_path / "runs", train={"torch_compile": True})
    config = tmp_path / "config.yaml"
    config.write_text(cfg.to_yaml(), encoding="utf-8")
    env = {**os.environ, "CXX": "/nonexistent/g++", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "run", str(config)], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.splitlines() == [
        "tunebench: error: train.torch_compile: torch.compile does not work on this machine (InvalidCxxCompiler: "
        "No working C++ compiler found in torch._inductor.config.cpp.cxx: (None, '/nonexistent/g++')); set it to false"
    ]
    assert list((tmp_path / "runs").iterdir()) == []


@pytest.mark.slow
def test_torch_compile_trains_on_this_cpu_or_says_why_not_in_one_line(tmp_path: Path, tiny_bert_dir: Path) -> None:
    """Compiled, the run trains through the compiled graph (its dropout draws other random numbers, so the weights
    are not the eager run's)."""
    from torch._dynamo.utils import counters

    rows = write_jsonl(tmp_path / "rows.jsonl", sentiment_rows(32))
    cfg = tiny_config(tiny_bert_dir, rows, tmp_path / "runs", train={"num_train_epochs": 1, "torch_compile": True})
    counters.clear()
    events: list[Any] = []
    result = Runner(cfg, subscribers=[events.append]).run()
    if result.status == "failed":
        assert result.user_error and result.error is not None
        assert result.error.startswith("train.torch_compile: torch.compile does not work on this machine (")
        return
    assert result.status == "finished", result.error
    assert counters["stats"]["unique_graphs"] >= 1, "nothing was compiled"
    assert all(e.loss == e.loss for e in of(events, StepLogged))


def test_lora_on_an_encoder_without_an_mlm_head_trains_the_new_head_but_not_a_copy_of_the_embeddings(
    tmp_path: Path, tiny_bert_dir: Path
) -> None:
    """MiniLM has no MLM head: its transform is new and trains; the decoder shares the input embeddings, and a
    copy of it to train would be most of a small model (the adapter of a tied head stays small)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from engine.adapters import fresh_modules, left_as_initialized
    from engine.models import load_model
    from tests.conftest import TINY_BERT

    encoder = tmp_path / "encoder"
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    BertModel(BertConfig(vocab_size=len(tokenizer), **TINY_BERT)).save_pretrained(encoder)
    tokenizer.save_pretrained(encoder)
    loaded = load_model("masked-lm", str(encoder))
    assert "cls.predictions.decoder.bias" in loaded.newly_initialized
    assert fresh_modules(loaded.model, loaded.newly_initialized) == [
        "cls.predictions.transform.LayerNorm",
        "cls.predictions.transform.dense",
    ]
    assert set(left_as_initialized(loaded.model, loaded.newly_initialized)) == {
        "cls.predictions.bias",
        "cls.predictions.decoder.bias",
    }
