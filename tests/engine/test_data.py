"""Datasets: sources, column mapping, label encoding, subsampling and batches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.config import DataConfig
from engine.data import bundled_samples, encode_labels, load_source, load_splits, prepare
from engine.errors import DataError
from engine.models import load_tokenizer
from engine.splits import describe_eval
from tests.conftest import sentiment_rows, write_jsonl


def test_bundled_samples_are_found_with_their_splits() -> None:
    assert {"reviews-sample", "movies-sample"} <= set(bundled_samples())
    reviews = load_source("reviews-sample")
    assert set(reviews) == {"train", "test"}
    assert len(reviews["train"]) >= 500 and len(reviews["test"]) >= 100
    assert sorted(set(reviews["train"]["label"])) == [1, 2, 3, 4, 5]


def test_string_labels_are_encoded_in_order_with_names_kept(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "d.jsonl", sentiment_rows(40, labels=("neg", "pos")))
    splits = load_splits(DataConfig(source=str(src), eval_split=None, eval_fraction=0.25), needs_labels=True)
    train, _, names = encode_labels(splits.train, splits.eval, "label")
    assert names == ["neg", "pos"]
    for row in train:
        assert names[row["labels"]] == row["label"]


def test_sparse_int_labels_become_contiguous_ids(tmp_path: Path) -> None:
    rows = [{"text": f"text {i}", "stars": s} for i, s in enumerate([10, 30, 20, 30, 10, 20] * 4)]
    src = write_jsonl(tmp_path / "d.jsonl", rows)
    cfg = DataConfig(source=str(src), label_field="stars", eval_split=None)
    train = load_splits(cfg, needs_labels=True).train
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


def test_a_missing_named_eval_split_suggests_auto(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "d.jsonl", sentiment_rows(10))
    with pytest.raises(DataError, match=r"data\.eval_split: split \"test\" not in .*eval_split: auto"):
        load_splits(DataConfig(source=str(src), eval_split="test"), needs_labels=True)


def _folder(tmp_path: Path, *splits: str) -> Path:
    for n, split in enumerate(splits):
        write_jsonl(tmp_path / "src" / f"{split}.jsonl", sentiment_rows(40 + 10 * n, seed=n))
    return tmp_path / "src"


@pytest.mark.parametrize(
    ("splits", "chosen", "rows"),
    [
        (("train", "validation", "test"), "validation", 50),
        (("train", "test"), "test", 50),
    ],
)
def test_auto_eval_takes_validation_else_test(tmp_path: Path, splits: tuple[str, ...], chosen: str, rows: int) -> None:
    cfg = DataConfig(source=str(_folder(tmp_path, *splits)))
    got = load_splits(cfg, needs_labels=True)
    assert got.eval_choice.split == chosen
    assert got.eval is not None and len(got.eval) == rows and len(got.train) == 40
    assert got.eval_set == f"{chosen} split ({rows} rows)"


def test_auto_eval_holds_out_a_tenth_of_a_single_file(tmp_path: Path) -> None:
    """The most common dataset a user brings: one file, nothing else set."""
    src = write_jsonl(tmp_path / "reviews.csv.jsonl", sentiment_rows(120))
    got = load_splits(DataConfig(source=str(src)), needs_labels=True)
    assert got.eval is not None and (len(got.train), len(got.eval)) == (108, 12)
    assert got.eval_set == "10% of train, stratified by label (12 rows)"
    assert not set(got.train["text"]) & set(got.eval["text"])


def test_eval_fraction_alone_holds_out_that_share(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "d.jsonl", sentiment_rows(40))
    got = load_splits(DataConfig(source=str(src), eval_fraction=0.25), needs_labels=True)
    assert got.eval is not None and (len(got.train), len(got.eval)) == (30, 10)


def test_no_eval_split_and_no_fraction_means_no_eval(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "d.jsonl", sentiment_rows(40))
    got = load_splits(DataConfig(source=str(src), eval_split=None, eval_fraction=None), needs_labels=True)
    assert got.eval is None and len(got.train) == 40
    assert got.eval_set.startswith("none")


def test_held_out_eval_keeps_each_class_share_and_is_seeded(tmp_path: Path) -> None:
    rows = [{"text": f"review {i}", "label": "rare" if i % 10 == 0 else "common"} for i in range(100)]
    src = write_jsonl(tmp_path / "d.jsonl", rows)
    cfg = DataConfig(source=str(src), eval_fraction=0.2)
    got = load_splits(cfg, needs_labels=True)
    assert got.eval is not None
    assert sorted(got.eval["label"]).count("rare") == 2 and len(got.eval) == 20  # 10 rare rows, a fifth of them
    assert sorted([*got.train["text"], *got.eval["text"]]) == sorted(r["text"] for r in rows)
    again = load_splits(cfg, needs_labels=True)
    other = load_splits(DataConfig(source=str(src), eval_fraction=0.2, shuffle_seed=3), needs_labels=True)
    assert again.eval is not None and other.eval is not None
    assert sorted(again.eval["text"]) == sorted(got.eval["text"]) != sorted(other.eval["text"])


def test_masked_lm_hold_out_is_not_stratified(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "d.jsonl", [{"text": f"line {i}"} for i in range(30)])
    got = load_splits(DataConfig(source=str(src), label_field=None), needs_labels=False)
    assert got.eval is not None and len(got.eval) == 3
    assert got.eval_set == "10% of train (3 rows)"


def test_a_share_that_leaves_no_training_row_is_refused(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "d.jsonl", sentiment_rows(3))
    with pytest.raises(DataError, match=r"^data\.eval_fraction: 0\.9 of 3 training rows leaves none"):
        load_splits(DataConfig(source=str(src), eval_fraction=0.9), needs_labels=True)
    one = write_jsonl(tmp_path / "one.jsonl", [{"text": "a single review"}])  # no share leaves a row of one
    with pytest.raises(DataError) as refused:
        load_splits(DataConfig(source=str(one), label_field=None), needs_labels=False)
    assert str(refused.value) == (
        "data.eval_fraction: 0.1 of 1 training row leaves none to train on; add rows, or data.eval_fraction: null "
        "to train without an eval set"
    )


@pytest.mark.parametrize("splits", [("train",), ("train", "test"), ("train", "validation", "test")])
def test_the_data_panel_line_matches_what_a_run_uses(tmp_path: Path, splits: tuple[str, ...]) -> None:
    cfg = DataConfig(source=str(_folder(tmp_path, *splits)), eval_size=45)
    sizes = {name: len(ds) for name, ds in load_source(cfg.source).items()}
    assert describe_eval(cfg, sizes, needs_labels=True) == load_splits(cfg, needs_labels=True).eval_set


def test_subsample_is_seeded_and_sized(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "d.jsonl", sentiment_rows(50))
    cfg = DataConfig(source=str(src), eval_split=None, train_size=10, shuffle_seed=7)
    first = load_splits(cfg, needs_labels=True).train
    again = load_splits(cfg, needs_labels=True).train
    other = load_splits(DataConfig(**{**cfg.__dict__, "shuffle_seed": 8}), needs_labels=True).train
    assert len(first) == 10
    assert first["text"] == again["text"]
    assert first["text"] != other["text"]


def test_subsample_larger_than_the_data_uses_all_rows(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "d.jsonl", sentiment_rows(12))
    train = load_splits(DataConfig(source=str(src), eval_fraction=None, train_size=1000), needs_labels=True).train
    assert len(train) == 12


def test_tokenized_samples_are_truncated_and_padded_per_batch(tmp_path: Path) -> None:
    rows = [{"text": "word " * n, "label": n % 2} for n in (3, 50, 5, 7)]
    src = write_jsonl(tmp_path / "d.jsonl", rows)
    cfg = DataConfig(source=str(src), eval_fraction=None, max_length=16)
    data = prepare(cfg, load_tokenizer("minilm"), "classification")
    lengths = sorted(len(ids) for ids in data.train["input_ids"])
    assert lengths == [5, 7, 9, 16]  # [CLS] words [SEP], the long one cut at max_length


def test_one_class_only_is_a_user_error(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "d.jsonl", [{"text": f"t{i}", "label": "same"} for i in range(5)])
    train = load_splits(DataConfig(source=str(src), eval_split=None), needs_labels=True).train
    with pytest.raises(DataError, match="has only one class"):
        encode_labels(train, None, "label")


def test_tokenizing_says_how_far_it_got_in_real_percentages(tmp_path: Path) -> None:
    from engine.data import RowProgress, tokenize
    from engine.events import Status

    src = write_jsonl(tmp_path / "d.jsonl", sentiment_rows(2500))
    ds = load_source(str(src))["train"]
    said: list[Status] = []
    tokenize(ds, load_tokenizer("minilm"), "text", 16, task="masked-lm", progress=RowProgress(said.append, "t", 2500))
    # datasets maps 1,000 rows at a time
    assert [s.detail for s in said] == [
        "40% (1,000 of 2,500 rows)",
        "80% (2,000 of 2,500 rows)",
        "100% (2,500 of 2,500 rows)",
    ]


def test_counting_rows_keeps_tokenized_data_cached_between_runs(tmp_path: Path) -> None:
    """The map's fingerprint must not hash the run's emitter: a second run reuses the first one's tokens."""
    from engine.data import RowProgress, tokenize

    src = write_jsonl(tmp_path / "d.jsonl", sentiment_rows(50))
    ds = load_source(str(src))["train"]
    tok = load_tokenizer("minilm")

    class Emitter:
        """Like a run's emitter, which datasets fails to hash (it warns and picks a random fingerprint)."""

        def __reduce__(self) -> Any:
            raise TypeError("cannot pickle an emitter")

        def __call__(self, event: Any) -> None:
            pass

    say = Emitter()

    first, second = (
        tokenize(ds, tok, "text", 16, task="masked-lm", progress=RowProgress(say, "t", 50)) for _ in range(2)
    )
    assert first.cache_files and first.cache_files == second.cache_files


def test_list_labels_in_a_held_out_split_are_a_clear_error(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "d.jsonl", [{"text": f"t{i}", "label": [i % 2]} for i in range(20)])
    with pytest.raises(DataError, match=r'^data\.label_field: column "label" holds list values such as \[0\]'):
        load_splits(DataConfig(source=str(src)), needs_labels=True)


def _padding_share(order: list[int], lengths: list[int], batch: int) -> float:
    """Share of a batch's tokens that are padding, over batches of ``batch`` taken in ``order``."""
    padded = real = 0
    for start in range(0, len(order), batch):
        sizes = [lengths[i] for i in order[start : start + batch]]
        padded += max(sizes) * len(sizes)
        real += sum(sizes)
    return 1 - real / padded


def test_length_grouped_order_is_seeded_holds_every_sample_once_and_pads_less() -> None:
    import random

    import datasets
    import torch

    from engine.data import length_grouped_sampler, sample_lengths

    rng = random.Random(0)
    lengths = [rng.choice([rng.randint(3, 12), rng.randint(40, 120)]) for _ in range(400)]
    ds = datasets.Dataset.from_dict({"input_ids": [[7] * n for n in lengths]}).shuffle(seed=1)
    ds.set_format("torch")  # as engine.data.tokenize leaves it
    assert sample_lengths(ds) == [len(ids) for ids in ds.with_format(None)["input_ids"]]

    def order(seed: int) -> list[int]:
        return list(length_grouped_sampler(ds, 8, torch.Generator().manual_seed(seed)))

    first = order(42)
    assert sorted(first) == list(range(400)), "each sample once an epoch"
    assert order(42) == first and order(43) != first, "the generator decides the order"
    shuffled = torch.randperm(400, generator=torch.Generator().manual_seed(42)).tolist()
    grouped, plain = _padding_share(first, sample_lengths(ds), 8), _padding_share(shuffled, sample_lengths(ds), 8)
    assert grouped < plain / 4, (grouped, plain)
    # Grouped, not sorted: the long and the short batches take turns through the epoch.
    longest = [max(sample_lengths(ds)[i] for i in first[s : s + 8]) for s in range(0, 400, 8)]
    assert longest != sorted(longest, reverse=True)


@pytest.mark.parametrize(
    "text, header_only",
    [
        (b"text,label\n", True),
        (b"\xef\xbb\xbftext,label\r\n\r\n\n", True),
        (b"text,label\rgood,pos\rbad,neg\r", False),
        (b"text,label\r\ngood,pos\r\n", False),
    ],
)
def test_a_csv_of_its_header_alone_is_refused_whatever_its_line_endings(
    tmp_path: Path, text: bytes, header_only: bool
) -> None:
    from engine.data import check_source

    for suffix in (".csv", ".tsv"):
        path = tmp_path / f"rows{suffix}"
        path.write_bytes(text.replace(b",", b"\t") if suffix == ".tsv" else text)
        if header_only:
            with pytest.raises(DataError, match="has a header line and no rows"):
                check_source(str(path))
        else:
            check_source(str(path))


def test_an_eval_set_of_one_row_says_row() -> None:
    from engine.splits import EvalChoice

    assert EvalChoice(fraction=0.1).describe(1) == "10% of train (1 row)"
    assert EvalChoice(split="test").describe(2) == "test split (2 rows)"


def test_a_file_in_a_folder_named_like_a_glob_pattern_loads(tmp_path: Path) -> None:
    """datasets reads data_files as patterns, where "[b]" is a character class."""
    src = write_jsonl(tmp_path / "a[b]" / "d.jsonl", sentiment_rows(10))
    cfg = DataConfig(source=str(src), eval_split=None, eval_fraction=None)
    assert len(load_splits(cfg, needs_labels=True).train) == 10
