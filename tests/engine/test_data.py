"""Datasets: sources, column mapping, label encoding, subsampling and batches."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import DataConfig
from engine.data import bundled_samples, encode_labels, load_source, load_splits, prepare
from engine.errors import DataError
from engine.models import load_tokenizer
from tests.conftest import sentiment_rows, write_jsonl


def test_bundled_samples_are_found_with_their_splits() -> None:
    assert {"reviews-sample", "movies-sample"} <= set(bundled_samples())
    reviews = load_source("reviews-sample")
    assert set(reviews) == {"train", "test"}
    assert len(reviews["train"]) >= 500 and len(reviews["test"]) >= 100
    assert sorted(set(reviews["train"]["label"])) == [1, 2, 3, 4, 5]


def test_string_labels_are_encoded_in_order_with_names_kept(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "d.jsonl", sentiment_rows(40, labels=("neg", "pos")))
    train, evals = load_splits(DataConfig(source=str(src), eval_split=None, eval_fraction=0.25), needs_labels=True)
    train, evals, names = encode_labels(train, evals, "label")
    assert names == ["neg", "pos"]
    for row in train:
        assert names[row["labels"]] == row["label"]


def test_sparse_int_labels_become_contiguous_ids(tmp_path: Path) -> None:
    rows = [{"text": f"text {i}", "stars": s} for i, s in enumerate([10, 30, 20, 30, 10, 20] * 4)]
    src = write_jsonl(tmp_path / "d.jsonl", rows)
    cfg = DataConfig(source=str(src), label_field="stars", eval_split=None)
    train, _ = load_splits(cfg, needs_labels=True)
    train, _, names = encode_labels(train, None, "stars")
    assert names == ["10", "20", "30"]
    assert sorted(set(train["labels"])) == [0, 1, 2]
    assert all(names[r["labels"]] == str(r["stars"]) for r in train)


def test_any_column_names_can_be_mapped(tmp_path: Path) -> None:
    rows = [{"review": r["text"], "verdict": r["label"]} for r in sentiment_rows(20)]
    src = write_jsonl(tmp_path / "d.jsonl", rows)
    cfg = DataConfig(source=str(src), text_field="review", label_field="verdict", eval_split=None)
    data = prepare(cfg, load_tokenizer("minilm"), "classification")
    assert set(data.train.column_names) >= {"input_ids", "attention_mask", "labels"}
    assert "review" not in data.train.column_names


def test_missing_column_lists_the_columns_that_exist(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "d.jsonl", sentiment_rows(10))
    with pytest.raises(DataError) as info:
        load_splits(DataConfig(source=str(src), text_field="body", eval_split=None), needs_labels=True)
    assert str(info.value) == 'data.text_field: column "body" not in split train (columns: text, label)'


def test_missing_eval_split_suggests_eval_fraction(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "d.jsonl", sentiment_rows(10))
    with pytest.raises(DataError, match=r"data\.eval_split: split \"test\" not in .*eval_fraction"):
        load_splits(DataConfig(source=str(src)), needs_labels=True)


def test_subsample_is_seeded_and_sized(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "d.jsonl", sentiment_rows(50))
    cfg = DataConfig(source=str(src), eval_split=None, train_size=10, shuffle_seed=7)
    first, _ = load_splits(cfg, needs_labels=True)
    again, _ = load_splits(cfg, needs_labels=True)
    other, _ = load_splits(DataConfig(**{**cfg.__dict__, "shuffle_seed": 8}), needs_labels=True)
    assert len(first) == 10
    assert first["text"] == again["text"]
    assert first["text"] != other["text"]


def test_subsample_larger_than_the_data_uses_all_rows(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "d.jsonl", sentiment_rows(12))
    train, _ = load_splits(DataConfig(source=str(src), eval_split=None, train_size=1000), needs_labels=True)
    assert len(train) == 12


def test_tokenized_samples_are_truncated_and_padded_per_batch(tmp_path: Path) -> None:
    rows = [{"text": "word " * n, "label": n % 2} for n in (3, 50, 5, 7)]
    src = write_jsonl(tmp_path / "d.jsonl", rows)
    cfg = DataConfig(source=str(src), eval_split=None, max_length=16)
    data = prepare(cfg, load_tokenizer("minilm"), "classification")
    lengths = sorted(len(ids) for ids in data.train["input_ids"])
    assert lengths == [5, 7, 9, 16]  # [CLS] words [SEP], the long one cut at max_length


def test_one_class_only_is_a_user_error(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "d.jsonl", [{"text": f"t{i}", "label": "same"} for i in range(5)])
    train, _ = load_splits(DataConfig(source=str(src), eval_split=None), needs_labels=True)
    with pytest.raises(DataError, match="has only one class"):
        encode_labels(train, None, "label")
