"""Page access to a dataset for the Data panel: rows, one sample, its tokenization, label counts, a filter.

Every read is a slice of the memory-mapped Arrow table, so a split of a million rows pages as fast as one of a
hundred; filters and label counts are vectorised Arrow compute. Nothing here imports Textual.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import DataError, UserError

if TYPE_CHECKING:
    import pyarrow as pa
    from datasets import Dataset, DatasetDict
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


def _label_name(value: Any, names: Sequence[str] | None) -> str:
    if value is None:
        return "null"
    if names is not None and isinstance(value, int) and 0 <= value < len(names):
        return names[value]
    return str(value)


def _preview(text: Any) -> str:
    if text is None:
        return ""
    return _SPACES.sub(" ", str(text)[: PREVIEW_CHARS * 2]).strip()[:PREVIEW_CHARS]


class SplitView:
    """One split, or the rows of it that match a filter; positions run 0..len-1 over the visible rows."""

    def __init__(
        self,
        ds: Dataset,
        name: str,
        text_field: str,
        label_field: str | None,
        *,
        positions: pa.Array | None = None,
        query: str = "",
    ) -> None:
        from datasets import ClassLabel

        self.ds = ds
        self.name = name
        self.text_field = text_field
        self.label_field = label_field if label_field in ds.column_names else None
        self.query = query
        #: Split indices of the visible rows; None = all rows in order.
        self._positions = positions
        feature = ds.features.get(self.label_field) if self.label_field else None
        self.label_names: list[str] | None = list(feature.names) if isinstance(feature, ClassLabel) else None

    def __len__(self) -> int:
        return len(self.ds) if self._positions is None else len(self._positions)

    @property
    def total_rows(self) -> int:
        """Rows in the whole split, filter or not."""
        return len(self.ds)

    def index_of(self, position: int) -> int:
        """The split index of the row at ``position``."""
        if not 0 <= position < len(self):
            raise IndexError(f"row {position} is outside 0..{len(self) - 1}")
        return position if self._positions is None else int(self._positions[position].as_py())

    def _rows(self, indices: list[int]) -> dict[str, list[Any]]:
        if not indices:
            return {c: [] for c in self.ds.column_names}
        if self._positions is None and indices == list(range(indices[0], indices[-1] + 1)):
            return self.ds[indices[0] : indices[-1] + 1]  # a contiguous slice: the cheapest read
        return self.ds[indices]

    def page(self, start: int, count: int) -> list[Row]:
        """Up to ``count`` rows from ``start``; an empty list past the end."""
        start = max(start, 0)
        stop = min(start + max(count, 0), len(self))
        indices = [self.index_of(p) for p in range(start, stop)]
        columns = self._rows(indices)
        texts = columns[self.text_field]
        labels = columns[self.label_field] if self.label_field else [None] * len(indices)
        return [
            Row(index, _label_name(label, self.label_names) if self.label_field else "", _preview(text))
            for index, text, label in zip(indices, texts, labels, strict=True)
        ]

    def sample(self, position: int) -> Sample:
        """The full sample at ``position``."""
        index = self.index_of(position)
        row = self.ds[index]
        label = _label_name(row.get(self.label_field), self.label_names) if self.label_field else ""
        others = {k: str(v) for k, v in row.items() if k not in (self.text_field, self.label_field)}
        text = row[self.text_field]
        return Sample(index, "" if text is None else str(text), label, others)

    def label_histogram(self) -> list[LabelCount]:
        """Rows per label over the visible rows, most frequent first (ties by name)."""
        import pyarrow.compute as pc

        if not self.label_field:
            return []
        column = self.ds.data.column(self.label_field)
        if self._positions is not None:
            column = pc.take(column, self._positions)
        counts: dict[str, int] = {}
        for item in pc.value_counts(column).to_pylist():
            name = _label_name(item["values"], self.label_names)
            counts[name] = counts.get(name, 0) + int(item["counts"])
        return [LabelCount(k, v) for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]

    def filter(self, query: str) -> SplitView:
        """The rows of the whole split whose text contains ``query`` (case-insensitive); "" = all rows."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if not query:
            return SplitView(self.ds, self.name, self.text_field, self.label_field)
        column = self.ds.data.column(self.text_field)
        if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
            column = pc.cast(column, pa.string())
        mask = pc.fill_null(pc.match_substring(column, query, ignore_case=True), False)
        positions = pc.indices_nonzero(mask)
        return SplitView(self.ds, self.name, self.text_field, self.label_field, positions=positions, query=query)

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


class DatasetBrowser:
    """All splits of one data source, loaded once through ``engine.data.load_source``."""

    def __init__(self, splits: DatasetDict, source: str, text_field: str, label_field: str | None) -> None:
        self.splits = splits
        self.source = source
        self.text_field = text_field
        self.label_field = label_field
        for name, ds in splits.items():
            if text_field not in ds.column_names:
                raise DataError(
                    f'data.text_field: column "{text_field}" not in split {name} of {source} '
                    f"(columns: {', '.join(ds.column_names)})"
                )

    @classmethod
    def open(cls, source: str, text_field: str, label_field: str | None) -> DatasetBrowser:
        """Load ``source`` (a bundled sample, a local file or folder, or a hub id) and check its text column."""
        from engine.data import load_source

        return cls(load_source(source), source, text_field, label_field)

    @property
    def split_names(self) -> list[str]:
        return list(self.splits)

    def split(self, name: str) -> SplitView:
        if name not in self.splits:
            raise DataError(f'split "{name}" not in {self.source} (splits: {", ".join(self.splits)})')
        return SplitView(self.splits[name], name, self.text_field, self.label_field)

    def label_missing(self, split: str) -> bool:
        """Whether the configured label column is absent from ``split`` (a problem only for classification)."""
        return bool(self.label_field) and self.label_field not in self.splits[split].column_names
