"""Page access to a dataset for the Data panel: rows, one sample, its tokenization, label counts, a filter.

Small local JSON lines are read into Python lists, so drawing the panel imports neither datasets nor pyarrow;
any other source pages from its memory-mapped Arrow table, so a split of a million rows pages as fast as one
of a hundred, with filters and label counts in vectorised Arrow compute. Nothing here imports Textual.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import DataError, UserError

if TYPE_CHECKING:
    import pyarrow as pa
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

#: Characters of text kept in a row preview; the table crops it further to its width.
PREVIEW_CHARS = 240
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Row:
    """One table row: the sample's index in its split, its label name and a one-line preview of its text."""

    index: int
    label: str
    preview: str


@dataclass(frozen=True)
class Sample:
    """One sample in full: its text, its label name and every other column as text."""

    index: int
    text: str
    label: str
    columns: dict[str, str] = field(default_factory=dict)
    #: The row has no text (null): ``text`` says so, and a run refuses the split (``engine.data``).
    missing: bool = False


@dataclass(frozen=True)
class TokenizedSample:
    """A sample as the model sees it: what ``engine.data.tokenize`` keeps, and what truncation drops."""

    tokens: list[str]
    input_ids: list[int]
    attention_mask: list[int]
    token_type_ids: list[int] | None
    max_length: int
    #: Tokens the text needs without truncation, special tokens included.
    full_length: int
    #: Text tokens cut off by ``max_length``, in order.
    dropped: list[str]

    @property
    def length(self) -> int:
        return len(self.input_ids)

    @property
    def truncated(self) -> bool:
        return bool(self.dropped)


@dataclass(frozen=True)
class LabelCount:
    label: str
    count: int


#: What the table shows for a value the row does not have (null in the file): not an empty text, not a class.
MISSING = "(missing)"


def _label_name(value: Any, names: Sequence[str] | None) -> str:
    if value is None:
        return MISSING
    if names is not None and isinstance(value, int) and 0 <= value < len(names):
        return names[value]
    return str(value)


def _preview(text: Any) -> str:
    if text is None:
        return MISSING
    return _SPACES.sub(" ", str(text)[: PREVIEW_CHARS * 2]).strip()[:PREVIEW_CHARS]


class ArrowColumns:
    """A split as a ``datasets.Dataset``: reads are slices of its memory-mapped Arrow table, filters and label
    counts vectorised Arrow compute, so a million rows page as fast as a hundred."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        self.column_names: list[str] = list(ds.column_names)

    def __len__(self) -> int:
        return len(self.ds)

    @property
    def nbytes(self) -> int:
        return int(self.ds.data.nbytes)

    def label_names(self, column: str) -> list[str] | None:
        from datasets import ClassLabel

        feature = self.ds.features.get(column)
        return list(feature.names) if isinstance(feature, ClassLabel) else None

    def rows(self, indices: list[int]) -> dict[str, list[Any]]:
        if indices == list(range(indices[0], indices[-1] + 1)):
            return self.ds[indices[0] : indices[-1] + 1]  # a contiguous slice: the cheapest read
        return self.ds[indices]

    def row(self, index: int) -> dict[str, Any]:
        return dict(self.ds[index])

    def value_counts(self, column: str, positions: Sequence[int] | None) -> list[tuple[Any, int]]:
        import pyarrow as pa
        import pyarrow.compute as pc

        values = self.ds.data.column(column)
        if pa.types.is_nested(values.type):  # lists or records: no class, as a run says
            from engine.splits import label_kind_error

            present = values.drop_null()
            if len(present):  # all null: no label at all, which the histogram shows as missing
                raise label_kind_error(column, present[0].as_py())
        if isinstance(positions, _ArrowPositions):
            values = pc.take(values, positions.array)
        elif positions is not None:
            values = pc.take(values, list(positions))
        return [(item["values"], int(item["counts"])) for item in pc.value_counts(values).to_pylist()]

    def matching(self, column: str, query: str) -> Sequence[int]:
        import pyarrow as pa
        import pyarrow.compute as pc

        values = self.ds.data.column(column)
        if not pa.types.is_string(values.type) and not pa.types.is_large_string(values.type):
            values = pc.cast(values, pa.string())
        mask = pc.fill_null(pc.match_substring(values, query, ignore_case=True), False)
        return _ArrowPositions(pc.indices_nonzero(mask))


class _ArrowPositions(Sequence[int]):
    """Row indices that stay an Arrow array (a filter of a million rows can match most of them)."""

    def __init__(self, array: pa.Array) -> None:
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [int(v) for v in self.array[i].to_pylist()]
        return int(self.array[i].as_py())


class ListColumns:
    """A split read from JSON lines into Python lists: for the small local files the Data panel mostly shows,
    without importing datasets and pyarrow into the workbench (BENCHMARKS.md, memory)."""

    def __init__(self, columns: dict[str, list[Any]]) -> None:
        self.columns = columns
        self.column_names = list(columns)
        self._rows = len(next(iter(columns.values()))) if columns else 0

    def __len__(self) -> int:
        return self._rows

    @property
    def nbytes(self) -> int:
        """The lists and their values (strings, numbers) as Python holds them."""
        return sum(sys.getsizeof(c) + sum(map(sys.getsizeof, c)) for c in self.columns.values())

    def label_names(self, column: str) -> list[str] | None:
        return None  # JSON has no class-label type: the values are the names

    def rows(self, indices: list[int]) -> dict[str, list[Any]]:
        return {name: [values[i] for i in indices] for name, values in self.columns.items()}

    def row(self, index: int) -> dict[str, Any]:
        return {name: values[index] for name, values in self.columns.items()}

    def value_counts(self, column: str, positions: Sequence[int] | None) -> list[tuple[Any, int]]:
        values = self.columns[column]
        try:
            counts = Counter(values if positions is None else (values[i] for i in positions))
        except TypeError:  # a list or a record: no class, as a run says
            from engine.splits import label_kind_error

            raise label_kind_error(column, next(v for v in values if not isinstance(v, Hashable))) from None
        return list(counts.items())

    def matching(self, column: str, query: str) -> Sequence[int]:
        needle = query.lower()
        return [i for i, v in enumerate(self.columns[column]) if v is not None and needle in str(v).lower()]


Columns = ArrowColumns | ListColumns


class SplitView:
    """One split, or the rows of it that match a filter; positions run 0..len-1 over the visible rows."""

    def __init__(
        self,
        columns: Columns,
        name: str,
        text_field: str,
        label_field: str | None,
        *,
        positions: Sequence[int] | None = None,
        query: str = "",
    ) -> None:
        self.columns = columns
        self.name = name
        self.text_field = text_field
        self.label_field = label_field if label_field in columns.column_names else None
        self.query = query
        #: Split indices of the visible rows; None = all rows in order.
        self._positions = positions
        self.label_names = columns.label_names(self.label_field) if self.label_field else None

    def __len__(self) -> int:
        return len(self.columns) if self._positions is None else len(self._positions)

    @property
    def total_rows(self) -> int:
        """Rows in the whole split, filter or not."""
        return len(self.columns)

    @property
    def column_names(self) -> list[str]:
        return self.columns.column_names

    def index_of(self, position: int) -> int:
        """The split index of the row at ``position``."""
        if not 0 <= position < len(self):
            raise IndexError(f"row {position} is outside 0..{len(self) - 1}")
        return position if self._positions is None else self._positions[position]

    def page(self, start: int, count: int) -> list[Row]:
        """Up to ``count`` rows from ``start``; an empty list past the end."""
        start = max(start, 0)
        stop = min(start + max(count, 0), len(self))
        if start >= stop:
            return []
        indices = list(range(start, stop)) if self._positions is None else list(self._positions[start:stop])
        columns = self.columns.rows(indices)
        texts = columns[self.text_field]
        labels = columns[self.label_field] if self.label_field else [None] * len(indices)
        return [
            Row(index, _label_name(label, self.label_names) if self.label_field else "", _preview(text))
            for index, text, label in zip(indices, texts, labels, strict=True)
        ]

    def sample(self, position: int) -> Sample:
        """The full sample at ``position``."""
        index = self.index_of(position)
        row = self.columns.row(index)
        label = _label_name(row.get(self.label_field), self.label_names) if self.label_field else ""
        others = {k: str(v) for k, v in row.items() if k not in (self.text_field, self.label_field)}
        text = row[self.text_field]
        if text is None:
            return Sample(index, f"{MISSING}: this row has no {self.text_field}", label, others, missing=True)
        return Sample(index, str(text), label, others)

    def label_histogram(self) -> list[LabelCount]:
        """Rows per label over the visible rows, most frequent first (ties by name)."""
        if not self.label_field:
            return []
        counts: dict[str, int] = {}
        for value, count in self.columns.value_counts(self.label_field, self._positions):
            name = _label_name(value, self.label_names)
            counts[name] = counts.get(name, 0) + count
        return [LabelCount(k, v) for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]

    def filter(self, query: str) -> SplitView:
        """The rows of the whole split whose text contains ``query`` (case-insensitive); "" = all rows."""
        if not query:
            return SplitView(self.columns, self.name, self.text_field, self.label_field)
        positions = self.columns.matching(self.text_field, query)
        return SplitView(self.columns, self.name, self.text_field, self.label_field, positions=positions, query=query)

    def tokenize(
        self, position: int, tokenizer: PreTrainedTokenizerBase | FastTokenizer, max_length: int
    ) -> TokenizedSample:
        """The sample at ``position`` tokenized the way training does, and the tokens truncation drops."""
        return tokenize_text(self.sample(position).text, tokenizer, max_length)


def _tokens(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> list[str]:
    out = tokenizer.convert_ids_to_tokens(ids)
    return [out] if isinstance(out, str) else list(out)


class FastTokenizer:
    """A model's ``tokenizer.json`` through the ``tokenizers`` library: the same tokens, ids and masks as the
    transformers tokenizer that training loads from it, without importing transformers and torch into the
    workbench's process (seconds and hundreds of MB for a sample's token view)."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(path))
        self._tokenizer.no_padding()
        self._truncating_at: int | None = None
        #: transformers returns token_type_ids for BERT-like tokenizers only: those whose post-processor gives
        #: a second sequence its own type.
        self.has_token_types = _pairs_have_a_type(json.loads(path.read_text(encoding="utf-8")).get("post_processor"))

    @classmethod
    def for_model(cls, name_or_path: str) -> FastTokenizer | None:
        """The fast tokenizer of a local model folder (or ``minilm``), or None where there is none to read."""
        from engine.models import resolve_model_path

        try:
            path = Path(resolve_model_path(name_or_path)) / "tokenizer.json"
        except UserError:
            return None
        return cls(path) if path.is_file() else None

    def encode(self, text: str, max_length: int | None) -> Any:
        if max_length != self._truncating_at:
            if max_length is None:
                self._tokenizer.no_truncation()
            else:
                self._tokenizer.enable_truncation(max_length)
            self._truncating_at = max_length
        return self._tokenizer.encode(text)


def _pairs_have_a_type(processor: Any) -> bool:
    if not isinstance(processor, dict):
        return False
    kind = processor.get("type")
    if kind == "BertProcessing":
        return True
    if kind == "Sequence":
        return any(_pairs_have_a_type(p) for p in processor.get("processors") or [])
    if kind == "TemplateProcessing":
        # a piece reads {"Sequence": {"id": "B", "type_id": 1}} or {"SpecialToken": {"id": "[SEP]", "type_id": 1}}
        pieces: list[dict[str, dict[str, Any]]] = [p for p in processor.get("pair") or [] if isinstance(p, dict)]
        return any(inner.get("type_id", 0) != 0 for piece in pieces for inner in piece.values())
    return False


def tokenize_text(text: str, tokenizer: PreTrainedTokenizerBase | FastTokenizer, max_length: int) -> TokenizedSample:
    """Tokenize like ``engine.data.tokenize`` (truncation at ``max_length``) and list what is cut off."""
    if isinstance(tokenizer, FastTokenizer):
        kept_encoding, full_encoding = tokenizer.encode(text, max_length), tokenizer.encode(text, None)
        kept_text_tokens = len(kept_encoding.ids) - sum(kept_encoding.special_tokens_mask)
        full_text_tokens = [
            t for t, special in zip(full_encoding.tokens, full_encoding.special_tokens_mask, strict=True) if not special
        ]
        return TokenizedSample(
            tokens=list(kept_encoding.tokens),
            input_ids=list(kept_encoding.ids),
            attention_mask=list(kept_encoding.attention_mask),
            token_type_ids=list(kept_encoding.type_ids) if tokenizer.has_token_types else None,
            max_length=max_length,
            full_length=len(full_encoding.ids),
            dropped=full_text_tokens[kept_text_tokens:],
        )
    kept = tokenizer(text, truncation=True, max_length=max_length, return_special_tokens_mask=True)
    # verbose=False: the untruncated pass is expected to exceed the limit, so no warning for it.
    full = tokenizer(text, return_special_tokens_mask=True, verbose=False)
    full_text_ids = [
        i for i, special in zip(full["input_ids"], full["special_tokens_mask"], strict=True) if not special
    ]
    kept_ids: list[int] = list(kept["input_ids"])
    kept_text_tokens = len(kept_ids) - sum(kept["special_tokens_mask"])
    dropped_ids = full_text_ids[kept_text_tokens:]
    token_type_ids = kept.get("token_type_ids")
    return TokenizedSample(
        tokens=_tokens(tokenizer, kept_ids),
        input_ids=kept_ids,
        attention_mask=list(kept["attention_mask"]),
        token_type_ids=list(token_type_ids) if token_type_ids is not None else None,
        max_length=max_length,
        full_length=len(full["input_ids"]),
        dropped=_tokens(tokenizer, dropped_ids),
    )


#: Local JSON lines up to this many bytes are read into lists (ListColumns); bigger files page from Arrow.
LIGHT_BYTES = 64 * 2**20


class DatasetBrowser:
    """All splits of one data source, loaded once."""

    def __init__(self, splits: Mapping[str, Columns], source: str, text_field: str, label_field: str | None) -> None:
        self.splits = dict(splits)
        self.source = source
        self.text_field = text_field
        self.label_field = label_field
        for name, columns in splits.items():
            if text_field not in columns.column_names:
                raise DataError(
                    f'data.text_field: column "{text_field}" not in split {name} of {source} '
                    f"(columns: {', '.join(columns.column_names)})"
                )

    @classmethod
    def open(cls, source: str, text_field: str, label_field: str | None) -> DatasetBrowser:
        """Load ``source`` (a bundled sample, a local file or folder, or a hub id) and check its text column.

        Small local JSON lines are read directly; everything else, and JSON lines that only ``datasets``
        reads (a document over many lines, NaN), through ``engine.data.load_source``, as training loads it.
        """
        from engine.data import check_not_empty, load_source, local_files

        files = local_files(source)
        if files is not None and _light(files):
            check_not_empty(files)
            light = read_json_lines(source, files)
            if light is not None:
                return cls(light, source, text_field, label_field)
        from engine.logs import quiet_libraries

        quiet_libraries()  # datasets' progress bars would draw over a terminal UI
        return cls(
            {name: ArrowColumns(ds) for name, ds in load_source(source).items()}, source, text_field, label_field
        )

    @property
    def split_names(self) -> list[str]:
        return list(self.splits)

    @property
    def nbytes(self) -> int:
        """Bytes the loaded splits take."""
        return sum(columns.nbytes for columns in self.splits.values())

    def split(self, name: str) -> SplitView:
        if name not in self.splits:
            raise DataError(f'split "{name}" not in {self.source} (splits: {", ".join(self.splits)})')
        return SplitView(self.splits[name], name, self.text_field, self.label_field)

    def class_names(self, splits: Sequence[str]) -> list[str] | None:
        """The classes a classification run on these splits (train, eval) numbers, in class-id order, as
        ``engine.data.encode_labels`` does; None without a label column, or with labels a run refuses."""
        from engine.data import ordered_classes

        label = self.label_field
        if not label:
            return None
        present = [self.splits[s] for s in dict.fromkeys(splits) if s in self.splits]
        present = [columns for columns in present if label in columns.column_names]
        if not present:
            return None
        names = present[0].label_names(label)
        if names is None:
            try:
                values = {value for columns in present for value, _ in columns.value_counts(label, None)}
                names = [str(v) for v in ordered_classes(values, label)]
            except DataError:
                return None
        return names if len(names) >= 2 else None

    def label_missing(self, split: str) -> bool:
        """Whether the configured label column is absent from ``split`` (a problem only for classification)."""
        return bool(self.label_field) and self.label_field not in self.splits[split].column_names


def _light(files: dict[str, list[str]]) -> bool:
    paths = [Path(f) for fs in files.values() for f in fs]
    return all(p.suffix.lower() == ".jsonl" for p in paths) and sum(p.stat().st_size for p in paths) <= LIGHT_BYTES


def read_json_lines(source: str, files: dict[str, list[str]]) -> dict[str, ListColumns] | None:
    """Each split's JSON lines as columns in order of first appearance (a key a row lacks is None), as
    ``datasets`` reads them; None where a line is not a JSON object that orjson reads (``datasets`` decides)."""
    import orjson

    splits: dict[str, ListColumns] = {}
    for split, paths in files.items():
        rows: list[dict[str, Any]] = []
        for path in paths:
            try:
                text = Path(path).read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"data.source: {source} is not UTF-8 text; re-save it as UTF-8") from None
            try:
                # split at "\n" only: str.splitlines also splits at U+2028 and the like, which JSON strings hold raw
                rows.extend(orjson.loads(line) for line in text.split("\n") if line.strip())
            except orjson.JSONDecodeError:
                return None
        if not all(isinstance(row, dict) for row in rows):
            return None
        names = list(dict.fromkeys(key for row in rows for key in row))
        splits[split] = ListColumns({name: [row.get(name) for row in rows] for name in names})
    return splits
