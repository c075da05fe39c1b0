"""Run configuration: typed dataclasses, YAML load/save, validation with key paths, ``--set`` overrides.

Every field carries its own check in ``metadata["check"]``; one generic walker applies them, so the CLI,
the TUI's inline validation and the YAML loader all give the same message for the same mistake.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import functools
import json
import math
import os
import re
import types
from collections.abc import Hashable, Mapping
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from engine.errors import ConfigError
from engine.files import atomic_write_text

Task = Literal["classification", "masked-lm", "causal-lm"]
EngineName = Literal["loop", "sft"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
SaveStrategy = Literal["epoch", "steps", "no"]
EvalStrategy = Literal["epoch", "steps", "no"]
Tracker = Literal["tensorboard", "wandb"]
Backend = Literal["auto", "nccl", "gloo"]
SchedulerType = Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"]

#: Which engines implement which tasks.
SUPPORTED: dict[str, tuple[str, ...]] = {
    "loop": ("classification", "masked-lm", "causal-lm"),
    "sft": ("masked-lm", "causal-lm"),
}


@dataclass(frozen=True)
class Check:
    """Range rules for one field; the type comes from the annotation."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def describe(self, kind: str) -> str:
        a = "an" if kind[0] in "aeiou" else "a"
        if self.gt == 0 and self.lt is None and self.le is None:
            return f"a positive {kind}"
        lo = f"({_num(self.gt)}" if self.gt is not None else f"[{_num(self.ge)}" if self.ge is not None else "(-inf"
        hi = f"{_num(self.lt)})" if self.lt is not None else f"{_num(self.le)}]" if self.le is not None else "inf)"
        if self.ge is not None and self.lt is None and self.le is None:
            return f"{a} {kind} >= {_num(self.ge)}"
        return f"{a} {kind} in {lo}, {hi}"

    def ok(self, v: float) -> bool:
        return (
            (self.gt is None or v > self.gt)
            and (self.ge is None or v >= self.ge)
            and (self.lt is None or v < self.lt)
            and (self.le is None or v <= self.le)
        )


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"  # 4294967295, not 4.29497e+09


def _f(default: Any, doc: str, check: Check | None = None) -> Any:
    return field(default=default, metadata={"doc": doc, "check": check})


#: The metrics each task's evaluation reports (``Evaluated``), without the "eval_" prefix of the loss.
EVAL_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("loss", "accuracy", "macro_f1"),
    "masked-lm": ("loss", "perplexity", "accuracy"),
    "causal-lm": ("loss", "perplexity", "accuracy"),
}
#: What a prediction does with a model trained for each task.
PREDICT_MODES = {"masked-lm": "fill-mask", "classification": "classify", "causal-lm": "generate"}
#: Metrics where smaller is better; greater_is_better: null infers from this.
LOWER_IS_BETTER = ("loss", "perplexity")


def metric_greater_is_better(metric: str) -> bool:
    """Whether a larger value of an ``Evaluated`` metric is better (the LOWER_IS_BETTER rule)."""
    return metric.removeprefix("eval_") not in LOWER_IS_BETTER


def best_direction(train: TrainConfig) -> tuple[str, bool]:
    """(metric without the "eval_" prefix, whether greater is better) of ``train.metric_for_best_model``."""
    metric = train.metric_for_best_model.removeprefix("eval_")
    greater = train.greater_is_better
    return metric, metric_greater_is_better(metric) if greater is None else greater


#: Held out of train when the source has no eval split; a named eval_split ignores it (one other value is an error).
DEFAULT_EVAL_FRACTION = 0.1

POSITIVE = Check(gt=0)
NON_NEGATIVE = Check(ge=0)
AT_LEAST_ONE = Check(ge=1)
SEED = Check(ge=0, le=2**32 - 1)  # numpy's seeds, which transformers.set_seed sets too
EPOCHS = Check(ge=1, le=100_000)  # beyond, a typo (1e20) that would train for ever
FRACTION = Check(gt=0, lt=1)


#: ``model.lora.target_modules`` and ``modules_to_save``: let the model's architecture decide.
AUTO = "auto"


def _names(default: list[str], doc: str) -> Any:
    return field(default_factory=lambda: list(default), metadata={"doc": doc, "check": None})


@dataclass
class LoraConfig:
    r: int = _f(8, "Rank of the adapter matrices: more is more capacity and more trainable weights.", AT_LEAST_ONE)
    alpha: int = _f(16, "Scale of the adapter's update (it is multiplied by alpha / r).", AT_LEAST_ONE)
    dropout: float = _f(0.05, "Dropout on the adapter's input while training.", Check(ge=0, lt=1))
    target_modules: list[str] = _names(
        [AUTO], "Layers that get adapters: auto = the attention projections (query, key, value / c_attn / q_proj ...)."
    )
    modules_to_save: list[str] = _names(
        [AUTO], "Modules trained in full beside the adapters: auto = a classifier's head (none for language models)."
    )


@dataclass
class ModelConfig:
    name_or_path: str = _f("minilm", 'Hub id, local folder, or the bundled alias "minilm".')
    num_labels: int | None = _f(None, "Classifier size; null takes it from the data.", AT_LEAST_ONE)
    trust_remote_code: bool = _f(False, "Run code shipped with a hub model. Only for models you trust.")
    lora: LoraConfig | None = _f(
        None, "LoRA adapters (peft) instead of training every weight, e.g. {r: 8}; null = full fine-tuning."
    )
    load_in_4bit: bool = _f(False, "QLoRA: load the frozen base model in 4 bits (bitsandbytes, CUDA only; needs lora).")
    load_in_8bit: bool = _f(False, "Load the frozen base model in 8 bits (bitsandbytes, CUDA only; needs lora).")


@dataclass
class DataConfig:
    source: str = _f("reviews-sample", "Hub id, local file or folder, or a bundled sample name.")
    text_field: str = _f("text", "Column that holds the text.")
    label_field: str | None = _f("label", "Column that holds the label (classification).")
    train_split: str = _f("train", "Split to train on.")
    eval_split: str | None = _f(
        "auto", "auto = the validation split, else test, else hold out eval_fraction; a split name; null = hold out."
    )
    eval_fraction: float | None = _f(
        DEFAULT_EVAL_FRACTION, "Share of train held out for eval when no split is used; null = no eval then.", FRACTION
    )
    train_size: int | None = _f(None, "Subsample of train after a seeded shuffle; null = all.", AT_LEAST_ONE)
    eval_size: int | None = _f(None, "Subsample of eval after a seeded shuffle; null = all.", AT_LEAST_ONE)
    max_length: int = _f(128, "Tokens per sample; longer texts are truncated.", Check(ge=8))
    shuffle_seed: int = _f(42, "Seed of the shuffle before subsampling.", NON_NEGATIVE)


@dataclass
class TrainConfig:
    learning_rate: float = _f(5.0e-5, "Peak learning rate of AdamW.", POSITIVE)
    num_train_epochs: int = _f(3, "Passes over the training data.", EPOCHS)
    per_device_train_batch_size: int = _f(16, "Samples per training step on each device.", AT_LEAST_ONE)
    per_device_eval_batch_size: int = _f(32, "Samples per eval step on each device.", AT_LEAST_ONE)
    weight_decay: float = _f(0.0, "AdamW weight decay.", NON_NEGATIVE)
    warmup_ratio: float = _f(0.0, "Share of steps spent warming the learning rate up.", Check(ge=0, lt=1))
    lr_scheduler_type: SchedulerType = _f("linear", "Learning-rate schedule (transformers.get_scheduler).")
    gradient_accumulation_steps: int = _f(1, "Batches whose gradients add up to one step.", AT_LEAST_ONE)
    max_grad_norm: float = _f(1.0, "Gradient clipping norm; 0 turns clipping off.", NON_NEGATIVE)
    seed: int = _f(42, "Seed for weights init, dropout and data order.", SEED)
    precision: Precision = _f("auto", "auto = bf16 on GPUs and CPUs that compute it natively, else fp32.")
    device: str = _f("auto", "auto | cpu | cuda | cuda:N | mps")
    logging_steps: int = _f(10, "Optimizer steps between loss events.", AT_LEAST_ONE)
    mlm_probability: float = _f(0.15, "Share of tokens masked for masked-LM training.", FRACTION)
    save_strategy: SaveStrategy = _f(
        "epoch", "When to write a checkpoint: epoch | steps | no (a stopped run still saves one to resume from)."
    )
    save_steps: int = _f(500, "Optimizer steps between checkpoints when save_strategy is steps.", AT_LEAST_ONE)
    save_total_limit: int | None = _f(2, "Checkpoints kept; older ones are deleted. null keeps all.", AT_LEAST_ONE)
    torch_threads: int | None = _f(
        None, "CPU threads for torch; null = one per core headless, all but one in the workbench.", AT_LEAST_ONE
    )
    auto_find_batch_size: bool = _f(False, "On out-of-memory, halve per_device_train_batch_size and start over.")
    eval_strategy: EvalStrategy = _f(
        "epoch", "When to evaluate: epoch | steps (every eval_steps) | no (needs an eval set to do anything)."
    )
    eval_steps: int | None = _f(
        None, "Optimizer steps between evaluations when eval_strategy is steps; null = logging_steps.", AT_LEAST_ONE
    )
    load_best_model_at_end: bool = _f(
        False, "model/ gets the best evaluated checkpoint's weights; needs save_strategy equal to eval_strategy."
    )
    metric_for_best_model: str = _f(
        "eval_loss", "Eval metric that decides the best model and early stopping: eval_loss, accuracy, macro_f1, ..."
    )
    greater_is_better: bool | None = _f(None, "Whether a larger metric is better; null infers it from the metric.")
    early_stopping_patience: int | None = _f(
        None, "Stop after this many evaluations without improvement; null = never stop early.", AT_LEAST_ONE
    )
    early_stopping_threshold: float = _f(
        0.0, "How much the metric must improve on the best to count as an improvement.", NON_NEGATIVE
    )
    gradient_checkpointing: bool = _f(
        False, "Recompute activations in the backward pass: much less memory for about a third more time a step."
    )
    torch_compile: bool = _f(
        False, "Compile the model with torch.compile: faster steps on a GPU after a slow first one."
    )
    group_by_length: bool = _f(
        True, "Batch samples of similar length together (shuffled in groups): less padding; false = plain shuffle."
    )


@dataclass
class OutputConfig:
    runs_dir: str = _f("runs", "Folder that holds one subfolder per run.")
    run_name: str | None = _f(None, "Suffix of the run folder name; null = task and model.")
    report_to: list[Tracker] = field(
        default_factory=list,
        metadata={"doc": "Also log the scalars to tensorboard and/or wandb (comma-separated).", "check": None},
    )
    parent: str | None = _f(None, "The run this config was cloned from (its folder name); null = none.")
    sweep: str | None = _f(None, "The sweep this run belongs to (tunebench sweep sets it); null = none.")


#: ``launch.num_processes``: one process per visible GPU (1 on CPU).
ProcessCount = int | Literal["auto"]


@dataclass
class LaunchConfig:
    num_processes: ProcessCount = _f(
        1, "Training processes (torchrun): an integer, or auto = one per visible GPU (1 on CPU).", AT_LEAST_ONE
    )
    backend: Backend = _f("auto", "Process-group backend: auto = nccl on CUDA, gloo on CPU.")
    accelerate_config: str | None = _f(
        None, "An accelerate config file (FSDP, DeepSpeed, many machines): runs accelerate launch with it."
    )
    gpu_ids: str | None = _f(None, 'GPUs the run may use, e.g. "0,1" (CUDA_VISIBLE_DEVICES); null = all.')


@dataclass
class RunConfig:
    task: Task = _f("classification", "classification | masked-lm | causal-lm")
    engine: EngineName = _f("loop", "loop (plain PyTorch) | sft (TRL SFTTrainer)")
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "output": OutputConfig,
    "launch": LaunchConfig,
}


# ---------------------------------------------------------------------------------------------------------
# Field-level coercion


#: What train.device (and tunebench predict --device) accepts, as its errors say it.
DEVICES = "auto, cpu, cuda, cuda:N or mps"


def valid_device(device: str) -> bool:
    return device in ("auto", "cpu", "cuda", "mps") or (device.startswith("cuda:") and device[5:].isdigit())


def _show(v: Any) -> str:
    if isinstance(v, str):
        # json.dumps escapes newlines and control characters: a message stays one line whatever the value
        return json.dumps(v if len(v) <= 60 else v[:57] + "...", ensure_ascii=False)
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict | list):
        return "a mapping" if isinstance(v, dict) else "a list"
    if isinstance(v, datetime.date):
        return v.isoformat()
    return repr(v)


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``(X, True)`` for ``X | None``, else ``(tp, False)``."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _alternatives(tp: Any) -> tuple[Any, ...]:
    """The members of a union that is not just ``X | None`` (``int | Literal["auto"]``); () for any other type."""
    if get_origin(tp) in (Union, types.UnionType) and type(None) not in get_args(tp):
        return get_args(tp)
    return ()


#: Short names people type for a choice, which difflib does not match: the hint names the choice.
_ABBREVIATIONS = {"mlm": "masked-lm", "clm": "causal-lm", "lm": "causal-lm", "cls": "classification"}


def _expected(tp: Any, check: Check | None) -> str:
    if _alternatives(tp):
        return " or ".join(_expected(member, check).removeprefix("one of ") for member in _alternatives(tp))
    if dataclasses.is_dataclass(tp):
        return f"a mapping of keys ({', '.join(f.name for f in fields(tp))})"
    if get_origin(tp) is list:
        if get_args(tp)[0] is str:
            return "a list of names"
        return "a list from " + _expected(get_args(tp)[0], check).removeprefix("one of ")
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(str(a) for a in get_args(tp))
    if tp is bool:
        return "true or false"
    if tp is int:
        return check.describe("integer") if check else "an integer"
    if tp is float:
        return check.describe("number") if check else "a number"
    return "a string"


def coerce_value(path: str, tp: Any, check: Check | None, value: Any) -> Any:
    """Return ``value`` as the field's type, or raise ConfigError naming ``path``."""
    inner, optional = unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        empty = " ([] for none)" if get_origin(inner) is list else ""
        raise ConfigError(path, f"expected {_expected(inner, check)}{empty}, got null")
    if isinstance(inner, type) and dataclasses.is_dataclass(inner):  # a block inside a section (model.lora)
        return _build_section(inner, path, value)
    want = _expected(inner, check)
    bad = ConfigError(path, f"expected {want}, got {_show(value)}")
    if _alternatives(inner):
        for member in _alternatives(inner):
            try:
                return coerce_value(path, member, check, value)
            except ConfigError:
                continue
        raise bad
    if get_origin(inner) is list:
        if isinstance(value, str):  # what a form or --set gives: "tensorboard, wandb"
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list):
            raise bad
        items = [coerce_value(path, get_args(inner)[0], check, item) for item in value]
        return list(dict.fromkeys(items))  # each once, in the order given
    if get_origin(inner) is Literal:
        choices = get_args(inner)
        if value is False and "no" in choices:  # YAML 1.1 reads a bare no as false
            return "no"
        if isinstance(value, str) and value in choices:
            return value
        hint = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        if not hint and _ABBREVIATIONS.get(str(value).lower()) in choices:  # too short for difflib to match
            hint = [_ABBREVIATIONS[str(value).lower()]]
        extra = f' (did you mean "{hint[0]}"?)' if hint else ""
        raise ConfigError(path, f"expected {want}, got {_show(value)}{extra}")
    if inner is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if inner is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        elif isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
            value = int(value.strip())
        elif isinstance(value, str):  # "1e3": YAML 1.1 reads exponents without a dot as strings
            number = _float_or_none(value)
            if number is not None and number.is_integer():
                value = int(number)
        if not isinstance(value, int) or (check and not check.ok(value)):
            raise bad
        return value
    if inner is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, str):
            # YAML 1.1 reads "5e-5" (no dot) as a string; accept what people actually write.
            try:
                value = float(value)
            except ValueError:
                raise bad from None
        if not isinstance(value, int | float):
            raise bad
        try:
            value = float(value)
        except OverflowError:  # an integer too large for a float
            raise bad from None
        if not math.isfinite(value) or (check and not check.ok(value)):
            raise bad
        return value
    if inner is str:
        if isinstance(value, str) and value.strip():
            return value
        if isinstance(value, str):
            raise ConfigError(path, "expected a non-empty string")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, datetime.date):  # YAML reads a bare 2024-01-01 as a date; as a name it is text
            return value.isoformat()
        raise bad
    raise TypeError(f"unsupported field type {tp!r} at {path}")  # a bug in this module, not the user's


_INT_TEXT = re.compile(r"[+-]?[0-9]+")


def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


@functools.cache
def _hints(cls: type) -> types.MappingProxyType[str, Any]:
    # Once per class: get_type_hints evaluates each annotation's text again on every call, half of a config's
    # validation (each Config panel edit, each run of a sweep).
    return types.MappingProxyType(get_type_hints(cls))


@functools.cache
def _fields(cls: type) -> types.MappingProxyType[str, Field[Any]]:
    return types.MappingProxyType({f.name: f for f in fields(cls)})


def _key_text(key: Any) -> str:
    """A key as it can appear in a one-line message (quoted and escaped when it is not a plain name)."""
    text = str(key)
    return text if text.isprintable() and text.strip() == text and text else _show(text)


def _unknown_key(path: str, key: Any, known: list[str]) -> ConfigError:
    where = f"{path}.{_key_text(key)}" if path else _key_text(key)
    name, colon, value = str(key).partition(":")
    if colon and name.strip() in known:  # {r:8}: YAML reads "r:8" as one key; a value needs the space
        return ConfigError(where, f'unknown key; write "{name.strip()}: {value.strip()}", with a space after the colon')
    hint = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    extra = f' (did you mean "{hint[0]}"?)' if hint else f" (known keys: {', '.join(known)})"
    return ConfigError(where, f"unknown key{extra}")


def _build_section(cls: type, path: str, raw: Any) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, Mapping):
        what = "a mapping of keys" if path in SECTIONS else _expected(cls, None)
        raise ConfigError(path, f"expected {what}, got {_show(raw)}")
    hints = _hints(cls)
    known = _fields(cls)
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in hints:
            raise _unknown_key(path, key, list(known))
        f = known[key]
        kwargs[key] = coerce_value(f"{path}.{key}", hints[key], f.metadata.get("check"), value)
    return cls(**kwargs)


def from_dict(raw: Any) -> RunConfig:
    """Build and validate a RunConfig from a parsed YAML document."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError("", f"the config must be a mapping of sections (task, model, data, ...), got {_show(raw)}")
    hints = _hints(RunConfig)
    known = _fields(RunConfig)
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise _unknown_key("", key, list(known))
        if key in SECTIONS:
            kwargs[key] = _build_section(SECTIONS[key], key, value)
        else:
            f = known[key]
            kwargs[key] = coerce_value(key, hints[key], f.metadata.get("check"), value)
    cfg = RunConfig(**kwargs)
    check_consistency(cfg)
    return cfg


def check_consistency(cfg: RunConfig) -> None:
    """Rules that span several fields."""
    if cfg.task not in SUPPORTED[cfg.engine]:
        others = [e for e, tasks in SUPPORTED.items() if cfg.task in tasks]
        raise ConfigError(
            "engine",
            f'engine "{cfg.engine}" does not train task "{cfg.task}"; use engine: {" or ".join(others)}',
        )
    metric = cfg.train.metric_for_best_model
    known = EVAL_METRICS[cfg.task]
    if metric.removeprefix("eval_") not in known:
        hint = difflib.get_close_matches(metric.removeprefix("eval_"), known, n=1)
        extra = f' (did you mean "{hint[0]}"?)' if hint else ""
        raise ConfigError(
            "train.metric_for_best_model",
            f"{_show(metric)} is not an eval metric of {cfg.task}; use one of {', '.join(known)}{extra}",
        )
    natural, greater = metric_greater_is_better(metric), cfg.train.greater_is_better
    if greater is not None and greater != natural:
        name = metric.removeprefix("eval_")
        raise ConfigError(
            "train.greater_is_better",
            f"{str(greater).lower()} would keep the worst evaluation: {name} is better "
            f"{'higher' if natural else 'lower'}; set it to {str(natural).lower()} or null (null follows the metric)",
        )
    _check_evaluation_schedule(cfg)
    split, fraction = cfg.data.eval_split, cfg.data.eval_fraction
    if split not in (None, "auto") and fraction not in (None, DEFAULT_EVAL_FRACTION):
        raise ConfigError(
            "data.eval_fraction",
            f'{fraction} holds out part of train, but data.eval_split names the split "{split}"; '
            "set data.eval_split: null to hold out that share instead, or drop eval_fraction",
        )
    if cfg.task == "classification" and not cfg.data.label_field:
        raise ConfigError("data.label_field", "classification needs a label column; name it here")
    if not valid_device(cfg.train.device):
        raise ConfigError("train.device", f"expected {DEVICES}, got {_show(cfg.train.device)}")
    _check_adapters(cfg.model)
    _check_launch(cfg.launch)


_GPU_IDS = re.compile(r"[0-9]+(,[0-9]+)*")


def _is_file(path: str) -> bool:
    """Whether ``path`` names a file; a name the system refuses (too long, a NUL in it) names none."""
    try:
        return Path(path).expanduser().is_file()
    except (OSError, ValueError, RuntimeError):  # RuntimeError: ~user of no such user
        return False


def _check_launch(launch: LaunchConfig) -> None:
    """What can be told from the config alone; the GPUs and cores there are are checked when the run launches
    (``engine.detached.check_launch``)."""
    if launch.gpu_ids is not None:
        if not _GPU_IDS.fullmatch(launch.gpu_ids.replace(" ", "")):
            raise ConfigError("launch.gpu_ids", f'expected GPU numbers such as "0,1", got {_show(launch.gpu_ids)}')
        ids = [int(i) for i in launch.gpu_ids.replace(" ", "").split(",")]  # 0 and 00 are one GPU
        twice = next((i for i in ids if ids.count(i) > 1), None)
        if twice is not None:
            raise ConfigError(
                "launch.gpu_ids", f"GPU {twice} is named twice in {_show(launch.gpu_ids)}; name each once"
            )
    if launch.accelerate_config is not None:
        problem = _accelerate_config_problem(launch.accelerate_config)
        if problem is not None:
            raise ConfigError(
                "launch.accelerate_config",
                f"{_show(launch.accelerate_config)} {problem}; write one with accelerate config, or set it to null",
            )


def _accelerate_config_problem(path: str) -> str | None:
    """Why the file cannot be accelerate's settings (a YAML or JSON mapping), or None; read here, the launcher
    would fail on it after the run's folder was made."""
    if not _is_file(path):
        return "is not a file"
    try:
        loaded = yaml.safe_load(Path(path).expanduser().read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return f"cannot be read ({getattr(exc, 'strerror', None) or exc})"
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        return "is not YAML" + (f" (line {mark.line + 1})" if mark is not None else "")
    if loaded is None:
        return "is empty"
    if not isinstance(loaded, dict):
        return f"holds a {type(loaded).__name__}, not accelerate's settings"
    return None


def _check_adapters(m: ModelConfig) -> None:
    """LoRA's module lists and quantization; whether the modules exist is checked when the model loads."""
    if m.lora is not None:
        for key in ("target_modules", "modules_to_save"):
            names = getattr(m.lora, key)
            if AUTO in names and len(names) > 1:
                raise ConfigError(
                    f"model.lora.{key}", f"give auto alone or a list of module names, not both: {', '.join(names)}"
                )
        if not m.lora.target_modules:
            raise ConfigError("model.lora.target_modules", "expected at least one module name, or auto")
    if m.load_in_4bit and m.load_in_8bit:
        raise ConfigError("model.load_in_8bit", "load_in_4bit is on too; pick one of the two")
    for key in ("load_in_4bit", "load_in_8bit"):
        if getattr(m, key) and m.lora is None:
            raise ConfigError(
                f"model.{key}",
                "a quantized model trains only through adapters; set model.lora (e.g. --set model.lora.r=8) or "
                f"turn {key} off",
            )


def eval_every(train: TrainConfig) -> int:
    """Optimizer steps between evaluations under ``eval_strategy: steps`` (transformers' default: logging_steps)."""
    return train.eval_steps or train.logging_steps


#: Why a run that ``needs_evaluations`` cannot have them when its data holds no eval set.
NO_EVAL_SET = (
    "needs evaluations, but the run has no eval set; name a split in data.eval_split, or set data.eval_fraction "
    "to hold out a share of train"
)


def needs_evaluations(t: TrainConfig) -> str | None:
    """The setting that needs the run to evaluate (early stopping, the best model at the end), if any."""
    if t.early_stopping_patience is not None:
        return "train.early_stopping_patience"
    return "train.load_best_model_at_end" if t.load_best_model_at_end else None


def _check_evaluation_schedule(cfg: RunConfig) -> None:
    """Early stopping and the best model need evaluations, so an eval set; the best model also a checkpoint at
    each of them (transformers' TrainingArguments rules, with the setting that fixes them named). Whether a
    source has an eval split is known once it loads (``engine.data.prepare`` checks that)."""
    t = cfg.train
    needs = needs_evaluations(t)
    if needs is not None and t.eval_strategy == "no":
        raise ConfigError(needs, "needs evaluations, but train.eval_strategy is no; set it to epoch or steps")
    if needs is not None and cfg.data.eval_split is None and cfg.data.eval_fraction is None:
        raise ConfigError(needs, NO_EVAL_SET)
    if t.eval_strategy == "no":
        return
    if not t.load_best_model_at_end:
        return
    if t.save_strategy != t.eval_strategy:
        raise ConfigError(
            "train.load_best_model_at_end",
            f"needs a checkpoint at every evaluation; set train.save_strategy: {t.eval_strategy} "
            f"(now {t.save_strategy}) to match train.eval_strategy",
        )
    every = eval_every(t)
    if t.eval_strategy == "steps" and t.save_steps % every:
        raise ConfigError(
            "train.save_steps",
            f"{t.save_steps} is not a multiple of the {every} steps between evaluations, so the best model may "
            f"have no checkpoint; set train.save_steps: {every * max(1, t.save_steps // every)}",
        )


def validate_field(cfg: RunConfig, path: str, value: Any) -> RunConfig:
    """Return a copy of ``cfg`` with ``path`` set to ``value``, validated; the TUI calls this per keystroke.

    A key inside a block that is off (``model.lora.r`` while ``model.lora`` is null) turns the block on.
    """
    raw = cfg.to_dict()
    section, _, key = path.partition(".")
    if key and section not in SECTIONS:
        raise _unknown_key("", section, list(SECTIONS))
    _set_path(raw, path.split("."), value)
    return from_dict(raw)


def _set_path(raw: dict[str, Any], parts: list[str], value: Any) -> None:
    """``raw[a][b][c] = value`` for ``parts`` [a, b, c]; a null on the way becomes a mapping (``model.lora.r=8``
    turns model.lora on), any other value on the way is refused, as the config would refuse it."""
    where = raw
    for depth, part in enumerate(parts[:-1], 1):
        inner = where.get(part)
        if inner is not None and not isinstance(inner, Mapping):
            raise ConfigError(".".join(parts[:depth]), f"expected a mapping of keys, got {_show(inner)}")
        where[part] = dict(inner) if isinstance(inner, Mapping) else {}
        where = where[part]
    where[parts[-1]] = value


def off_blocks(cfg: RunConfig) -> dict[str, list[str]]:
    """The blocks of keys that ``cfg`` leaves off ("model.lora": null), each with the keys it would hold."""
    out: dict[str, list[str]] = {}
    for section, cls in SECTIONS.items():
        for block, block_cls in _blocks(cls).items():
            if getattr(getattr(cfg, section), block) is None:
                out[f"{section}.{block}"] = [f.name for f in fields(block_cls)]
    return out


def _blocks(cls: type) -> dict[str, type]:
    """The fields of ``cls`` that are blocks of keys of their own (``model.lora``): name -> dataclass."""
    hints = _hints(cls)
    out: dict[str, type] = {}
    for f in fields(cls):
        inner, _optional = unwrap_optional(hints[f.name])
        if isinstance(inner, type) and dataclasses.is_dataclass(inner):
            out[f.name] = inner
    return out


def field_docs() -> dict[str, str]:
    """Dotted key path -> one-line help, for forms and ``--help`` output (a block's keys too: ``model.lora.r``)."""
    docs = {f.name: f.metadata["doc"] for f in fields(RunConfig) if f.name not in SECTIONS}
    for name, cls in SECTIONS.items():
        docs.update({f"{name}.{f.name}": f.metadata["doc"] for f in fields(cls)})
        for block, block_cls in _blocks(cls).items():
            docs.update({f"{name}.{block}.{f.name}": f.metadata["doc"] for f in fields(block_cls)})
    return docs


# ---------------------------------------------------------------------------------------------------------
# YAML and overrides


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, problem: str, line: int) -> None:
        super().__init__(problem)
        self.problem, self.line = problem, line


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping: PyYAML keeps the last one without a word,
    so a second ``train:`` section would drop the first one's keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # <<: *base, whose keys the mapping's own override
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, Hashable) and key in seen:
                raise _DuplicateKey(f"{key} is given twice (first at line {seen[key]}); keep one", line)
            if isinstance(key, Hashable):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, source: str = "<config>") -> Any:
    try:
        loader = _UniqueKeyLoader(text)  # what yaml.load does, with this safe loader
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except _DuplicateKey as exc:
        raise ConfigError("", f"{source}: line {exc.line}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError("", f"{source}: YAML syntax error{where}: {problem}") from None
    except RecursionError:  # PyYAML composes nested nodes recursively
        raise ConfigError("", f"{source}: nested too deeply to read; a config is a few levels deep") from None


def examples_folder() -> str:
    """The example configs as the user can reach them from here: ``sample_configs/`` in a checkout, the source
    tree's folder by its full path from elsewhere."""
    if Path("sample_configs").is_dir():
        return "sample_configs/"
    beside = Path(__file__).resolve().parent.parent / "sample_configs"
    return f"{beside}/" if beside.is_dir() else "sample_configs/ in Tunebench's source"


def config_path(path: str | os.PathLike[str]) -> Path:
    """A config file's path with ``~`` expanded: a quoted ~ (a shell leaves it), or one typed into the workbench's
    file field. ConfigError for ``~name`` of no user on this machine."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        user = str(path)[1:].partition("/")[0]
        raise ConfigError("", f"{path}: no user {user!r} on this machine; give the path whole") from None


def load_config(path: str | os.PathLike[str], overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config, apply ``key.path=value`` overrides, and validate the result."""
    p = config_path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("", f"{p}: config file not found; see {examples_folder()} for examples") from None
    except IsADirectoryError:
        raise ConfigError("", f"{p}: is a folder; pass a .yaml config file") from None
    except UnicodeDecodeError:
        raise ConfigError("", f"{p}: not UTF-8 text; save the config as UTF-8") from None
    except OSError as exc:
        raise ConfigError("", f"{p}: cannot read ({exc.strerror})") from None
    raw = parse_yaml(text, str(p))
    if raw is None:  # an empty file, or only comments: not a request to train the defaults
        raise ConfigError(
            "", f"{p}: the config is empty; set at least task, model and data ({examples_folder()} has examples)"
        )
    if not isinstance(raw, Mapping):
        raise ConfigError(
            "", f"{p}: the config must be a mapping of sections (task, model, data, ...), got {_show(raw)}"
        )
    known = [f.name for f in fields(RunConfig)]
    if not any(difflib.get_close_matches(str(key), known, n=1, cutoff=0.6) for key in raw):
        # Another kind of file, not a config with a typo: its first key would be a line of it in the message.
        raise ConfigError(
            "",
            f"{p}: not a Tunebench config (none of its keys is {', '.join(known)}); {examples_folder()} has examples",
        )
    if overrides:
        raw = apply_overrides(raw, overrides)
    return from_dict(raw)


def apply_overrides(raw: Any, overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings to a raw config mapping; values are parsed as YAML scalars."""
    out: dict[str, Any] = dict(raw) if isinstance(raw, Mapping) else {}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError("--set", f"expected key.path=value, got {_show(item)}")
        value = parse_yaml(text, f"--set {key}") if text.strip() else None
        section, _, name = key.partition(".")
        if name and section not in SECTIONS:
            raise _unknown_key("", section, [f.name for f in fields(RunConfig)])
        _set_path(out, key.split("."), value)  # model.lora.r=8 turns model.lora on; model.lora=null off
    return out


def save_config(cfg: RunConfig, path: str | os.PathLike[str]) -> None:
    """Write the config as YAML, whole (see ``engine.files``; ``engine.presets`` writes into a preset's text)."""
    atomic_write_text(config_path(path), cfg.to_yaml())
