"""Events a run emits, in order. Plain frozen dataclasses of floats, ints and strings (never tensors), so the
same event means the same thing in-process (Runner subscribers) and on disk (``events.jsonl``)."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Event:
    """Base class; ``type`` is the class name and ``time`` the wall-clock time of emission."""

    #: Step-level events may be replaced by a newer one of the same type when a consumer falls behind.
    can_replace: ClassVar[bool] = False
    time: float = field(default_factory=time.time, kw_only=True)

    @property
    def type(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **dataclasses.asdict(self)}


#: A subscriber: called with each event, on the run's thread; it must never block.
Emit = Callable[[Event], None]


#: The version of ``events.jsonl``'s layout, in each RunStarted: a viewer refuses a newer one than it knows.
EVENTS_FORMAT = 1


@dataclass(frozen=True)
class RunStarted(Event):
    run_dir: str
    run_name: str
    task: str
    engine: str
    model: str
    device: str
    precision: str
    num_parameters: int
    num_train_samples: int
    num_eval_samples: int
    num_epochs: int
    total_steps: int
    batch_size: int
    label_names: list[str] = field(default_factory=list)
    #: Global step the run starts from (non-zero when resumed from a checkpoint).
    start_step: int = 0
    #: Which eval set data.eval_split chose, and its rows: "test split (100 rows)".
    eval_set: str = ""
    #: ``EVENTS_FORMAT`` of the Tunebench that wrote the run.
    format: int = EVENTS_FORMAT
    #: Parameters that train; None when all of them do (full fine-tuning, or a run written before this field).
    trainable_parameters: int | None = None
    #: The adapter that trains instead of the whole model ("LoRA r=8"); "" for full fine-tuning.
    adapter: str = ""
    #: Training processes (launch.num_processes); batch_size is the global batch over all of them.
    num_processes: int = 1
    #: The process group's backend (gloo, nccl) of a many-process run; "" for one process.
    backend: str = ""
    #: Torch's CPU threads, in a run on the CPU; 0 on a GPU (or in a run written before this field). Results on
    #: the CPU differ in their last digits from one count to another, and the workbench leaves a core to its UI.
    cpu_threads: int = 0

    def epoch_at(self, step: int) -> int:
        """The epoch (from 1) that optimizer step ``step`` trains in: losses are logged every few steps, and a
        resumed session starts mid-epoch, so the step tells it."""
        epochs = max(self.num_epochs, 1)
        return min(max(1, math.ceil(step / max(self.total_steps / epochs, 1))), epochs)

    @property
    def compute_text(self) -> str:
        """ "bf16" on a GPU; "bf16, 2 threads" on the CPU."""
        if not self.cpu_threads:
            return self.precision
        return f"{self.precision}, {self.cpu_threads} thread{'' if self.cpu_threads == 1 else 's'}"

    @property
    def parameters_text(self) -> str:
        """ "LoRA r=8 · 0.9 % of 22.7 M parameters trainable", or "22.7 M parameters"."""
        return fmt_parameters(self.num_parameters, self.trainable_parameters, self.adapter)


def text_width(text: str) -> int:
    """Terminal cells ``text`` takes: a CJK character or an emoji takes two (ASCII is counted without Rich)."""
    if text.isascii():
        return len(text)
    from rich.cells import cell_len

    return cell_len(text)


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """ "1 epoch", "3 epochs"; ``nouns`` where the plural is not ``noun`` + s ("processes")."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


def fmt_count(n: float) -> str:
    """``22.7 M``, ``110 k``, ``950``."""
    if n >= 1e9:
        return f"{n / 1e9:.1f} B"
    if n >= 1e6:
        return f"{n / 1e6:.1f} M"
    if n >= 1e4:
        return f"{n / 1e3:.0f} k"
    return f"{n:.0f}"


def fmt_parameters(total: int, trainable: int | None = None, adapter: str = "") -> str:
    """How much of a model trains: "LoRA r=8 · 0.9 % of 22.7 M parameters trainable", or "22.7 M parameters"
    when every parameter does."""
    if trainable is None or (trainable >= total and not adapter):
        return f"{fmt_count(total)} parameters"
    share = 100 * trainable / max(total, 1)
    shown = f"{share:.1f}" if share >= 1 else f"{share:.2g}"
    text = f"{shown} % of {fmt_count(total)} parameters trainable"
    return f"{adapter} · {text}" if adapter else text


#: The stage each engine's process emits first: a run's history starts a new session (a resume) there.
FIRST_STAGE = "loading tokenizer"


@dataclass(frozen=True)
class Status(Event):
    """A stage change before or between training steps ("loading model", "tokenizing", "saving model")."""

    stage: str
    detail: str = ""


@dataclass(frozen=True)
class LogMessage(Event):
    """A warning or library log line; the TUI shows these in its log pane, never on the raw terminal."""

    level: str
    message: str
    logger: str = ""


@dataclass(frozen=True)
class StepDone(Event):
    """An optimizer step is done: every step, for progress; its loss comes with StepLogged at logging steps.

    Progress only: not kept in ``events.jsonl`` (StepLogged, checkpoints and RunFinished hold the history).
    """

    can_replace: ClassVar[bool] = True
    step: int
    total_steps: int


@dataclass(frozen=True)
class DeviceUsage(Event):
    """What the run's device is doing (``engine.resources``), every few seconds while it trains.

    Shown live only: not kept in ``events.jsonl``; the run's peak memory goes into ``summary.json``.
    """

    can_replace: ClassVar[bool] = True
    #: The GPU's name, or "CPU".
    device: str
    #: GPU utilisation (NVML), or the run process's CPU % (100 = one core busy); None when unknown.
    utilization_percent: float | None
    memory_used_mb: float
    memory_total_mb: float | None = None


@dataclass(frozen=True)
class StepLogged(Event):
    can_replace: ClassVar[bool] = True
    step: int
    total_steps: int
    epoch: float
    loss: float
    learning_rate: float
    samples_per_second: float
    elapsed_seconds: float
    eta_seconds: float
    #: Memory allocated on the accelerator, in MiB; None on CPU.
    device_memory_mb: float | None = None


@dataclass(frozen=True)
class EpochEnded(Event):
    epoch: int
    step: int
    train_loss: float
    duration_seconds: float


@dataclass(frozen=True)
class Evaluated(Event):
    #: The epoch at an epoch's end (an int); an evaluation inside an epoch has its fraction (1.5 = mid-epoch 2).
    epoch: float
    step: int
    eval_loss: float
    accuracy: float | None = None
    macro_f1: float | None = None
    perplexity: float | None = None
    duration_seconds: float = 0.0
    #: Classification: counts of (true label, predicted label), rows in RunStarted.label_names order.
    confusion: list[list[int]] | None = None


@dataclass(frozen=True)
class CheckpointSaved(Event):
    step: int
    epoch: float
    path: str


@dataclass(frozen=True)
class Paused(Event):
    step: int


@dataclass(frozen=True)
class Resumed(Event):
    step: int


@dataclass(frozen=True)
class StopRequested(Event):
    step: int


@dataclass(frozen=True)
class RunFinished(Event):
    """The run ended on its own (``finished``) or on request (``stopped``); the model is saved either way."""

    status: str
    step: int
    duration_seconds: float
    model_dir: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    #: The most memory this session of the run held (GPU memory on CUDA, else resident memory), in MiB.
    peak_memory_mb: float | None = None
    #: Why a finished run ended before its last epoch ("stopped early at step 24: ..."), else "".
    note: str = ""


@dataclass(frozen=True)
class RunFailed(Event):
    """The run could not go on. ``user_error`` means the message says what to fix; otherwise ``traceback``
    holds the internal failure for the log pane."""

    error: str
    user_error: bool
    step: int = 0
    traceback: str | None = None


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        RunStarted,
        Status,
        LogMessage,
        StepDone,
        DeviceUsage,
        StepLogged,
        EpochEnded,
        Evaluated,
        CheckpointSaved,
        Paused,
        Resumed,
        StopRequested,
        RunFinished,
        RunFailed,
    )
}
TERMINAL = (RunFinished, RunFailed)
#: Emitted for progress only, never written to ``events.jsonl``.
EPHEMERAL = (StepDone, DeviceUsage)


#: Each event type's fields, looked up once: a viewer attaching to a long run rebuilds 100,000 events.
_FIELDS: dict[str, frozenset[str]] = {
    name: frozenset(f.name for f in dataclasses.fields(cls)) for name, cls in EVENT_TYPES.items()
}


def event_from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event read from ``events.jsonl``; unknown keys from newer versions are ignored. ``data`` is a
    record just parsed: the event may keep it (as its ``__dict__``), so the caller must not use it again."""
    fields = data
    kind = fields.pop("type")
    names = _FIELDS[kind]
    if fields.keys() == names:
        # What this version wrote: every field, nothing else. A frozen dataclass's __init__ sets each field
        # through object.__setattr__; giving it the parsed dict as its __dict__ builds the same object several
        # times faster (an attach rebuilds 100,000 of them).
        event = object.__new__(EVENT_TYPES[kind])
        object.__setattr__(event, "__dict__", fields)
        return event
    if names.issuperset(fields.keys()):  # an older line: the fields it lacks take their defaults
        return EVENT_TYPES[kind](**fields)
    return EVENT_TYPES[kind](**{k: v for k, v in fields.items() if k in names})


def events_from_dicts(records: list[dict[str, Any]]) -> list[Event]:
    """``event_from_dict`` over a run's history, its fast path inlined: an attach to a long run rebuilds every
    event, and two function calls per event were much of the time (docs/perf-log.md, cause 41)."""
    events: list[Event] = []
    append = events.append
    new = object.__new__
    set_dict = object.__setattr__
    types, fields = EVENT_TYPES, _FIELDS
    for record in records:
        kind = record.pop("type")
        if record.keys() == fields[kind]:
            event = new(types[kind])
            set_dict(event, "__dict__", record)
            append(event)
        else:
            record["type"] = kind
            append(event_from_dict(record))
    return events


def fmt_duration(seconds: float | None) -> str:
    """``m:ss`` or ``h:mm:ss``; "-" when unknown."""
    if seconds is None or seconds != seconds or seconds in (float("inf"), float("-inf")):
        return "-"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def fmt_epoch(epoch: float) -> str:
    """``2`` at an epoch's end, ``1.50`` inside one (an evaluation every N steps)."""
    return str(int(epoch)) if float(epoch).is_integer() else f"{epoch:.2f}"


def fmt_memory(mib: float | None) -> str:
    """``812 MiB`` or ``3.4 GiB``; "-" when unknown."""
    if mib is None:
        return "-"
    return f"{mib:.0f} MiB" if mib < 1024 else f"{mib / 1024:.1f} GiB"
