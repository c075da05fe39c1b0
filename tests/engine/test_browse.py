"""Page access to a dataset for the Data panel: rows, samples, label counts, filters and tokenization."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.browse import ArrowColumns, DatasetBrowser, ListColumns, SplitView, tokenize_text
from engine.errors import DataError
from tests.conftest import sentiment_rows, write_jsonl


@pytest.fixture
def rows() -> list[dict[str, Any]]:
    out = sentiment_rows(57)
    out[3]["text"] = "first line\n\n   second   line"
    return out


def open_as(backend: str, source: str, text_field: str = "text", label_field: str | None = "label") -> DatasetBrowser:
    """``DatasetBrowser.open``, or the same source forced through datasets' Arrow tables, as bigger files go."""
    if backend == "lists":
        return DatasetBrowser.open(source, text_field, label_field)
    from engine.data import load_source

    splits = {name: ArrowColumns(ds) for name, ds in load_source(source).items()}
    return DatasetBrowser(splits, source, text_field, label_field)


@pytest.fixture(params=["lists", "arrow"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def train(tmp_path: Path, rows: list[dict[str, Any]], backend: str) -> SplitView:
    write_jsonl(tmp_path / "data" / "train.jsonl", rows)
    write_jsonl(tmp_path / "data" / "test.jsonl", rows[:5])
    browser = open_as(backend, str(tmp_path / "data"))
    assert isinstance(browser.splits["train"], ListColumns if backend == "lists" else ArrowColumns)
    return browser.split("train")


def test_pages_hold_index_label_and_a_one_line_preview(train: SplitView, rows: list[dict[str, Any]]) -> None:
    page = train.page(2, 3)
    assert [r.index for r in page] == [2, 3, 4]
    assert [r.label for r in page] == [rows[i]["label"] for i in (2, 3, 4)]
    assert page[1].preview == "first line second line"


def test_a_row_without_text_or_label_shows_as_missing_not_as_empty(tmp_path: Path, backend: str) -> None:
    rows = [{"text": None, "label": "pos"}, {"text": "", "label": "neg"}, {"text": "fine", "label": None}]
    write_jsonl(tmp_path / "odd" / "train.jsonl", rows)
    split = open_as(backend, str(tmp_path / "odd")).split("train")
    assert [(r.preview, r.label) for r in split.page(0, 3)] == [
        ("(missing)", "pos"),
        ("", "neg"),
        ("fine", "(missing)"),
    ]
    assert split.sample(0).text == "(missing): this row has no text"
    assert {c.label for c in split.label_histogram()} == {"pos", "neg", "(missing)"}


def test_a_page_past_the_end_is_short_or_empty(train: SplitView, rows: list[dict[str, Any]]) -> None:
    assert [r.index for r in train.page(len(rows) - 2, 10)] == [len(rows) - 2, len(rows) - 1]
    assert train.page(len(rows), 10) == []


def test_every_split_of_a_folder_is_browsable(tmp_path: Path, train: SplitView, backend: str) -> None:
    browser = open_as(backend, str(tmp_path / "data"))
    assert sorted(browser.split_names) == ["test", "train"]
    assert len(browser.split("test")) == 5
    with pytest.raises(DataError, match='split "valid" not in'):
        browser.split("valid")


def test_label_histogram_counts_each_label(train: SplitView, rows: list[dict[str, Any]]) -> None:
    expected = {label: sum(r["label"] == label for r in rows) for label in {r["label"] for r in rows}}
    histogram = train.label_histogram()
    assert {c.label: c.count for c in histogram} == expected
    assert [c.count for c in histogram] == sorted(expected.values(), reverse=True)


def test_filter_is_a_case_insensitive_substring_match(train: SplitView, rows: list[dict[str, Any]]) -> None:
    expected = [i for i, r in enumerate(rows) if "great" in r["text"].lower()]
    view = train.filter("GREAT")
    assert len(view) == len(expected) and view.total_rows == len(rows)
    assert [r.index for r in view.page(0, 100)] == expected
    assert view.sample(0).text == rows[expected[0]]["text"]
    assert {c.label: c.count for c in view.label_histogram()} == {"good": len(expected)}
    assert len(view.filter("")) == len(rows)


def test_class_label_columns_show_label_names(tmp_path: Path) -> None:
    from datasets import ClassLabel, Dataset, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    Dataset.from_dict({"text": ["bad", "good", "fine"], "label": [0, 1, 1]}, features=features).save_to_disk(
        str(tmp_path / "saved")
    )
    view = DatasetBrowser.open(str(tmp_path / "saved"), "text", "label").split("train")
    assert [r.label for r in view.page(0, 3)] == ["neg", "pos", "pos"]
    assert {c.label: c.count for c in view.label_histogram()} == {"neg": 1, "pos": 2}


def test_class_names_number_the_classes_as_a_run_does(tmp_path: Path, backend: str) -> None:
    """The classes of train and eval together, in the order ``encode_labels`` gives them ids: numbers sort as
    numbers. A label column a run refuses (mixed kinds) has none."""
    from engine.data import encode_labels, load_source

    labels = [10, 2, 33, 2]
    write_jsonl(tmp_path / "ints" / "train.jsonl", [{"text": f"t{i}", "label": v} for i, v in enumerate(labels)])
    write_jsonl(tmp_path / "ints" / "test.jsonl", [{"text": "e", "label": 7}])
    browser = open_as(backend, str(tmp_path / "ints"))
    splits = load_source(str(tmp_path / "ints"))
    _, _, names = encode_labels(splits["train"], splits["test"], "label")
    assert browser.class_names(["train", "test"]) == names == ["2", "7", "10", "33"]
    assert browser.class_names(["train", "missing"]) == ["2", "10", "33"]

    write_jsonl(tmp_path / "mixed" / "train.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": "two"}])
    assert open_as("lists", str(tmp_path / "mixed")).class_names(["train"]) is None
    assert open_as("lists", str(tmp_path / "ints"), label_field=None).class_names(["train"]) is None


def test_class_names_of_a_class_label_column_are_its_names(tmp_path: Path) -> None:
    from datasets import ClassLabel, Dataset, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos", "mixed"])})
    Dataset.from_dict({"text": ["bad", "good"], "label": [0, 1]}, features=features).save_to_disk(str(tmp_path / "s"))
    assert DatasetBrowser.open(str(tmp_path / "s"), "text", "label").class_names(["train"]) == ["neg", "pos", "mixed"]


def test_a_missing_text_column_is_one_clear_line(tmp_path: Path, backend: str) -> None:
    write_jsonl(tmp_path / "d.jsonl", [{"body": "x", "label": 1}])
    with pytest.raises(DataError) as err:
        open_as(backend, str(tmp_path / "d.jsonl"))
    assert (
        str(err.value)
        == f'data.text_field: column "text" not in split train of {tmp_path / "d.jsonl"} (columns: body, label)'
    )


def test_a_missing_label_column_browses_without_labels(tmp_path: Path, backend: str) -> None:
    write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}, {"text": "b"}])
    browser = open_as(backend, str(tmp_path / "d.jsonl"))
    assert browser.label_missing("train")
    view = browser.split("train")
    assert [r.label for r in view.page(0, 2)] == ["", ""] and view.label_histogram() == []


def test_pages_of_a_million_rows_come_from_where_they_are_asked(tmp_path: Path) -> None:
    import pyarrow as pa
    from datasets import Dataset

    n = 1_000_000
    table = pa.table(
        {"text": pa.array([f"review number {i}" for i in range(n)]), "label": pa.array([i % 5 for i in range(n)])}
    )
    view = SplitView(ArrowColumns(Dataset(table)), "train", "text", "label")
    assert [(r.index, r.label, r.preview) for r in view.page(n - 2, 5)] == [
        (n - 2, str((n - 2) % 5), f"review number {n - 2}"),
        (n - 1, str((n - 1) % 5), f"review number {n - 1}"),
    ]
    matches = view.filter("number 99999")
    assert [r.index for r in matches.page(0, 20)] == [99999, *range(999990, 1000000)]


def test_rows_read_as_lists_are_the_rows_datasets_reads(tmp_path: Path) -> None:
    """Keys missing from some rows, nulls, numbers and unicode: both readers give the same columns and rows."""
    rows: list[dict[str, Any]] = [
        {"text": "Naïve café\u2028next line", "label": 2},
        {"text": None, "label": 0, "extra": "x"},
        {"label": 1, "text": "third\nline", "score": 0.5},
    ]
    (tmp_path / "d.jsonl").write_text(
        "".join(json.dumps(row, ensure_ascii=False) + "\r\n" for row in rows), encoding="utf-8"
    )  # raw U+2028 in a string, Windows line ends: still JSON lines, still read as lists
    lists, arrow = (open_as(b, str(tmp_path / "d.jsonl")).split("train") for b in ("lists", "arrow"))
    assert isinstance(lists.columns, ListColumns)
    assert lists.column_names == arrow.column_names == ["text", "label", "extra", "score"]
    assert lists.page(0, 5) == arrow.page(0, 5)
    assert [lists.sample(i) for i in range(3)] == [arrow.sample(i) for i in range(3)]
    assert lists.label_histogram() == arrow.label_histogram()
    assert lists.filter("CAF").page(0, 5) == arrow.filter("CAF").page(0, 5)


def test_json_lines_that_only_datasets_reads_are_still_browsed(tmp_path: Path) -> None:
    (tmp_path / "nan.jsonl").write_text('{"text": "a", "score": NaN}\n{"text": "b", "score": 1.0}\n')
    browser = DatasetBrowser.open(str(tmp_path / "nan.jsonl"), "text", None)
    assert isinstance(browser.splits["train"], ArrowColumns)
    assert [r.preview for r in browser.split("train").page(0, 5)] == ["a", "b"]


def test_a_broken_json_line_is_one_clear_line_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n{"text": \n')
    with pytest.raises(DataError, match=r"^data.source: cannot parse .*bad.jsonl as json"):
        DatasetBrowser.open(str(tmp_path / "bad.jsonl"), "text", None)


def test_a_bundled_sample_is_browsed_without_datasets_pyarrow_or_torch() -> None:
    code = (
        "import sys\nfrom engine.browse import DatasetBrowser\n"
        "b = DatasetBrowser.open('reviews-sample', 'text', 'label')\n"
        "assert len(b.split('train')) > 0 and b.split('train').label_histogram()\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(done.stdout.split())
    assert not loaded & {"datasets", "pyarrow", "pandas", "torch", "transformers"}


def test_tokenization_matches_training_and_lists_what_truncation_drops(tiny_bert_dir: Path) -> None:
    from engine.models import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_bert_dir))
    text = "the bakery was wonderful today and the staff were friendly and quick"
    cut = tokenize_text(text, tokenizer, 8)
    training = tokenizer(text, truncation=True, max_length=8)
    assert cut.input_ids == training["input_ids"] and cut.attention_mask == training["attention_mask"]
    assert cut.token_type_ids == training["token_type_ids"]
    assert cut.length == 8 and cut.truncated
    assert cut.tokens[0] == "[CLS]" and cut.tokens[-1] == "[SEP]"
    assert cut.tokens[1:-1] + cut.dropped == tokenizer.tokenize(text)
    assert cut.full_length == len(tokenizer.tokenize(text)) + 2

    whole = tokenize_text(text, tokenizer, 64)
    assert not whole.truncated and whole.dropped == [] and whole.length == whole.full_length


@pytest.mark.parametrize("model", ["tiny_bert_dir", "tiny_gpt2_dir", "minilm"])
def test_the_fast_tokenizer_gives_what_the_transformers_tokenizer_gives(
    model: str, request: pytest.FixtureRequest
) -> None:
    """The Data panel's sample view reads tokenizer.json without transformers; what it shows must be what
    training gets, type ids included only where transformers returns them."""
    from engine.browse import FastTokenizer
    from engine.models import load_tokenizer

    name = model if model == "minilm" else str(request.getfixturevalue(model))
    fast, slow = FastTokenizer.for_model(name), load_tokenizer(name)
    assert fast is not None
    texts = ["the bakery was wonderful today and the staff were friendly and quick", "Naïve café, ¡olé! 42 % off", ""]
    for text in texts:
        for max_length in (4, 8, 64):
            assert tokenize_text(text, fast, max_length) == tokenize_text(text, slow, max_length), (text, max_length)


def test_a_model_without_a_tokenizer_json_has_no_fast_tokenizer(tmp_path: Path) -> None:
    from engine.browse import FastTokenizer

    (tmp_path / "config.json").write_text("{}")
    assert FastTokenizer.for_model(str(tmp_path)) is None
    assert FastTokenizer.for_model(str(tmp_path / "missing")) is None


def test_list_labels_are_the_runs_one_line_in_the_histogram_and_no_classes(tmp_path: Path, backend: str) -> None:
    write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": ["x", "y"]}, {"text": "b", "label": ["x"]}])
    browser = open_as(backend, str(tmp_path / "train.jsonl"))
    with pytest.raises(DataError) as info:
        browser.split("train").label_histogram()
    assert str(info.value) == (
        "data.label_field: column \"label\" holds list values such as ['x', 'y']; labels must be strings or integers"
    )
    assert browser.class_names(["train"]) is None
