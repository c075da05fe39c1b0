"""Datasets: hub id | local file or folder | bundled sample → column checks → labels → tokens → batches."""

from __future__ import annotations

import contextlib
import glob
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.config import NO_EVAL_SET, DataConfig
from engine.errors import ConfigError, DataError
from engine.events import Emit, Status
from engine.hub import datasets_offline_unless_reachable
from engine.splits import EvalChoice, check_class_count, choose_eval, hold_out, label_kind_error

if TYPE_CHECKING:
    import torch
    from datasets import Dataset, DatasetDict
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger("tunebench.data")

SAMPLES_DIR = Path(__file__).parent / "samples"
#: file extension -> datasets builder (and its extra arguments)
BUILDERS: dict[str, tuple[str, dict[str, Any]]] = {
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"delimiter": "\t"}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
    ".txt": ("text", {}),
    ".arrow": ("arrow", {}),
}


def bundled_samples() -> list[str]:
    """Names of the sample datasets shipped with the package."""
    if not SAMPLES_DIR.is_dir():
        return []
    return sorted(p.name for p in SAMPLES_DIR.iterdir() if p.is_dir() and any(p.glob("*.jsonl")))


def _offline_hint() -> str:
    names = ", ".join(bundled_samples()) or "none installed"
    return f"use a bundled sample ({names}) or a local file"


def _looks_local(source: str) -> bool:
    p = _expanded(source)
    return p.exists() or p.suffix.lower() in BUILDERS or source.startswith((".", "/", "~"))


def _expanded(source: str) -> Path:
    try:
        return Path(source).expanduser()
    except RuntimeError:  # ~name of no user here
        raise DataError(f"data.source: {source}: no user {source[1:].partition('/')[0]!r} on this machine") from None


def _files_by_split(folder: Path) -> dict[str, list[str]]:
    files: dict[str, list[str]] = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.suffix.lower() in BUILDERS:
            files.setdefault(f.stem, []).append(str(f))
    return files


def _load_files(label: str, data_files: dict[str, list[str]]) -> DatasetDict:
    import datasets

    suffixes = {Path(f).suffix.lower() for fs in data_files.values() for f in fs}
    if len(suffixes) != 1:
        raise DataError(f"data.source: {label} mixes file types ({', '.join(sorted(suffixes))}); use one")
    suffix = suffixes.pop()
    check_not_empty(data_files)
    builder, extra = BUILDERS[suffix]
    # datasets reads data_files as glob patterns: a folder named "a[b]" would be a character class
    patterns = {split: [glob.escape(f) for f in files] for split, files in data_files.items()}
    try:
        with _builders_quiet():
            return datasets.load_dataset(builder, data_files=patterns, **extra)
    except UnicodeDecodeError:
        raise DataError(f"data.source: {label} is not UTF-8 text; re-save it as UTF-8") from None
    except Exception as exc:
        # pyarrow/pandas parse errors come in many types, wrapped by datasets in a generic one; they all mean the
        # file does not parse, and the innermost message says where.
        chain = _exception_chain(exc)
        if any(
            isinstance(e, UnicodeDecodeError) or "utf-8" in str(e).lower() or "utf8" in str(e).lower() for e in chain
        ):
            raise DataError(f"data.source: {label} is not UTF-8 text; re-save it as UTF-8") from None
        specific = [e for e in chain if str(e).strip() and "error occurred while generating" not in str(e)]
        cause = specific[0] if specific else exc
        first = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:200]
        raise DataError(f"data.source: cannot parse {label} as {builder}: {first}") from None


_quiet_lock = threading.Lock()
_quiet_loads = 0  # loads under way that keep the builders' loggers quiet
_quiet_level = logging.NOTSET  # their level before the first of them


@contextlib.contextmanager
def _builders_quiet() -> Iterator[None]:
    """The file builders log a parse error before they raise it; the raise becomes one DataError line, so their
    log would say it a second time. Their loggers inherit this one's level. Counted: loads in two threads (the
    Data panel's and a run's) leave it as it was only when both are done."""
    global _quiet_loads, _quiet_level
    builders_log = logging.getLogger("datasets.packaged_modules")
    with _quiet_lock:
        if _quiet_loads == 0:
            _quiet_level = builders_log.level
            builders_log.setLevel(logging.CRITICAL)
        _quiet_loads += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_loads -= 1
            if _quiet_loads == 0:
                builders_log.setLevel(_quiet_level)


def _exception_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def local_files(source: str) -> dict[str, list[str]] | None:
    """The data files of a bundled sample or a local file or folder, by split; None for a hub id or a dataset
    saved with ``save_to_disk``. Raises DataError for a local path that does not exist, cannot be read or holds
    no data."""
    with _readable(source):
        return _local_files(source)


@contextlib.contextmanager
def _readable(source: str) -> Iterator[None]:
    """The OS's refusals to read ``source`` (a folder this user cannot read, a name too long) as a DataError."""
    try:
        yield
    except OSError as exc:
        raise DataError(f"data.source: {source} cannot be read ({exc.strerror or exc})") from None


def _local_files(source: str) -> dict[str, list[str]] | None:
    if source in bundled_samples():
        return _files_by_split(SAMPLES_DIR / source)
    if not _looks_local(source):
        return None
    path = _expanded(source)
    if not path.exists():
        raise DataError(f"data.source: {source} not found; check the path, or {_offline_hint()}")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix not in BUILDERS:
            raise DataError(
                f"data.source: {source} has an unknown extension {suffix or '(none)'}; "
                f"use one of {', '.join(sorted(BUILDERS))}"
            )
        return {"train": [str(path)]}
    if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
        return None
    files = _files_by_split(path)
    if not files:
        raise DataError(
            f"data.source: {source} holds no data files ({', '.join(sorted(BUILDERS))}) and no saved dataset"
        )
    return files


def check_source(source: str) -> None:
    """Raise DataError when ``source`` names a local file or folder that a run could not read: the checks made
    before anything is loaded, cheap enough for each keystroke. A hub id passes (reaching it is the load's)."""
    files = local_files(source)
    if files is not None:
        with _readable(source):
            check_not_empty(files)


def check_not_empty(data_files: dict[str, list[str]]) -> None:
    for fs in data_files.values():
        for f in fs:
            if Path(f).stat().st_size == 0:
                raise DataError(f"data.source: {f} is empty; give a file with one sample per row")
            if BUILDERS.get(Path(f).suffix.lower(), ("",))[0] == "csv" and _header_only(Path(f)):
                raise DataError(f"data.source: {f} has a header line and no rows; give one sample per row under it")


#: A CSV or TSV file longer than this holds more than its header line. Small: the Config panel checks its data
#: source on the UI thread at each edit of it.
_HEADER_BYTES = 1 << 16


def _header_only(path: Path) -> bool:
    """Whether a CSV or TSV file holds one line that is not blank (its header) and nothing else, whatever its line
    endings (\n, \r\n or \r alone); reads no more than its first 64 KiB."""
    with open(path, "rb") as fh:
        head = fh.read(_HEADER_BYTES + 1)
    return len(head) <= _HEADER_BYTES and sum(1 for line in head.splitlines() if line.strip()) == 1


def load_source(source: str) -> DatasetDict:
    """All splits of a dataset, as given: a bundled sample, a local file/folder, or a hub id."""
    import datasets

    files = local_files(source)
    if files is not None:
        return _load_files(source, files)
    if _looks_local(source):  # a dataset saved with save_to_disk
        loaded = datasets.load_from_disk(str(_expanded(source)))
        return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict(train=loaded)
    try:
        with datasets_offline_unless_reachable():
            loaded = datasets.load_dataset(source)
    except (ConnectionError, OSError) as exc:
        raise DataError(
            f'data.source: cannot reach the Hugging Face Hub to download "{source}" (offline?); {_offline_hint()}'
        ) from exc
    except Exception as exc:
        name = type(exc).__name__
        if "NotFound" in name or "doesn't exist" in str(exc) or "offline" in str(exc).lower():
            raise DataError(
                f'data.source: "{source}" is not a bundled sample, a local path, or a reachable hub dataset; '
                f"{_offline_hint()}"
            ) from None
        raise
    if not isinstance(loaded, datasets.DatasetDict):
        loaded = datasets.DatasetDict(train=loaded)
    return loaded


def _split(dd: DatasetDict, name: str, key: str, source: str) -> Dataset:
    if name not in dd:
        hint = (
            "; or set data.eval_split: auto to hold out data.eval_fraction of train" if key == "data.eval_split" else ""
        )
        raise DataError(f'{key}: split "{name}" not in {source} (splits: {", ".join(dd)}){hint}')
    return dd[name]


def _subsample(ds: Dataset, size: int | None, seed: int, what: str) -> Dataset:
    ds = ds.shuffle(seed=seed)
    if size is None:
        return ds
    if size > len(ds):
        log.warning("%s=%d is larger than the data (%d rows); using all %d", what, size, len(ds), len(ds))
        return ds
    return ds.select(range(size))


def _check_column(ds: Dataset, column: str, key: str, split: str) -> None:
    if column not in ds.column_names:
        raise DataError(f'{key}: column "{column}" not in split {split} (columns: {", ".join(ds.column_names)})')
    values = ds.data.column(column)
    if values.null_count:
        import pyarrow.compute as pc

        first = pc.index(pc.is_null(values), True).as_py()  # counted from 0, as the Data panel's # column
        raise DataError(
            f'{key}: column "{column}" has {values.null_count} empty (null) values in split {split}, the first in '
            f"row {first}; drop those rows or pick another column"
        )


def _check_text(ds: Dataset, column: str, split: str, *, label: str | None) -> None:
    """The text column must hold strings: a tokenizer fails on numbers, and on lists or records (chat
    messages, prompt and completion pairs) as their rows."""
    import pyarrow as pa

    def is_text(kind: pa.DataType) -> bool:
        return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))

    kind = ds.data.column(column).type
    if is_text(kind):
        return
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        held = "numbers"
    elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
        held = "lists (chat messages?)"
    elif pa.types.is_struct(kind):
        held = "records"
    else:
        held = f"{kind} values"
    texts = [f.name for f in ds.data.schema if is_text(f.type) and f.name != label]
    hint = f"pick a column of text ({', '.join(texts)})" if texts else "write each row's text as one string"
    raise DataError(f'data.text_field: column "{column}" holds {held}, not text, in split {split}; {hint}')


@dataclass
class Splits:
    """Train and eval rows as a run uses them, and which eval set they came from."""

    train: Dataset
    eval: Dataset | None
    eval_choice: EvalChoice

    @property
    def eval_set(self) -> str:
        """What the user reads: "test split (100 rows)", "10% of train, stratified by label (12 rows)"."""
        return self.eval_choice.describe(len(self.eval) if self.eval is not None else None)


def _check_rows(ds: Dataset, name: str, cfg: DataConfig, needs_labels: bool) -> None:
    if len(ds) == 0:
        raise DataError(f"data.source: the {name} split of {cfg.source} has no rows")
    _check_column(ds, cfg.text_field, "data.text_field", name)
    _check_text(ds, cfg.text_field, name, label=cfg.label_field)
    if needs_labels:
        assert cfg.label_field is not None
        _check_column(ds, cfg.label_field, "data.label_field", name)


def load_splits(cfg: DataConfig, *, needs_labels: bool) -> Splits:
    """Train and eval splits after the eval choice, column checks and seeded subsampling."""
    dd = load_source(cfg.source)
    train = _split(dd, cfg.train_split, "data.train_split", cfg.source)
    _check_rows(train, "train", cfg, needs_labels)  # before a held-out share is stratified by its labels
    choice = choose_eval(cfg, list(dd), needs_labels=needs_labels)
    evals: Dataset | None = None
    if choice.split is not None:
        evals = _split(dd, choice.split, "data.eval_split", cfg.source)
        _check_rows(evals, "eval", cfg, needs_labels)
    elif choice.fraction is not None:
        train, evals = hold_out(train, choice.fraction, cfg.shuffle_seed, choice.stratify_by)
    train = _subsample(train, cfg.train_size, cfg.shuffle_seed, "data.train_size")
    if evals is not None:
        evals = _subsample(evals, cfg.eval_size, cfg.shuffle_seed, "data.eval_size")
    return Splits(train, evals, choice)


def ordered_classes(values: set[Any], label_field: str) -> list[Any]:
    """A label column's distinct values in class-id order (sorted); its class names are their ``str``."""
    kinds = {type(v) for v in values}
    if kinds - {int, str, bool}:
        raise label_kind_error(label_field, next(v for v in values if type(v) not in (int, str, bool)))
    if len(kinds) > 1:
        raise DataError(f'data.label_field: column "{label_field}" mixes strings and numbers; use one kind')
    return sorted(values)


def encode_labels(train: Dataset, evals: Dataset | None, label_field: str) -> tuple[Dataset, Dataset | None, list[str]]:
    """Map any label values (strings, any ints, a ClassLabel) to contiguous ids in a ``labels`` column.

    Returns the datasets and the label names, index = class id.
    """
    from datasets import ClassLabel

    feature = train.features[label_field]
    if isinstance(feature, ClassLabel):
        names = list(feature.names)
        ids = None
    else:
        values: set[Any] = set(train.unique(label_field))
        if evals is not None:
            values |= set(evals.unique(label_field))
        ordered = ordered_classes(values, label_field)
        names = [str(v) for v in ordered]
        ids = {v: i for i, v in enumerate(ordered)}
        rows = len(train) + (len(evals) if evals is not None else 0)
        check_class_count(label_field, len(names), rows, train.column_names)
    if len(names) < 2:
        raise DataError(
            f'data.label_field: column "{label_field}" has only one class ({", ".join(names) or "none"}); '
            "classification needs at least two"
        )

    def to_ids(batch: dict[str, list[Any]]) -> dict[str, list[int]]:
        col = batch[label_field]
        return {"labels": col if ids is None else [ids[v] for v in col]}

    def apply(ds: Dataset) -> Dataset:
        return ds.map(to_ids, batched=True, desc="encoding labels")

    return apply(train), apply(evals) if evals is not None else None, names


class RowProgress:
    """Says how far a pass over rows has got, as a Status with a real percentage, at each tenth done."""

    def __init__(self, say: Emit, stage: str, total: int) -> None:
        self.say, self.stage, self.total = say, stage, total
        self.done = 0
        self._next_tenth = 1

    def add(self, rows: int) -> None:
        self.done += rows
        tenth = self.done * 10 // max(self.total, 1)
        if tenth >= self._next_tenth:
            self._next_tenth = tenth + 1
            percent = min(100, self.done * 100 // max(self.total, 1))
            self.say(Status(self.stage, f"{percent}% ({self.done:,} of {self.total:,} rows)"))


class _Counted:
    """A map function that counts its rows into a ``RowProgress``. datasets fingerprints a map by pickling its
    function; the count (which holds the run's emitter) stays out of that, so a re-run finds the cached tokens
    instead of warning that the function cannot be hashed and tokenizing again."""

    def __init__(self, fn: Callable[[dict[str, list[Any]]], Any], progress: RowProgress, column: str) -> None:
        self.fn, self.progress, self.column = fn, progress, column

    def __call__(self, batch: dict[str, list[Any]]) -> Any:
        self.progress.add(len(batch[self.column]))
        return self.fn(batch)

    def __getstate__(self) -> dict[str, Any]:
        return {"fn": self.fn, "column": self.column}


def tokenize(
    ds: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    text_field: str,
    max_length: int,
    *,
    task: str,
    progress: RowProgress | None = None,
) -> Dataset:
    """Batched tokenization, truncated to ``max_length`` and padded later per batch (see ``build_collator``).

    Dynamic padding is measured faster than padding every sample to max_length: bench/padding.py.
    """
    keep = {"labels"} if task == "classification" else set()
    remove = [c for c in ds.column_names if c not in keep]

    def fn(batch: dict[str, list[Any]]) -> Any:
        return tokenizer(
            batch[text_field],
            truncation=True,
            max_length=max_length,
            return_special_tokens_mask=task == "masked-lm",
        )

    if progress is not None:
        fn = _Counted(fn, progress, text_field)

    out = ds.map(fn, batched=True, remove_columns=remove, desc="tokenizing")
    out.set_format("torch")
    return out


class BatchSeededMasking:
    """Wraps a masking collator so that the masks of the n-th batch depend only on (seed, n).

    Data loaders collate one batch ahead of training, so masks drawn from the global RNG would depend on
    when a batch was collated, and a run resumed from a checkpoint would mask differently. Set ``position``
    to the number of batches already trained on before iterating again after a resume.
    """

    def __init__(self, collator: Any, seed: int, rank: int = 0) -> None:
        self.collator = collator
        self.seed = seed
        self.rank = rank
        self.position = 0

    def __call__(self, examples: list[Any]) -> Any:
        import torch

        mixed = (self.seed * 1_000_003 + self.rank * 7_919 + self.position) % (2**63 - 1)
        self.collator.generator = torch.Generator().manual_seed(mixed)
        self.position += 1
        return self.collator(examples)


def build_collator(
    task: str,
    tokenizer: PreTrainedTokenizerBase,
    mlm_probability: float = 0.15,
    *,
    pad_to_multiple_of: int | None = None,
) -> Any:
    """Per-batch padding (for classification, up to a multiple of ``pad_to_multiple_of`` tokens); for masked LM,
    real random masking of ``mlm_probability`` of the non-special tokens (labels -100 elsewhere); for causal LM,
    labels = inputs (the model shifts them).

    Masks come from the global RNG; wrap the collator in :class:`BatchSeededMasking` for masks that a resumed
    run reproduces exactly.
    """
    from transformers import DataCollatorForLanguageModeling, DataCollatorWithPadding

    if task == "classification":
        return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of)
    if task == "masked-lm":
        if tokenizer.mask_token is None:
            raise DataError("model.name_or_path: this tokenizer has no mask token, so it cannot train a masked LM")
        return DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=mlm_probability)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return DataCollatorForLanguageModeling(tokenizer, mlm=False)


def sample_lengths(ds: Dataset) -> list[int]:
    """Tokens in each row's ``input_ids``, read from the Arrow column without building the rows."""
    import pyarrow.compute as pc

    lengths: list[int] = pc.list_value_length(ds.with_format("arrow")["input_ids"]).to_pylist()
    return lengths


def length_grouped_sampler(ds: Dataset, step_batch: int, generator: torch.Generator) -> Any:
    """``train.group_by_length``: transformers' ``LengthGroupedSampler`` over ``ds``, shuffled by ``generator``.

    It shuffles, cuts the order into mega-batches of up to 50 batches, and sorts each mega-batch by length, so
    that consecutive runs of ``step_batch`` samples have similar lengths. ``step_batch`` is one optimizer step's
    samples over every process and accumulated batch, so the order (and each step's samples) is the same
    however the step is split: 2 processes of 8, 1 of 16, or 2 accumulated batches of 8.
    """
    from transformers.trainer_pt_utils import LengthGroupedSampler

    return LengthGroupedSampler(step_batch, lengths=sample_lengths(ds), generator=generator)


def check_max_length(max_length: int, tokenizer: PreTrainedTokenizerBase) -> None:
    """Refuse a ``data.max_length`` above what the model's position embeddings can hold."""
    limit = getattr(tokenizer, "model_max_length", None)
    # Tokenizers without a known limit report a huge sentinel (int(1e30)); only a real limit counts.
    if isinstance(limit, int) and limit < 1_000_000 and limit < max_length:
        raise DataError(
            f"data.max_length: {max_length} is above this model's limit of {limit} tokens; use at most {limit}"
        )


@dataclass
class PreparedData:
    train: Dataset
    eval: Dataset | None
    label_names: list[str] = field(default_factory=list)
    #: Which eval set was chosen and its rows (``Splits.eval_set``).
    eval_set: str = ""


def prepare(
    cfg: DataConfig,
    tokenizer: PreTrainedTokenizerBase,
    task: str,
    say: Emit | None = None,
    *,
    needs_eval: str | None = None,
) -> PreparedData:
    """Load, check, subsample, encode labels and tokenize: everything a DataLoader needs; ``say`` hears how
    far tokenizing has got. ``needs_eval``: the setting that needs an eval set (``config.needs_evaluations``),
    refused before any tokenizing when the source gives none."""
    check_max_length(cfg.max_length, tokenizer)
    needs_labels = task == "classification"
    splits = load_splits(cfg, needs_labels=needs_labels)
    if needs_eval is not None and splits.eval is None:
        raise ConfigError(needs_eval, NO_EVAL_SET)
    train, evals = splits.train, splits.eval
    names: list[str] = []
    if needs_labels:
        assert cfg.label_field is not None
        train, evals, names = encode_labels(train, evals, cfg.label_field)

    def progress(split: str, ds: Dataset) -> RowProgress | None:
        return None if say is None else RowProgress(say, f"tokenizing {split}", len(ds))

    train = tokenize(train, tokenizer, cfg.text_field, cfg.max_length, task=task, progress=progress("train", train))
    if evals is not None:
        evals = tokenize(evals, tokenizer, cfg.text_field, cfg.max_length, task=task, progress=progress("eval", evals))
    return PreparedData(train, evals, names, splits.eval_set)
