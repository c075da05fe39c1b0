"""Shared fixtures: tiny models built from a config with the bundled MiniLM tokenizer, and toy datasets.

Everything here runs offline and in seconds on two CPU cores.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY_BERT: dict[str, Any] = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 128,
}


@pytest.fixture(scope="session", autouse=True)
def fp32_on_every_cpu() -> Iterator[None]:
    """precision: auto takes the CPU as one without native bf16 (it would be bf16 on one with it), so that a
    test's numbers do not depend on the machine; tests/engine/test_precision.py covers bf16 on the CPU."""
    from engine import models

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(models, "cpu_has_native_bf16", lambda: False)
        yield


def _minilm_tokenizer() -> Any:
    from engine.models import load_tokenizer

    return load_tokenizer("minilm")


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT masked LM (random weights, MLM head included) and the MiniLM tokenizer, saved to a folder.

    Load it for any task: the sequence-classification head is then new, the MLM head is not.
    """
    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    tok = _minilm_tokenizer()
    path = tmp_path_factory.mktemp("tiny-bert")
    BertForMaskedLM(BertConfig(vocab_size=tok.vocab_size, **TINY_BERT)).save_pretrained(path)
    tok.model_max_length = TINY_BERT["max_position_embeddings"]
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 causal LM with the MiniLM WordPiece tokenizer ([SEP] doubles as end-of-text)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tok = _minilm_tokenizer()
    tok.eos_token = "[SEP]"
    tok.bos_token = "[CLS]"
    tok.model_max_length = 128
    path = tmp_path_factory.mktemp("tiny-gpt2")
    cfg = GPT2Config(
        vocab_size=tok.vocab_size,
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=128,
        bos_token_id=tok.cls_token_id,
        eos_token_id=tok.sep_token_id,
        pad_token_id=tok.pad_token_id,
    )
    GPT2LMHeadModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return path


POSITIVE = ["great", "wonderful", "excellent", "lovely", "fantastic", "friendly"]
NEGATIVE = ["awful", "terrible", "horrible", "rude", "dirty", "cold"]


def sentiment_rows(n: int, seed: int = 0, labels: tuple[Any, Any] = ("bad", "good")) -> list[dict[str, Any]]:
    """Short reviews whose label is decided by one sentiment word: learnable by a tiny model in a few steps."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        good = rng.random() < 0.5
        word = rng.choice(POSITIVE if good else NEGATIVE)
        place = rng.choice(["cafe", "shop", "bakery", "diner", "bar"])
        rows.append({"text": f"the {place} was {word} today, visit {i}", "label": labels[int(good)]})
    return rows


@pytest.fixture
def sentiment_file(tmp_path: Path) -> Path:
    """A single-split JSONL file of 120 string-labelled rows (use data.eval_fraction)."""
    return write_jsonl(tmp_path / "reviews.jsonl", sentiment_rows(120))


def tiny_config(
    model_dir: Path, rows: Path, runs: Path, overrides: dict[str, Any] | None = None, **sections: Any
) -> Any:
    """A validated RunConfig for a tiny, fast run of ``model_dir`` on the JSONL file ``rows``; sections merge
    into the defaults, overrides are ``{"train.seed": 3}``."""
    from engine.config import from_dict

    raw: dict[str, Any] = {
        "task": "classification",
        "engine": "loop",
        "model": {"name_or_path": str(model_dir)},
        "data": {"source": str(rows), "eval_split": None, "eval_fraction": 0.25, "max_length": 32},
        "train": {
            "learning_rate": 1e-2,
            "num_train_epochs": 2,
            "per_device_train_batch_size": 8,
            "per_device_eval_batch_size": 16,
            "logging_steps": 1,
            "device": "cpu",
            # fp32 on every CPU, in the test's process and in the runs it starts (fp32_on_every_cpu reaches
            # only this process): a test compares numbers across them.
            "precision": "fp32",
            "save_strategy": "no",
        },
        "output": {"runs_dir": str(runs)},
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values} if isinstance(values, dict) else values
    for key, value in (overrides or {}).items():
        section, _, field = key.partition(".")
        if field:
            raw.setdefault(section, {})[field] = value
        else:
            raw[section] = value
    return from_dict(raw)


@pytest.fixture
def make_config(tmp_path: Path, tiny_bert_dir: Path) -> Callable[..., Any]:
    """Build a validated RunConfig for a tiny, fast run (see ``tiny_config``) on 160 rows in ``tmp_path``."""

    def make(overrides: dict[str, Any] | None = None, **sections: Any) -> Any:
        data = write_jsonl(tmp_path / "data.jsonl", sentiment_rows(160))
        return tiny_config(tiny_bert_dir, data, tmp_path / "runs", overrides, **sections)

    return make


def run_started(**fields: Any) -> Any:
    """A RunStarted event for tests that feed events to a viewer: a small CPU classification run, ``fields`` over
    the defaults."""
    from engine.events import RunStarted

    defaults: dict[str, Any] = {
        "run_dir": "runs/r",
        "run_name": "r",
        "task": "classification",
        "engine": "loop",
        "model": "m",
        "device": "cpu",
        "precision": "fp32",
        "num_parameters": 1000,
        "num_train_samples": 40,
        "num_eval_samples": 8,
        "num_epochs": 2,
        "total_steps": 10,
        "batch_size": 8,
    }
    return RunStarted(**{**defaults, **fields})


@pytest.fixture
def in_run_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """``in_run_process(code)`` runs ``code`` at the start of every Python process this test starts, such as the
    process a ``tunebench run`` trains in (engine.detached), where a monkeypatch of this process cannot reach:
    it becomes a ``sitecustomize`` module on PYTHONPATH."""

    def patch(code: str) -> None:
        folder = tmp_path / "in-run-process"
        folder.mkdir(exist_ok=True)
        (folder / "sitecustomize.py").write_text(code, encoding="utf-8")
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])))

    return patch


def hold_run_at(step: int, marker: Path, release: Path | None = None) -> str:
    """Code for ``in_run_process``: the run's worker touches ``marker`` at its logged step ``step``, then waits
    there until ``release`` exists (or, without one, until a stop is requested): whatever a test does next lands
    mid-run, with no sleeps."""
    wait = (
        f"while not pathlib.Path({str(release)!r}).exists():\n                time.sleep(0.05)"
        if release is not None
        else "self.control.stop.wait()"
    )
    return f"""
import pathlib, time
import engine.runner

real_init = engine.runner.Runner.__init__

def init(self, *args, **kwargs):
    real_init(self, *args, **kwargs)

    def hold(event):
        if event.type == "StepLogged" and event.step == {step}:
            pathlib.Path({str(marker)!r}).touch()
            {wait}

    self.subscribe(hold)

engine.runner.Runner.__init__ = init
"""
