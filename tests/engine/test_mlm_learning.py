"""The masked-LM SFT path teaches a model to fill masks, not to copy its input.

A model that copied its input would answer [MASK] (or whatever token sits at the position); a model that
learned the pattern answers the word that belongs there, also in sentences it never saw.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.predict import FillMaskResult, load_predictor
from engine.runner import Runner

pytestmark = pytest.mark.slow  # trains until the model learns

PLACES = ["cafe", "shop", "bakery", "diner", "bar", "hotel", "museum", "park"]
ADJECTIVES = ["great", "lovely", "awful", "rude", "quiet", "busy", "clean", "dirty"]
#: Word positions of the pattern "the {place} was {adjective} today ." that do not change between sentences.
FIXED = (0, 2, 4, 5)


def sentence(place: str, adjective: str) -> list[str]:
    return ["the", place, "was", adjective, "today", "."]


def split_pairs(seed: int = 0) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(train, held-out) place/adjective pairs; no held-out sentence appears in training."""
    pairs = [(p, a) for p in PLACES for a in ADJECTIVES]
    random.Random(seed).shuffle(pairs)
    return pairs[12:], pairs[:12]


def top1_accuracy(model: str, pairs: list[tuple[str, str]]) -> float:
    """Share of masked pattern words, in the given sentences, that are the model's first guess."""
    predictor = load_predictor(model, device="cpu")
    hits = total = 0
    for place, adjective in pairs:
        words = sentence(place, adjective)
        for k in FIXED:
            masked = " ".join("[MASK]" if i == k else w for i, w in enumerate(words))
            result = predictor.fill_mask(masked, top_k=1)
            assert isinstance(result, FillMaskResult)
            hits += result.masks[0][0].token_str == words[k]
            total += 1
    return hits / total


def test_masked_lm_sft_learns_to_fill_held_out_masks(
    make_config: Callable[..., Any], tmp_path: Path, tiny_bert_dir: Path
) -> None:
    train_pairs, held_out = split_pairs()
    rng = random.Random(1)
    source = tmp_path / "pattern.jsonl"
    rows = [{"text": " ".join(sentence(*rng.choice(train_pairs)))} for _ in range(320)]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    cfg = make_config(
        {"task": "masked-lm", "engine": "sft", "data.label_field": None},
        data={"source": str(source), "eval_fraction": 0.1, "max_length": 16},
        train={
            "num_train_epochs": 4,
            "learning_rate": 1e-2,
            "per_device_train_batch_size": 16,
            "logging_steps": 20,
            "warmup_ratio": 0.05,
        },
    )
    result = Runner(cfg).run()
    assert result.status == "finished", result.error

    untrained = top1_accuracy(str(tiny_bert_dir), held_out)
    trained = top1_accuracy(str(result.run_dir), held_out)
    assert untrained <= 0.1
    assert trained >= 0.9, f"top-1 on held-out masks: {trained:.2f} after training, {untrained:.2f} before"
