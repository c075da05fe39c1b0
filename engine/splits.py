"""Which rows a run evaluates on: ``data.eval_split: auto`` (the validation split, else test, else a share of
train held out) or a named split, and the seeded, stratified hold-out itself."""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.config import DataConfig
from engine.errors import DataError
from engine.events import plural

if TYPE_CHECKING:
    from datasets import Dataset


#: Splits that ``data.eval_split: auto`` evaluates on, the first one the source has.
AUTO_EVAL_SPLITS = ("validation", "test")


@dataclass(frozen=True)
class EvalChoice:
    """The eval set a config asks of a source: a split, a share of train held out, or none."""

    split: str | None = None
    fraction: float | None = None
    stratify_by: str | None = None

    def describe(self, rows: int | None = None) -> str:
        counted = "" if rows is None else f" ({plural(rows, 'row')})"
        if self.split is not None:
            return f"{self.split} split{counted}"
        if self.fraction is not None:
            how = f", stratified by {self.stratify_by}" if self.stratify_by else ""
            return f"{self.fraction * 100:g}% of train{how}{counted}"
        return "none (no eval split and data.eval_fraction is null)"


def choose_eval(cfg: DataConfig, splits: Collection[str], *, needs_labels: bool) -> EvalChoice:
    """Which eval set ``data.eval_split`` and ``data.eval_fraction`` pick from a source with these splits."""
    named = cfg.eval_split
    if named == "auto":
        named = next((s for s in AUTO_EVAL_SPLITS if s in splits and s != cfg.train_split), None)
    if named is not None:
        return EvalChoice(split=named)
    if cfg.eval_fraction is None:
        return EvalChoice()
    return EvalChoice(fraction=cfg.eval_fraction, stratify_by=cfg.label_field if needs_labels else None)


def held_out_rows(rows: int, fraction: float) -> int:
    return max(1, round(rows * fraction))


def describe_eval(cfg: DataConfig, split_rows: Mapping[str, int], *, needs_labels: bool) -> str:
    """The eval set a run of ``cfg`` will use, with its rows, from the source's split sizes alone (the Data
    panel shows it before any run)."""
    choice = choose_eval(cfg, list(split_rows), needs_labels=needs_labels)
    if choice.split is not None:
        if choice.split not in split_rows:
            return f"{choice.split} split missing"
        rows: int | None = split_rows[choice.split]
    elif choice.fraction is not None and cfg.train_split in split_rows:
        rows = held_out_rows(split_rows[cfg.train_split], choice.fraction)
    else:
        rows = None
    if rows is not None and cfg.eval_size is not None:
        rows = min(rows, cfg.eval_size)
    return choice.describe(rows)


def train_rows(cfg: DataConfig, split_rows: Mapping[str, int], *, needs_labels: bool) -> int | None:
    """How many rows a run of ``cfg`` trains on, from the source's split sizes alone: its train split, less a
    held-out eval share, cut to ``data.train_size``; None when the source has no such split."""
    if cfg.train_split not in split_rows:
        return None
    rows = split_rows[cfg.train_split]
    choice = choose_eval(cfg, list(split_rows), needs_labels=needs_labels)
    if choice.split is None and choice.fraction is not None:
        rows -= held_out_rows(rows, choice.fraction)
    return rows if cfg.train_size is None else min(rows, cfg.train_size)


#: A label column may have this many classes whatever its rows; past it, at most one class per two rows.
MOST_CLASSES_UNASKED = 20


def check_class_count(label_field: str, classes: int, rows: int, columns: list[str]) -> None:
    """DataError for a label column of free text or ids (named by mistake): a class for nearly every row."""
    if classes > max(MOST_CLASSES_UNASKED, rows // 2):
        others = ", ".join(c for c in columns if c != label_field)
        raise DataError(
            f'data.label_field: column "{label_field}" has {classes} distinct values in {rows} rows: '
            f"free text or ids, not classes; name the label column (others: {others})"
        )


def label_kind_error(label_field: str, odd: Any) -> DataError:
    """A label column that holds ``odd``, a value that is no class (a float, a list, a record)."""
    return DataError(
        f'data.label_field: column "{label_field}" holds {type(odd).__name__} values such as {odd!r}; '
        "labels must be strings or integers"
    )


def hold_out(ds: Dataset, fraction: float, seed: int, stratify_by: str | None) -> tuple[Dataset, Dataset]:
    """Split ``fraction`` of the rows off as an eval set, seeded; per class in the same share when
    ``stratify_by`` names the label column (each class keeps at least one training row)."""
    n_eval = held_out_rows(len(ds), fraction)
    if n_eval >= len(ds):
        smaller = "use a smaller share, or " if len(ds) > 1 else "add rows, or "  # one row: no share leaves one
        raise DataError(
            f"data.eval_fraction: {fraction:g} of {plural(len(ds), 'training row')} leaves none "
            f"to train on; {smaller}data.eval_fraction: null to train without an eval set"
        )
    if stratify_by is None:
        parts = ds.train_test_split(test_size=n_eval, seed=seed)
        return parts["train"], parts["test"]
    # Not datasets' stratify_by_column: it takes only a ClassLabel column, and casting to one would re-encode
    # the labels that encode_labels names.
    rng = random.Random(seed)
    by_class: dict[Any, list[int]] = {}
    for i, value in enumerate(ds[stratify_by]):
        if not isinstance(value, int | str):  # bool is an int
            raise label_kind_error(stratify_by, value)
        by_class.setdefault(value, []).append(i)
    check_class_count(stratify_by, len(by_class), len(ds), ds.column_names)
    classes = sorted(by_class, key=str)
    # Largest remainder: each class's share rounds so that the counts add up to n_eval.
    quota = {c: len(by_class[c]) * n_eval / len(ds) for c in classes}
    take = {c: min(int(quota[c]), len(by_class[c]) - 1) for c in classes}
    for c in sorted(classes, key=lambda c: quota[c] - int(quota[c]), reverse=True):
        if sum(take.values()) >= n_eval:
            break
        if take[c] < len(by_class[c]) - 1:
            take[c] += 1
    eval_rows: list[int] = []
    for c in classes:
        rows = by_class[c]
        rng.shuffle(rows)
        eval_rows.extend(rows[: take[c]])
    if not eval_rows:
        raise DataError(
            "data.eval_fraction: no class of data.label_field has two rows to share with eval; add rows or name "
            "an eval split"
        )
    held = set(eval_rows)
    return ds.select([i for i in range(len(ds)) if i not in held]), ds.select(sorted(eval_rows))
