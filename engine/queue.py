"""The run queue and grid sweeps: configs waiting in the runs folder, started one after another (or N at a time,
one per GPU) by the queue runner, a process of its own session that outlives the terminal and the workbench.

Everything lives in ``RUNS/.queue/`` (``list_runs`` skips dot-folders):

- ``queue.json``: ``{"format": 1, "next_id": N, "entries": [...]}``, the entries in queue order (see
  ``QueueEntry``). Each change reads it, changes it and writes it whole (``engine.files``) while holding ``lock``
  (fcntl), so two processes changing the queue at once never lose an entry.
- ``runner.lock``: held by the queue runner for its whole life, with its pid inside; a second runner on the same
  runs folder sees it and exits, so two never start the same entry.
- ``claims/<id>.lock``: locked by the runner just before it starts an entry's run, and inherited by the run's
  process, which holds it until it ends: whether an entry's process lives is known even before the run has taken
  its own lock, and even after the runner that started it was killed.
- ``stop``: left by ``tunebench queue stop``; the runner exits at its next look (runs already started go on).
- ``stdout.log``, ``stderr.log``: the runner's output.

An entry is ``queued``, then ``claimed`` (its run folder's name is fixed; the runner is starting it), then
``started`` (its run folder holds the run, followed like any other: ``tunebench follow|stop RUN``) or ``failed``
(it could not start; ``error`` says why in one line).

The claim, and why a killed runner never makes a run start twice: the runner (1) marks the entry claimed with its
run folder's name, (2) locks the entry's claim file, (3) makes the folder and its config.yaml, (4) starts the
run's process, which inherits the claim lock, and (5) marks the entry started once the run trains. A new runner
looks at each entry left claimed: a held claim lock means its process lives; a run lock file (``.lock``, made by
the run's process before it trains) or an event in the folder means a process ran it; either way the entry is
started and never started again. Otherwise no process of it ever reached training (the runner died before (4), or
its process died before taking the run's lock), so its folder is removed and the entry queued again: the one case
where an entry starts again, and only its second start can train.

Kill points (``TUNEBENCH_KILL_AT``, engine.faults) in the runner, for tests of each step of the claim:
``queue-claimed`` (after 1), ``queue-folder`` (after 3), ``queue-spawned`` (after 4).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from engine.config import RunConfig, apply_overrides, config_path, from_dict, load_config, parse_yaml
from engine.errors import ConfigError, UserError
from engine.events import plural
from engine.faults import kill_point
from engine.files import atomic_write_text
from engine.runs import (
    DEFAULT_RUNS_DIR,
    EVENTS_FILE,
    LOCK_FILE,
    RunDir,
    RunInfo,
    default_run_name,
    runs_dir_option,
    slugify,
)

if TYPE_CHECKING:
    import argparse

    from engine.live import EventFollower

QUEUE_DIR = ".queue"
QUEUE_FILE = "queue.json"
QUEUE_LOCK = "lock"
RUNNER_LOCK = "runner.lock"
CLAIMS_DIR = "claims"
STOP_FILE = "stop"
RUNNER_STDOUT = "stdout.log"
RUNNER_STDERR = "stderr.log"
#: The layout of queue.json; a reader refuses a newer one.
QUEUE_FORMAT = 1

QUEUED, CLAIMED, STARTED, FAILED = "queued", "claimed", "started", "failed"
#: What ``run_status`` says of an entry that will not change by itself any more.
ENDED = ("finished", "stopped", "failed", "killed", "gone", "removed")

#: How often the runner looks for new entries, a stop, and runs that ended: a read of a small file.
POLL_SECONDS = 0.5
#: How long the runner waits before it tries again when the queue cannot be read or written.
PROBLEM_SECONDS = 10.0
#: How often ``tunebench sweep --follow`` looks at the sweep's runs.
FOLLOW_SECONDS = 1.0
#: How long a lock is tried before it counts as held by someone else: a probe (``queue ls``) holds one for
#: microseconds, a runner or a run's process for its whole life.
LOCK_TRY_SECONDS = 1.0
#: How long ``start_runner`` waits for the runner to hold its lock, and ``stop_runner`` for it to exit.
START_WAIT_SECONDS = 15.0
#: How long a sweep's --follow waits for a queue runner that is not there (a slow one may take the lock only
#: after start_runner gave up waiting for it) before it says none runs.
RUNNER_GONE_SECONDS = START_WAIT_SECONDS + 5.0
STOP_WAIT_SECONDS = 10.0
#: How long the runner waits for a run's process to end after the run said it failed to start.
FAILED_EXIT_SECONDS = 10.0
#: The runner's exit code when another runner holds the runs folder.
EXIT_RUNNER_RUNNING = 3
#: Short names of common grid keys, for run folder names that say what they are ("lr1e-5_bs8").
SHORT_KEYS = {
    "learning_rate": "lr",
    "per_device_train_batch_size": "bs",
    "num_train_epochs": "ep",
    "weight_decay": "wd",
    "warmup_ratio": "warmup",
    "gradient_accumulation_steps": "accum",
    "lr_scheduler_type": "sched",
    "name_or_path": "model",
    "max_length": "len",
}
#: Grid keys a sweep sets itself, or that would scatter its runs.
NO_GRID_SECTION = "output"


@dataclass
class QueueEntry:
    """One queued config. ``config`` is the resolved config as a mapping (what config.yaml holds)."""

    id: str
    label: str
    #: When it was queued (seconds since the epoch).
    added: float
    config: dict[str, Any]
    sweep: str | None = None
    #: The grid values of a sweep's run: dotted key -> the value as given ("train.learning_rate" -> "1e-5").
    grid: dict[str, str] | None = None
    state: str = QUEUED
    #: The run folder's name under the runs folder, fixed when the entry is claimed.
    run: str | None = None
    #: Why it could not start (state failed), in one line.
    error: str | None = None
    #: The GPU the run sees (CUDA_VISIBLE_DEVICES), when the runner chose one.
    gpu: str | None = None
    #: When the runner claimed it.
    claimed: float | None = None
    #: The folder it was queued from: its run starts there, so relative paths in it mean what they meant then.
    cwd: str | None = None

    def run_config(self) -> RunConfig:
        """The config, validated again; raises ConfigError."""
        return from_dict(self.config)

    @property
    def config_yaml(self) -> str:
        return self.run_config().to_yaml()

    def run_dir(self, runs_dir: str | os.PathLike[str]) -> RunDir | None:
        return RunDir(Path(runs_dir) / self.run) if self.run else None

    @property
    def grid_text(self) -> str:
        """ "learning_rate=1e-5 per_device_train_batch_size=8", or ""."""
        return _grid_label(self.grid)

    @property
    def added_text(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(self.added))

    @classmethod
    def from_json(cls, record: Any) -> QueueEntry:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in names})


@dataclass
class _Queue:
    next_id: int = 1
    entries: list[QueueEntry] = field(default_factory=list)

    def find(self, entry_id: str, runs_dir: Path) -> QueueEntry:
        wanted = str(entry_id).strip().lstrip("#")
        for entry in self.entries:
            if entry.id == wanted:
                return entry
        raise UserError(
            f"{entry_id}: no entry by that id in the queue of {runs_dir}/; "
            f"tunebench queue ls{runs_dir_option(runs_dir)} lists them"
        )

    def select(self, token: str, runs_dir: Path) -> list[QueueEntry]:
        """The entries ``token`` names: an entry's id, a range of ids ("3-7", both ends included, as ``sweep``
        prints them) or a sweep's id."""
        wanted = str(token).strip().lstrip("#")
        swept = [e for e in self.entries if e.sweep == wanted]
        if swept:
            return swept
        first, dash, last = wanted.partition("-")
        if dash and first.isdigit() and last.isdigit():
            if int(first) > int(last):
                raise UserError(f"{token}: a range goes from the lower id to the higher, as in {last}-{first}")
            inside = [e for e in self.entries if e.id.isdigit() and int(first) <= int(e.id) <= int(last)]
            if not inside:
                raise UserError(
                    f"{token}: no entry in that range in the queue of {runs_dir}/; "
                    f"tunebench queue ls{runs_dir_option(runs_dir)} lists them"
                )
            return inside
        return [self.find(wanted, runs_dir)]

    def to_json(self) -> str:
        record = {
            "format": QUEUE_FORMAT,
            "next_id": self.next_id,
            "entries": [dataclasses.asdict(e) for e in self.entries],
        }
        return json.dumps(record, indent=1, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------------------------------------
# Locks and the queue file


def _flock(fh: IO[Any], *, exclusive: bool, wait: bool) -> bool:
    """Lock an open file (fcntl.flock); True when taken (or locks are unsupported)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; one runner per runs folder is the user's to keep
        return True
    flags = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB)
    try:
        fcntl.flock(fh.fileno(), flags)
    except OSError:
        return False
    return True


def _take(fh: IO[Any], seconds: float = LOCK_TRY_SECONDS) -> bool:
    """Take an exclusive lock, trying for ``seconds``: a probe (``_is_held``) holds it for an instant."""
    deadline = time.monotonic() + seconds
    while not _flock(fh, exclusive=True, wait=False):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def _is_held(path: Path) -> bool:
    """Whether some process holds ``path``'s exclusive lock. A shared lock probes it, so two probes never mistake
    each other for a holder."""
    try:
        with open(path, "rb") as fh:
            return not _flock(fh, exclusive=False, wait=False)
    except OSError:  # no such file: nobody holds it
        return False


def _queue_dir(runs_dir: str | os.PathLike[str]) -> Path:
    return Path(runs_dir).expanduser() / QUEUE_DIR


def _read(runs_dir: Path) -> _Queue:
    path = _queue_dir(runs_dir) / QUEUE_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return _Queue()
    except (OSError, ValueError) as exc:
        raise UserError(
            f"{path}: cannot read the queue ({exc}); move the file away to start with an empty queue"
        ) from None
    try:
        if int(record.get("format", 1)) > QUEUE_FORMAT:
            raise UserError(f"{path} was written by a newer Tunebench; upgrade tunebench to use this queue")
        return _Queue(int(record["next_id"]), [QueueEntry.from_json(e) for e in record["entries"]])
    except (AttributeError, KeyError, TypeError, ValueError):
        raise UserError(
            f"{path}: not a queue file Tunebench wrote; move it away to start with an empty queue"
        ) from None


@contextlib.contextmanager
def _changing(runs_dir: Path, *, create: bool = False) -> Iterator[_Queue]:
    """The queue, to change while holding its lock; written whole when the block ends without an error. Only
    ``create`` makes the queue's folder (and the runs folder): rm, move or clear of a mistyped --runs-dir not."""
    folder = _queue_dir(runs_dir)
    if not create and not folder.is_dir():
        yield _Queue()
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fh = open(folder / QUEUE_LOCK, "a+", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise UserError(
            f"cannot write the queue in {folder} ({exc.strerror}); choose a writable runs folder with --runs-dir"
        ) from None
    with fh:
        _flock(fh, exclusive=True, wait=True)  # held for a read and a write: milliseconds
        queue = _read(runs_dir)
        yield queue
        try:
            atomic_write_text(folder / QUEUE_FILE, queue.to_json())
        except OSError as exc:
            raise UserError(f"cannot write {folder / QUEUE_FILE} ({exc.strerror}); free disk space") from None


# ---------------------------------------------------------------------------------------------------------
# The queue: list, add, remove, move


def list_queue(runs_dir: str | os.PathLike[str]) -> list[QueueEntry]:
    """The entries of the queue in ``runs_dir``, in queue order (those started or failed included)."""
    return _read(Path(runs_dir).expanduser()).entries


def add(
    runs_dir: str | os.PathLike[str],
    cfg: RunConfig,
    label: str,
    sweep: str | None = None,
    grid: dict[str, str] | None = None,
) -> QueueEntry:
    """Queue ``cfg`` (validated again: ConfigError, and nothing queued, if it is bad) at the end of the queue."""
    return _add_all(Path(runs_dir).expanduser(), [(cfg, label, grid)], sweep)[0]


def add_sweep(
    runs_dir: str | os.PathLike[str], runs: Sequence[tuple[dict[str, str], RunConfig]], sweep: str, label: str
) -> list[QueueEntry]:
    """Queue a sweep's runs (``expand_grid``'s list) all at once, or none of them; each entry's label is ``label``
    and its grid values."""
    items = [(cfg, f"{label} {_grid_label(grid)}".strip(), grid) for grid, cfg in runs]
    return _add_all(Path(runs_dir).expanduser(), items, sweep)


def waiting_twins(runs_dir: Path, configs: Sequence[RunConfig]) -> list[QueueEntry | None]:
    """For each of ``configs``, the entry queued from this folder and not started yet that would train the same
    run (the same config but for its sweep), or None."""
    cwd = os.getcwd()
    waiting = {_same_run(e.config): e for e in list_queue(runs_dir) if e.state == QUEUED and e.cwd == cwd}
    return [waiting.get(_same_run(_stored(cfg))) for cfg in configs]


def _stored(cfg: RunConfig) -> dict[str, Any]:
    """``cfg`` as an entry holds it: validated again (ConfigError for a bad one), as a mapping."""
    return from_dict(cfg.to_dict()).to_dict()


def _same_run(config: dict[str, Any]) -> str:
    output = {k: v for k, v in config.get("output", {}).items() if k != "sweep"}
    return json.dumps({**config, "output": output}, sort_keys=True)


def check_local_paths(cfg: RunConfig) -> None:
    """Refuse now what a queued run would only fail to start on later and costs nothing to see: a local model
    folder or data path that is not there (or holds no data). Hub ids are the run's to fetch, and a run folder
    whose model is not written yet may have it by the time the run starts (a run queued after the one it
    continues). Raises a UserError that names the key."""
    from engine.data import local_files
    from engine.errors import ModelError
    from engine.models import resolve_model_path

    try:
        resolve_model_path(cfg.model.name_or_path)
    except ModelError:
        if not (Path(cfg.model.name_or_path).expanduser() / "config.yaml").is_file():
            raise
    local_files(cfg.data.source)


def _add_all(
    runs_dir: Path, items: Sequence[tuple[RunConfig, str, dict[str, str] | None]], sweep: str | None
) -> list[QueueEntry]:
    # Validated before the lock is taken: a bad config anywhere queues nothing.
    for cfg, _label, _grid in items:
        check_local_paths(cfg)
    configs = [_stored(cfg) for cfg, _label, _grid in items]
    cwd = os.getcwd()
    added: list[QueueEntry] = []
    with _changing(runs_dir, create=True) as queue:
        for config, (_cfg, label, grid) in zip(configs, items, strict=True):
            entry = QueueEntry(str(queue.next_id), label, time.time(), config, sweep, dict(grid) if grid else None)
            entry.cwd = cwd
            queue.next_id += 1
            queue.entries.append(entry)
            added.append(entry)
    return added


def remove(runs_dir: str | os.PathLike[str], wanted: Sequence[str]) -> list[QueueEntry]:
    """Take entries off the queue, all or none: each of ``wanted`` is an entry's id, a range of ids ("3-7") or a
    sweep's id (its every entry). A started entry's run goes on (``tunebench stop RUN`` stops it); an entry the
    runner is starting now cannot be removed."""
    root = Path(runs_dir).expanduser()
    with _changing(root) as queue:
        gone: list[QueueEntry] = []
        for token in wanted:
            gone += [e for e in queue.select(token, root) if e not in gone]
        starting = next((e for e in gone if e.state == CLAIMED), None)
        if starting is not None and runner_state(root) is not None:
            raise UserError(
                f"{starting.id}: the queue runner is starting it now; once it trains, tunebench stop {starting.run} "
                "stops it"
            )
        queue.entries = [e for e in queue.entries if e not in gone]
    return gone


def move(runs_dir: str | os.PathLike[str], entry_id: str, delta: int) -> int:
    """Move a queued entry ``delta`` places among the queued entries (negative: sooner; clamped at both ends);
    returns its new place, 1 for the next to start."""
    root = Path(runs_dir).expanduser()
    with _changing(root) as queue:
        entry = queue.find(entry_id, root)
        if entry.state != QUEUED:
            raise UserError(f"{entry.id}: it is {run_status(root, entry)}, not queued; only queued entries move")
        slots = [i for i, e in enumerate(queue.entries) if e.state == QUEUED]
        waiting = [queue.entries[i] for i in slots]
        place = max(0, min(len(waiting) - 1, waiting.index(entry) + delta))
        waiting.remove(entry)
        waiting.insert(place, entry)
        for i, e in zip(slots, waiting, strict=True):
            queue.entries[i] = e
    return place + 1


def clear(runs_dir: str | os.PathLike[str]) -> list[QueueEntry]:
    """Forget the entries that failed to start, and the started ones whose runs have ended (their folders stay)."""
    root = Path(runs_dir).expanduser()
    with _changing(root) as queue:
        gone = [e for e in queue.entries if e.state in (STARTED, FAILED) and run_status(root, e) in ENDED]
        queue.entries = [e for e in queue.entries if e not in gone]
    return gone


def run_status(runs_dir: str | os.PathLike[str], entry: QueueEntry) -> str:
    """What an entry is now: queued, starting, failed (to start), or its run's status: running, paused, finished,
    stopped, failed, killed (its process ended without a summary), gone (its folder was deleted)."""
    if entry.state in (QUEUED, FAILED):
        return entry.state
    root = Path(runs_dir).expanduser()
    run = entry.run_dir(root)
    if run is None:
        return "starting"
    # A claimed entry's run may have trained and ended already: its runner died before marking it started.
    status = (run.read_summary() or {}).get("status")
    if status:
        return str(status)
    live = run.live_state()
    if live is not None:
        return live
    if entry.state == CLAIMED or _is_held(_claim_path(root, entry.id)):
        return "starting"  # its process lives but has not taken the run's lock yet
    return "killed" if run.path.is_dir() else "gone"


# ---------------------------------------------------------------------------------------------------------
# Sweeps


def _split_values(values: str) -> list[str]:
    """The comma-separated values of a --grid, a comma inside [...] or {...} belonging to its value: a list
    value such as ``[query,value]`` is one value."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(values):
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth = max(depth - 1, 0)
        elif char == "," and depth == 0:
            items.append(values[start:i].strip())
            start = i + 1
    return [*items, values[start:].strip()]


def parse_grid(text: str) -> tuple[str, list[str]]:
    """ "train.learning_rate=1e-5,3e-5" -> ("train.learning_rate", ["1e-5", "3e-5"]); a list value is written in
    brackets ("model.lora.target_modules=[query,value],[query,key,value]"); ConfigError if malformed."""
    key, sep, values = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError("--grid", f'expected section.key=v1,v2,..., got "{text}"')
    items = _split_values(values)
    if not values.strip() or any(not v for v in items):
        raise ConfigError(f"--grid {key}", f'an empty value in "{values}"; give values separated by commas')
    seen = [v for v, n in Counter(items).items() if n > 1]
    if seen:
        raise ConfigError(f"--grid {key}", f'the value "{seen[0]}" is given twice')
    if key.partition(".")[0] == NO_GRID_SECTION:
        raise ConfigError(
            f"--grid {key}",
            "a sweep's runs share their output settings (the sweep names and places them, and they report the "
            "same way); set it with --set, and grid over model, data or train keys",
        )
    return key, items


def expand_grid(
    cfg_path: str | os.PathLike[str], grids: Sequence[str], overrides: Sequence[str] = (), sweep: str | None = None
) -> list[tuple[dict[str, str], RunConfig]]:
    """The cartesian product of ``grids`` ("section.key=v1,v2,...", the first varying slowest) over the config
    in ``cfg_path`` with ``overrides`` (``--set``), each validated before any is returned.

    Each config gets ``output.sweep`` = ``sweep`` and an ``output.run_name`` naming its grid values, so its run
    folder says what it is. Raises ConfigError naming the key and the value for a bad value or an unknown key.
    """
    if not grids:
        raise ConfigError("--grid", "a sweep needs at least one --grid section.key=v1,v2,...")
    axes = [parse_grid(text) for text in grids]
    keys = [key for key, _values in axes]
    twice = [key for key, n in Counter(keys).items() if n > 1]
    if twice:
        raise ConfigError(f"--grid {twice[0]}", "is given twice; list all its values in one --grid")
    for key in keys:  # model.lora=null and model.lora.r=4,8: which wins would depend on their order
        outer = next((k for k in keys if key.startswith(f"{k}.")), None)
        if outer is not None:
            raise ConfigError(f"--grid {key}", f"overlaps --grid {outer}; keep one of them")
    set_keys = {o.partition("=")[0].strip() for o in overrides}
    for key in keys:  # the grid's values would win over --set's without a word, for a key or one inside it
        overlap = [g for g in set_keys if g == key or g.startswith(f"{key}.") or key.startswith(f"{g}.")]
        if overlap:
            what = "is also given" if overlap[0] == key else f"overlaps {overlap[0]}, given"
            raise ConfigError(f"--grid {key}", f"{what} with --set; keep it in one of them")
    load_config(cfg_path, list(overrides))  # the file's and the overrides' own mistakes, named as such
    raw = parse_yaml(config_path(cfg_path).read_text(encoding="utf-8"), str(cfg_path))

    def build(grid: dict[str, str]) -> RunConfig:
        try:
            return from_dict(apply_overrides(raw, [*overrides, *(f"{k}={v}" for k, v in grid.items())]))
        except ConfigError as exc:
            for key in grid:  # the grid key the mistake is about: its own, its section's, or its value's YAML
                if exc.path in (key, key.partition(".")[0]) or exc.message.startswith(f"--set {key}: "):
                    message = exc.message.removeprefix(f"--set {key}: ")
                    raise ConfigError(f"--grid {key}", message) from None
            # a rule between several settings, broken by this combination only
            given = " ".join(f"{k}={v}" for k, v in grid.items())
            raise ConfigError(exc.path, f"{exc.message} (with --grid {given})") from None

    for key, values in axes:  # each value alone first: the message names it, whatever the other axes hold
        seen: dict[str, str] = {}
        for value in values:
            same = seen.setdefault(_identity(_field(build({key: value}), key)), value)
            if same != value:  # "1e-5" and "0.00001": one run twice under two names
                raise ConfigError(f"--grid {key}", f'"{same}" and "{value}" are the same value; give it once')
    combos = [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(values for _key, values in axes))]
    widest = max(len(_grid_slug(grid)) for grid in combos)
    out = []
    named: Counter[str] = Counter()
    for grid in combos:
        cfg = build(grid)
        cfg.output.sweep = sweep
        name = sweep_run_name(cfg, grid, widest)
        named[name] += 1
        # "a b" and "a-b" slug alike: the second run of a name gets a number, not another run's name
        cfg.output.run_name = name if named[name] == 1 else f"{name}-{named[name]}"
        out.append((grid, cfg))
    return out


def _identity(value: Any) -> str:
    """What tells two grid values apart: a path to the same file or folder, written two ways, is one value."""
    if isinstance(value, str) and value:
        path = Path(value).expanduser()
        if path.exists():
            return f"path:{path.resolve()}"
    return repr(value)


def _field(cfg: RunConfig, key: str) -> Any:
    """The value at ``key`` ("train.learning_rate") of a config."""
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _grid_slug(grid: dict[str, str]) -> str:
    """A run's grid values as they end its name: "lr1e-5_bs8"."""
    parts = []
    for key, value in grid.items():
        leaf = key.rpartition(".")[2]
        shown = value.rstrip("/").rpartition("/")[2] or value  # a path: its last part
        parts.append(slugify(f"{SHORT_KEYS.get(leaf, leaf)}{shown}"))
    return "_".join(parts)


def sweep_run_name(cfg: RunConfig, grid: dict[str, str], widest: int = 0) -> str:
    """The run name of a sweep's run: the config's own run name (or task and model), then its grid values, e.g.
    "classification-minilm-lr1e-5_bs8"; the values come first when the folder name runs short. ``widest``: the
    longest values of the sweep, so that its runs' names all start the same."""
    values = _grid_slug(grid)
    base = slugify(cfg.output.run_name or default_run_name(cfg))
    room = 48 - max(len(values), widest) - 1  # slugify's limit on a run name
    if room < 8:
        return slugify(values)
    cut = base[:room]
    if len(base) > room and "-" in cut:  # whole words: "classification", not "classification-mi"
        cut = cut.rpartition("-")[0]
    return slugify(f"{cut.rstrip('-_.')}-{values}")


def new_sweep_id(runs_dir: str | os.PathLike[str]) -> str:
    """A short id (6 hex digits) that no sweep in the queue has."""
    taken = {e.sweep for e in list_queue(runs_dir)}
    import secrets  # here: the workbench imports this module to list the queue, and never makes a sweep

    while True:
        sweep = secrets.token_hex(3)
        if sweep not in taken:
            return sweep


def _grid_label(grid: dict[str, str] | None) -> str:
    return " ".join(f"{key.rpartition('.')[2]}={value}" for key, value in (grid or {}).items())


@dataclass
class SweepRow:
    """One run of a sweep, as ``sweep_rows`` sees it now."""

    entry: QueueEntry | None
    status: str
    #: "acc 0.8000", "eval loss 0.3100" or "-".
    best: str
    #: The run folder's name, or why the entry could not start.
    detail: str

    @property
    def ended(self) -> bool:
        return self.status in ENDED


def sweep_rows(runs_dir: str | os.PathLike[str], sweep: str, ids: Sequence[str] = ()) -> list[SweepRow]:
    """The runs of ``sweep`` and the entries ``ids`` (runs of an earlier sweep given again): those in the queue,
    and any of ``ids`` no longer there (removed)."""
    root = Path(runs_dir).expanduser()
    entries = [e for e in list_queue(root) if e.sweep == sweep or e.id in ids]
    rows = []
    for entry in entries:
        status = run_status(root, entry)
        run = entry.run_dir(root)
        summary = (run.read_summary() if run is not None else None) or {}
        info = RunInfo(Path(), "", status, "", "", 0.0, None, summary.get("best_metric"), summary.get("best_value"))
        detail = (entry.error or entry.run or "") if entry.state == FAILED else (entry.run or "")
        rows.append(SweepRow(entry, status, info.best_text, detail))
    there = {e.id for e in entries}
    rows += [SweepRow(None, "removed", "-", f"entry {i}") for i in ids if i not in there]
    return rows


# ---------------------------------------------------------------------------------------------------------
# The runner, seen from outside


def runner_state(runs_dir: str | os.PathLike[str]) -> int | None:
    """The pid of the queue runner of ``runs_dir``, or None when none runs."""
    path = _queue_dir(runs_dir) / RUNNER_LOCK
    for _ in range(50):
        if not _is_held(path):
            return None
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(path.read_text(encoding="utf-8").split()[0])
        time.sleep(0.02)  # held, its pid not written yet
    return None


class RunnerRunning(UserError):
    """A queue runner already runs on this runs folder."""

    def __init__(self, runs_dir: Path, pid: int) -> None:
        self.pid = pid
        super().__init__(
            f"a queue runner already runs on {runs_dir}/ (pid {pid}); "
            f"tunebench queue stop{runs_dir_option(runs_dir)} stops it"
        )


def start_runner(runs_dir: str | os.PathLike[str], parallel: int | None = None) -> int:
    """Start the queue runner of ``runs_dir`` in a process of its own session and return its pid once it holds
    the runner lock. ``parallel``: runs at a time (default: one per CUDA GPU, else 1). RunnerRunning (a
    UserError) if one already runs."""
    root = Path(runs_dir).expanduser().resolve()
    if parallel is not None and parallel < 1:
        raise UserError(f"--parallel: expected at least 1, got {parallel}")
    pid = runner_state(root)
    if pid is not None:
        raise RunnerRunning(root, pid)
    folder = _queue_dir(root)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "engine.queue", str(root)]
        argv += ["--parallel", str(parallel)] if parallel else []
        with open(folder / RUNNER_STDOUT, "ab") as out, open(folder / RUNNER_STDERR, "ab") as err:
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True, close_fds=True
            )
    except OSError as exc:
        raise UserError(
            f"cannot start the queue runner in {folder} ({exc.strerror}); choose a writable runs folder"
        ) from None
    deadline = time.monotonic() + START_WAIT_SECONDS
    while time.monotonic() < deadline:
        if runner_state(root) == process.pid:
            return process.pid
        code = process.poll()
        if code == EXIT_RUNNER_RUNNING:
            raise RunnerRunning(root, runner_state(root) or 0)
        if code is not None:
            raise UserError(
                f"the queue runner exited with code {code}: {_last_line(folder / RUNNER_STDERR)} "
                f"(see {folder / RUNNER_STDERR})"
            )
        time.sleep(0.05)
    return process.pid  # slow to start, but started


def stop_runner(runs_dir: str | os.PathLike[str], wait: float = STOP_WAIT_SECONDS) -> int | None:
    """Ask the queue runner to start no more runs and exit, and wait up to ``wait`` seconds for it; its runs go
    on. Returns its pid, or None when none runs. It may still run afterwards: it first finishes starting the run
    it is starting."""
    root = Path(runs_dir).expanduser()
    pid = runner_state(root)
    if pid is None:
        return None
    try:
        atomic_write_text(_queue_dir(root) / STOP_FILE, f"{pid}\n")
    except OSError as exc:
        raise UserError(f"cannot leave the stop request in {_queue_dir(root)} ({exc.strerror})") from None
    deadline = time.monotonic() + wait
    while runner_state(root) == pid and time.monotonic() < deadline:
        time.sleep(0.05)
    return pid


def detect_gpus() -> list[str]:
    """The CUDA GPUs a run may be given, as CUDA_VISIBLE_DEVICES names them: those it already lists, else
    ``nvidia-smi -L``'s; without importing torch."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        out = []
        for name in (part.strip() for part in visible.split(",")):
            if not name or name.startswith("-"):  # CUDA stops at the first invalid id ("-1" hides them all)
                break
            out.append(name)
        return out
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, _line in enumerate(line for line in listing.splitlines() if line.startswith("GPU "))]


def _claim_path(runs_dir: Path, entry_id: str) -> Path:
    return _queue_dir(runs_dir) / CLAIMS_DIR / f"{entry_id}.lock"


def _last_line(path: Path, tail: int = 15) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()[-tail:]
    except OSError:
        return ""
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


# ---------------------------------------------------------------------------------------------------------
# The runner, inside its process: python -m engine.queue RUNS_DIR [--parallel N]


class QueueRunner:
    """Starts queued entries while it holds the runner lock: ``parallel`` runs at a time (each run's process
    holding its claim lock counts, the previous runner's too), each given the least busy GPU."""

    def __init__(self, runs_dir: Path, parallel: int | None = None, gpus: list[str] | None = None) -> None:
        self.root = runs_dir
        self.folder = _queue_dir(runs_dir)
        self.gpus = detect_gpus() if gpus is None else gpus
        self.parallel = parallel or max(1, len(self.gpus))
        self.processes: list[subprocess.Popen[bytes]] = []
        self.stopping = False

    def log(self, message: str) -> None:
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}", flush=True)

    def run(self) -> int:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / RUNNER_LOCK, "a+", encoding="utf-8") as lock:
            if not _take(lock):
                pid = runner_state(self.root)
                print(f"tunebench: error: a queue runner already runs on {self.root}/ (pid {pid})", file=sys.stderr)
                return EXIT_RUNNER_RUNNING
            lock.seek(0)
            lock.truncate()
            lock.write(f"{os.getpid()}\n")
            lock.flush()
            with contextlib.suppress(FileNotFoundError):  # a request meant for a runner gone since
                (self.folder / STOP_FILE).unlink()
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, self._on_signal)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a session of its own has no terminal to hang up
            self._recover()
            where = f"GPUs {','.join(self.gpus)}" if self.gpus else "no CUDA GPU"
            self.log(f"runner {os.getpid()} on {self.root}: {self.parallel} at a time, {where}")
            while not self._stop_requested():
                try:
                    active = self._active()
                    if len(active) < self.parallel and self._start_next(active):
                        continue
                except UserError as exc:  # the queue cannot be read or written now (a full disk, a hand edit)
                    self.log(f"error: {exc}")
                    time.sleep(PROBLEM_SECONDS)
                time.sleep(POLL_SECONDS)
            self.log("stopping: no more runs start; runs already started go on")
            with contextlib.suppress(FileNotFoundError):
                (self.folder / STOP_FILE).unlink()
        return 0

    def _on_signal(self, _signum: int, _frame: Any) -> None:
        self.stopping = True

    def _stop_requested(self) -> bool:
        return self.stopping or (self.folder / STOP_FILE).exists()

    def _recover(self) -> None:
        """Settle the entries a killed runner left claimed (see the module's docstring)."""
        for entry in _recover_claims(self.root):
            self.log(f"entry {entry.id}: {entry.state} after the last runner ended ({entry.run or 'no folder'})")

    def _active(self) -> dict[str, str | None]:
        """The entries whose run's process lives (its claim lock is held) -> their GPU; forgets the others' claim
        files, and reaps the processes this runner started that have ended."""
        self.processes = [p for p in self.processes if p.poll() is None]
        folder = self.folder / CLAIMS_DIR
        held = []
        for path in sorted(folder.glob("*.lock")) if folder.is_dir() else []:
            if _is_held(path):
                held.append(path.name.removesuffix(".lock"))
            else:
                with contextlib.suppress(OSError):
                    path.unlink()
        gpus = {e.id: e.gpu for e in list_queue(self.root)}
        return {entry_id: gpus.get(entry_id) for entry_id in held}

    def _start_next(self, active: dict[str, str | None]) -> bool:
        """Claim the next queued entry and start its run; False when none is queued."""
        entry, cfg = _claim_next(self.root, pick_gpu(self.gpus, list(active.values())))
        if entry is None:
            return False
        if cfg is None:
            self.log(f"entry {entry.id}: failed to start: {entry.error}")
            return True
        kill_point("queue-claimed")
        self.log(f"entry {entry.id}: starting {entry.label} as {entry.run}")
        error = self._start(entry, cfg)
        if error is None:
            _settle(self.root, entry.id, STARTED)
            self.log(f"entry {entry.id}: training in {entry.run}")
        else:
            kept = entry.run if entry.run and (self.root / entry.run).is_dir() else None
            _settle(self.root, entry.id, FAILED, error=error, run=kept)
            self.log(f"entry {entry.id}: failed to start: {error}")
        return True

    def _start(self, entry: QueueEntry, cfg: RunConfig) -> str | None:
        """Start the claimed entry's run in its folder as a detached run (``python -m engine.detached RUN``) and
        wait until it trains; None then, else the one-line reason it failed."""
        try:
            process, run, follower = self._spawn(entry, cfg)
        except OSError as exc:  # its process never started: what there is of its folder holds nothing
            if entry.run:
                shutil.rmtree(self.root / entry.run, ignore_errors=True)
            return f"cannot start the run in {self.root} ({exc.strerror or exc}); free disk space or fix permissions"
        kill_point("queue-spawned")
        self.processes.append(process)
        try:
            return _await_training(run, process, follower)
        finally:
            follower.close()

    def _spawn(self, entry: QueueEntry, cfg: RunConfig) -> tuple[subprocess.Popen[bytes], RunDir, EventFollower]:
        """Lock the entry's claim, make its run folder and start the run's process, which inherits the claim."""
        from engine.detached import spawn_run_process
        from engine.live import EventFollower

        assert entry.run is not None
        claim = _claim_path(self.root, entry.id)
        claim.parent.mkdir(exist_ok=True)
        with open(claim, "a+", encoding="utf-8") as held:
            if not _take(held):  # only a second runner could hold it, and the runner lock rules that out
                raise OSError(f"entry {entry.id}'s claim is held by another process")
            folder = self._make_folder(entry, cfg)
            run = RunDir(folder)
            atomic_write_text(run.config_path, cfg.to_yaml())
            run.events_path.touch()
            kill_point("queue-folder")
            # Opened before the process starts: a run that fails before training removes its folder, and this
            # handle still reads the RunFailed it wrote.
            follower = EventFollower(run.events_path)
            follower.open()
            env = dict(os.environ)
            threads = None
            if entry.gpu is not None:
                env["CUDA_VISIBLE_DEVICES"] = entry.gpu
            elif not self.gpus and self.parallel > 1:  # CPU runs side by side share the cores
                threads = max(1, (os.cpu_count() or 1) // self.parallel)
            with contextlib.ExitStack() as on_error:
                on_error.callback(follower.close)
                process = spawn_run_process(
                    run,
                    torch_threads=threads,
                    env=env,
                    cwd=entry.cwd if entry.cwd and Path(entry.cwd).is_dir() else None,
                    pass_fds=(held.fileno(),),  # the claim lock: its process holds it from here to its end
                )
                on_error.pop_all()  # started: the follower is the caller's now
        return process, run, follower

    def _make_folder(self, entry: QueueEntry, cfg: RunConfig) -> Path:
        """Make the run folder the claim named; under a new name if another process took that one since."""
        while True:
            assert entry.run is not None
            folder = self.root / entry.run
            try:
                folder.mkdir()
                return folder
            except FileExistsError:  # a tunebench run in the same second, with the same run name
                with _changing(self.root) as queue:
                    entry.run = _free_run_name(self.root, queue, cfg)
                    for e in queue.entries:
                        if e.id == entry.id:
                            e.run = entry.run


def pick_gpu(gpus: Sequence[str], busy: Sequence[str | None]) -> str | None:
    """The GPU of ``gpus`` that the fewest of the live runs (``busy``: each one's GPU) use; the first of those."""
    counts = Counter(busy)
    return min(gpus, key=lambda gpu: counts[gpu]) if gpus else None


def _await_training(run: RunDir, process: subprocess.Popen[bytes], follower: EventFollower) -> str | None:
    """Wait until the run trains (None) or has failed (its one-line message)."""
    from engine.detached import died_message
    from engine.events import RunFailed, RunStarted

    while True:
        ended = process.poll()
        for event in follower.poll():  # after the poll: what it wrote before it ended is read
            if isinstance(event, RunStarted):
                return None
            if isinstance(event, RunFailed):
                # A fresh run that fails before training removes its folder after this event, then ends: the
                # caller looks at the folder once the process is gone.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(FAILED_EXIT_SECONDS)
                return event.error
        if ended is not None:
            return died_message(run, ended)[0]
        time.sleep(0.05)


def _claim_next(runs_dir: Path, gpu: str | None) -> tuple[QueueEntry | None, RunConfig | None]:
    """Claim the first queued entry: its state, run folder name and GPU, written before anything else happens.
    (entry, config); (entry, None) when its config no longer validates (it is marked failed); (None, None) when
    nothing is queued."""
    with _changing(runs_dir) as queue:
        entry = next((e for e in queue.entries if e.state == QUEUED), None)
        if entry is None:
            return None, None
        try:
            cfg = entry.run_config()
        except ConfigError as exc:
            entry.state, entry.error = FAILED, str(exc)
            return entry, None
        entry.state, entry.run, entry.claimed, entry.error = (
            CLAIMED,
            _free_run_name(runs_dir, queue, cfg),
            time.time(),
            None,
        )
        # A config that names its device (cpu, cuda:1) keeps it; CUDA_VISIBLE_DEVICES would renumber cuda:1.
        entry.gpu = gpu if gpu is not None and cfg.train.device in ("auto", "cuda") else None
    return entry, cfg


def _free_run_name(runs_dir: Path, queue: _Queue, cfg: RunConfig) -> str:
    """A run folder name as create_run_dir makes them, that no folder and no entry of the queue has."""
    taken = {e.run for e in queue.entries if e.run}
    name = slugify(cfg.output.run_name or default_run_name(cfg))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in itertools.count():
        candidate = f"{stamp}-{name}" if n == 0 else f"{stamp}-{name}-{n}"
        if candidate not in taken and not (runs_dir / candidate).exists():
            return candidate
    raise AssertionError("unreachable")


def _settle(runs_dir: Path, entry_id: str, state: str, *, error: str | None = None, run: str | None = None) -> None:
    """Mark a claimed entry started or failed (nothing, if it was taken off the queue meanwhile)."""
    with _changing(runs_dir) as queue:
        for entry in queue.entries:
            if entry.id == entry_id:
                entry.state = state
                if state == FAILED:
                    entry.error, entry.run = error, run


def _recover_claims(runs_dir: Path) -> list[QueueEntry]:
    """Settle the entries a runner that died left claimed: started where a process of theirs lives or ran,
    queued again (their folder removed) where none ever reached training. Only for the runner that holds the
    runner lock: a live runner's claims are its own business."""
    settled = []
    with _changing(runs_dir) as queue:
        for entry in queue.entries:
            if entry.state != CLAIMED:
                continue
            folder = runs_dir / entry.run if entry.run else None
            ran = folder is not None and (
                _is_held(_claim_path(runs_dir, entry.id))
                or (folder / LOCK_FILE).exists()
                or _has_events(folder / EVENTS_FILE)
            )
            if ran:
                entry.state = STARTED
            else:
                # Its run folder never appeared, or no process of it took the run's lock: it never trained, so it
                # may start again.
                if folder is not None and folder.is_dir():
                    shutil.rmtree(folder, ignore_errors=True)
                entry.state, entry.run, entry.gpu, entry.claimed = QUEUED, None, None, None
            settled.append(entry)
    return settled


def _has_events(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def runner_main(argv: list[str] | None = None) -> int:
    import argparse  # here, as in the CLI: the workbench imports this module to list the queue

    parser = argparse.ArgumentParser(prog="python -m engine.queue", description="the queue runner of a runs folder")
    parser.add_argument("runs_dir")
    parser.add_argument("--parallel", type=int, default=None)
    args = parser.parse_args(argv)
    return QueueRunner(Path(args.runs_dir).resolve(), args.parallel).run()


# ---------------------------------------------------------------------------------------------------------
# The CLI: tunebench queue add|ls|rm|move|clear|start|stop, tunebench sweep


def _runner_note(root: Path) -> str:
    pid = runner_state(root)
    if pid is None:
        return f"no queue runner runs on {root}/; tunebench queue start --runs-dir {root} starts one"
    return f"the queue runner (pid {pid}) starts it in turn"


def _ls_hint(root: Path) -> str:
    """How to see a queue that ``queue ls`` without --runs-dir would not show: ``add`` and ``sweep`` follow the
    config's output.runs_dir."""
    option = runs_dir_option(root)
    return f"; tunebench queue ls{option} lists it" if option else ""


def cmd_queue_add(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    root = Path(args.runs_dir or cfg.output.runs_dir)
    entry = add(root, cfg, " ".join([Path(args.config).name, *args.overrides]))
    waiting = [e for e in list_queue(root) if e.state == QUEUED]
    place = next((i for i, e in enumerate(waiting, 1) if e.id == entry.id), len(waiting))
    print(f"queued {entry.id}: {entry.label} (number {place} in {root}/.queue{_ls_hint(root)})")
    print(_runner_note(root))
    return 0


def queue_table(runs_dir: Path, entries: list[QueueEntry]) -> list[str]:
    """``queue ls``'s lines: place among the queued, id, state, the sweep (where an entry has one: the id that
    ``queue rm`` takes for all its entries), label, and the run folder or the error."""
    sweeps = any(entry.sweep for entry in entries)
    rows = [("#", "id", "state", *(("sweep",) if sweeps else ()), "label", "run")]
    place = 0
    for entry in entries:
        if entry.state == QUEUED:
            place += 1
        status = run_status(runs_dir, entry)
        where = (entry.error or "") if entry.state == FAILED else (entry.run or "")
        sweep = (entry.sweep or "-",) if sweeps else ()
        rows.append((str(place) if entry.state == QUEUED else "-", entry.id, status, *sweep, entry.label, where))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]

    def line(row: tuple[str, ...]) -> str:
        *padded, last = row  # the last cell is not padded
        cells = [
            cell.rjust(w) if i < 2 else cell.ljust(w) for i, (cell, w) in enumerate(zip(padded, widths, strict=True))
        ]
        return "  ".join([*cells, last]).rstrip()

    return [line(row) for row in rows]


def cmd_queue_ls(args: argparse.Namespace) -> int:
    root = Path(args.runs_dir)
    entries = list_queue(root)
    if not root.expanduser().is_dir():  # said, so that a typo in --runs-dir does not pass for an empty queue
        print(f"no queue: {root}/ is not a folder (tunebench queue add CONFIG makes it)", file=sys.stderr)
        return 0
    if not entries:
        print(f"the queue of {root}/ is empty; tunebench queue add CONFIG or tunebench sweep CONFIG --grid ... adds")
    else:
        print("\n".join(queue_table(root, entries)))
    pid = runner_state(root)
    start = f"tunebench queue start{runs_dir_option(root)}"
    print(f"queue runner: pid {pid}" if pid is not None else f"queue runner: not running ({start})")
    return 0


def cmd_queue_rm(args: argparse.Namespace) -> int:
    root = Path(args.runs_dir)
    gone = remove(root, args.ids)
    if len(gone) > 1:
        print(f"removed {len(gone)} entries: {_id_ranges([e.id for e in gone])}")
    for entry in gone:
        status = run_status(root, entry)
        if entry.state == STARTED and status == "gone":
            extra = f"; its run folder {entry.run} is gone"
        elif entry.state == STARTED and status in ENDED:
            extra = f"; its run {entry.run} had ended ({status})"
        elif entry.state == STARTED:
            extra = f"; its run goes on in {entry.run} (tunebench stop {entry.run} stops it)"
        elif len(gone) > 1:
            continue  # a queued entry of many: the count above says it
        else:
            extra = ""
        print(f"removed {entry.id}: {entry.label}{extra}")
    return 0


def _id_ranges(ids: Sequence[str]) -> str:
    """ "1-3, 7, 9-10" for ids 1, 2, 3, 7, 9, 10."""
    numbers = sorted(int(i) for i in ids if i.isdigit())
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    parts = [str(a) if a == b else f"{a}-{b}" for a, b in spans]
    return ", ".join(parts + [i for i in ids if not i.isdigit()])


def cmd_queue_move(args: argparse.Namespace) -> int:
    root = Path(args.runs_dir)
    delta = {"up": -1, "down": 1, "top": -(10**9), "bottom": 10**9}[args.where]
    before = [e.id for e in list_queue(root) if e.state == QUEUED]
    place = move(root, args.id, delta)
    if args.id in before and before.index(args.id) + 1 == place:
        end = "first" if place == 1 else "last"
        print(f"{args.id} is {end} in the queue already (number {place} of {len(before)})")
    else:
        print(f"moved {args.id} to number {place} in the queue")
    return 0


def cmd_queue_clear(args: argparse.Namespace) -> int:
    gone = clear(Path(args.runs_dir))
    print(f"forgot {len(gone)} entries that ended; their run folders stay")
    return 0


def _parallel_note(parallel: int | None) -> None:
    """Say where --parallel asks for more runs at a time than the CPU has cores: on a CPU they share them, one
    thread each (on GPUs, runs are spread over the GPUs, and cores are rarely so few)."""
    cores = os.cpu_count() or 1
    if parallel is not None and parallel > cores:
        print(
            f"tunebench: warning: --parallel {parallel}: more runs at a time than this machine's {cores} CPU "
            "cores; on CPU they share them, one thread each"
        )


def cmd_queue_start(args: argparse.Namespace) -> int:
    root = Path(args.runs_dir)
    _parallel_note(args.parallel)
    pid = start_runner(root, args.parallel)
    how = f"{args.parallel} at a time" if args.parallel else "one at a time (one per GPU where there are several)"
    print(f"queue runner started (pid {pid}) on {root}/: it starts the queued runs {how}, and waits for more")
    print(f"  log: {_queue_dir(root) / RUNNER_STDOUT}    tunebench queue stop --runs-dir {root} stops it")
    return 0


def cmd_queue_stop(args: argparse.Namespace) -> int:
    root = Path(args.runs_dir)
    pid = stop_runner(root)
    if pid is None:
        print(f"no queue runner runs on {root}/")
    elif runner_state(root) == pid:
        print(f"asked the queue runner (pid {pid}) to stop; it exits once the run it is starting trains")
    else:
        listing = f"tunebench runs{runs_dir_option(root)} lists them"
        print(f"the queue runner (pid {pid}) stopped; runs it started go on ({listing})")
    return 0


#: A sweep of more runs than this is queued on --yes only: a value too many in one --grid multiplies the rest.
SWEEP_ASK = 100
#: Each run waits as an entry of the queue's one file; past this many, a random search fits better than a grid.
SWEEP_MOST = 1000


def _product(sizes: Sequence[int], count: int) -> str:
    return f"{count:,}" if len(sizes) == 1 else f"{' × '.join(map(str, sizes))} = {count:,}"


def cmd_sweep(args: argparse.Namespace) -> int:
    if args.parallel is not None and args.parallel < 1:
        raise UserError(f"--parallel: expected at least 1, got {args.parallel}")
    sizes = [len(parse_grid(text)[1]) for text in args.grid]
    count = math.prod(sizes)
    if count > SWEEP_MOST:
        raise UserError(
            f"--grid: {_product(sizes, count)} runs; a sweep queues at most {SWEEP_MOST:,}: give fewer values"
        )
    if count > SWEEP_ASK and not (args.yes or args.dry_run):
        raise UserError(f"--grid: {_product(sizes, count)} runs; pass --yes to queue that many (--dry-run lists them)")
    base = load_config(args.config, args.overrides)
    root = Path(args.runs_dir or base.output.runs_dir)
    sweep = new_sweep_id(root)
    runs = expand_grid(args.config, args.grid, args.overrides, sweep=sweep)
    for _grid, cfg in runs:  # --dry-run too: what it lists would start
        check_local_paths(cfg)
    twins = waiting_twins(root, [cfg for _grid, cfg in runs])
    earlier = _sweep_given_again(root, twins)
    if earlier is not None:  # its runs are this one's: the new ones join it, and its id names them all
        sweep = earlier
        runs = [
            (grid, dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, sweep=sweep))) for grid, cfg in runs
        ]
    print(f"sweep {sweep}: {len(runs)} run{'' if len(runs) == 1 else 's'} of {args.config}")
    width = max(len(cfg.output.run_name or "") for _grid, cfg in runs)
    for (grid, cfg), twin in zip(runs, twins, strict=True):
        waits = f"  (waits in the queue already: entry {twin.id})" if twin else ""
        print(f"  {cfg.output.run_name or '':<{width}}  {_grid_label(grid)}{waits}")
    if args.dry_run:
        print("--dry-run: nothing queued")
        return 0
    new = [run for run, twin in zip(runs, twins, strict=True) if twin is None]
    waiting = [twin for twin in twins if twin is not None]
    entries = add_sweep(root, new, sweep, " ".join([Path(args.config).name, *args.overrides])) if new else []
    if not entries:  # the same sweep given again, from the shell's history most likely
        print(f"each of these runs waits in the queue already (tunebench queue ls --runs-dir {root}); nothing queued")
    else:
        left_out = f"; left out the {len(waiting)} waiting already" if waiting else ""
        ids = f"entry {entries[0].id}" if len(entries) == 1 else f"entries {entries[0].id}-{entries[-1].id}"
        print(f"queued as {ids} in {root}/.queue{left_out}{_ls_hint(root)}")
    if args.follow or args.parallel is not None:
        _parallel_note(args.parallel)
        try:
            pid = start_runner(root, args.parallel)
            print(f"queue runner started (pid {pid})")
        except RunnerRunning as exc:
            print(f"the queue runner (pid {exc.pid}) runs them" + (" at its own --parallel" if args.parallel else ""))
    else:
        print(_runner_note(root))
    if not args.follow:
        return 0
    return follow_sweep(root, sweep, [e.id for e in [*entries, *waiting]])


def _sweep_given_again(root: Path, twins: Sequence[QueueEntry | None]) -> str | None:
    """The id of the earlier sweep that a sweep now given holds whole (the same grid, or one with more values),
    none of whose runs has started: the new sweep continues it. Else None: a sweep of its own."""
    earlier = {t.sweep for t in twins if t is not None}
    if len(earlier) != 1 or None in earlier:
        return None
    (sweep,) = earlier
    members = {e.id for e in list_queue(root) if e.sweep == sweep}
    return sweep if members == {t.id for t in twins if t is not None} else None


def _waits_for_runner(root: Path, row: SweepRow) -> bool:
    """Whether the row's run can start only through a queue runner: queued, or claimed by a runner that left it
    (no process of the run holds its claim)."""
    entry = row.entry
    if entry is None or row.ended:
        return False
    return entry.state == QUEUED or (entry.state == CLAIMED and not _is_held(_claim_path(root, entry.id)))


def follow_sweep(root: Path, sweep: str, ids: Sequence[str]) -> int:
    """Print a row per run of the sweep as each ends, until all have; Ctrl+C leaves them running. Ends too when
    the runs left wait for a queue runner and none has run for ``RUNNER_GONE_SECONDS``."""
    print(f"following sweep {sweep}: a row per run as it ends (Ctrl+C leaves the runs going)")
    shown: set[str] = set()
    runner_gone: float | None = None  # since when no runner runs while the runs left wait for one
    rows = sweep_rows(root, sweep, ids)
    width = max((len(row.entry.grid_text) for row in rows if row.entry is not None), default=0)
    try:
        while True:
            for row in rows:
                key = row.entry.id if row.entry is not None else row.detail
                if row.ended and key not in shown:
                    shown.add(key)
                    grid = row.entry.grid_text if row.entry is not None else ""
                    line = f"  {grid:<{width}}  {row.status:<8}  {row.best:<16}  {row.detail}"
                    print(line.rstrip(), flush=True)
            if all(row.ended for row in rows):
                break
            waiting = [row for row in rows if _waits_for_runner(root, row)]
            stuck = bool(waiting) and len(waiting) == sum(not row.ended for row in rows) and runner_state(root) is None
            if not stuck:
                runner_gone = None
            elif runner_gone is None:
                runner_gone = time.monotonic()
            if runner_gone is not None and time.monotonic() - runner_gone >= RUNNER_GONE_SECONDS:
                print(
                    f"the queue runner of {root}/ is not running, so {plural(len(waiting), 'run')} of the sweep "
                    f"cannot start; tunebench queue start{runs_dir_option(root)} starts it"
                )
                return 1
            time.sleep(FOLLOW_SECONDS)
            rows = sweep_rows(root, sweep, ids)
    except KeyboardInterrupt:
        print(f"stopped following; the sweep goes on (tunebench queue ls --runs-dir {root} shows it)")
        return 130
    failed = sum(row.status != "finished" for row in rows)
    print(f"sweep {sweep}: {len(rows) - failed} of {len(rows)} runs finished")
    return 0 if not failed else 1


def add_parsers(sub: Any) -> None:
    """Add this module's commands to ``tunebench``'s subparsers, each with ``handler`` set (see engine.cli)."""
    overrides: dict[str, Any] = {
        "dest": "overrides",
        "action": "append",
        "default": [],
        "metavar": "KEY=VALUE",
        "help": "override a config field, e.g. --set train.num_train_epochs=1 (repeatable)",
    }
    queue = sub.add_parser("queue", help="line up runs that start one after another, in a process of their own")
    commands = queue.add_subparsers(dest="queue_command", required=True, metavar="COMMAND")

    p = commands.add_parser("add", help="queue a config (checked now: a bad one is not queued)")
    p.add_argument("config", help="YAML config")
    p.add_argument("--set", **overrides)
    p.add_argument("--runs-dir", default=None, help="the runs folder whose queue it joins (default: output.runs_dir)")
    p.set_defaults(handler=cmd_queue_add)

    def runs_dir(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--runs-dir", default=DEFAULT_RUNS_DIR, help="the runs folder whose queue this is (default: runs)"
        )

    p = commands.add_parser("ls", help="list the queue: place, id, state, label, run folder")
    runs_dir(p)
    p.set_defaults(handler=cmd_queue_ls)
    p = commands.add_parser("rm", help="take entries off the queue, all or none (a started run goes on)")
    p.add_argument(
        "ids",
        nargs="+",
        metavar="ID",
        help="an entry's id (tunebench queue ls), a range of ids such as 3-7, or a sweep's id: all its entries",
    )
    runs_dir(p)
    p.set_defaults(handler=cmd_queue_rm)
    p = commands.add_parser("move", help="move a queued entry up, down, to the top or the bottom")
    p.add_argument("id", help="the entry's id (tunebench queue ls)")
    p.add_argument("where", choices=["up", "down", "top", "bottom"])
    runs_dir(p)
    p.set_defaults(handler=cmd_queue_move)
    p = commands.add_parser("clear", help="forget the entries that ended (their run folders stay)")
    runs_dir(p)
    p.set_defaults(handler=cmd_queue_clear)
    p = commands.add_parser("start", help="start the queue runner in the background; it outlives this terminal")
    p.add_argument("--parallel", type=int, default=None, metavar="N", help="runs at a time (default: 1 per GPU, or 1)")
    runs_dir(p)
    p.set_defaults(handler=cmd_queue_start)
    p = commands.add_parser("stop", help="the queue runner starts no more runs and exits; started runs go on")
    runs_dir(p)
    p.set_defaults(handler=cmd_queue_stop)

    sweep = sub.add_parser("sweep", help="queue the cartesian product of --grid values as one sweep")
    sweep.add_argument("config", help="YAML config")
    sweep.add_argument(
        "--grid",
        action="append",
        required=True,
        metavar="KEY=V1,V2",
        help="a key and its values, e.g. --grid train.learning_rate=1e-5,3e-5 (repeatable: every combination runs)",
    )
    sweep.add_argument("--set", **overrides)
    sweep.add_argument(
        "--runs-dir", default=None, help="the runs folder whose queue it joins (default: output.runs_dir)"
    )
    sweep.add_argument("--dry-run", action="store_true", help="list the runs; queue nothing")
    sweep.add_argument("--yes", action="store_true", help=f"queue a sweep of more than {SWEEP_ASK} runs")
    sweep.add_argument(
        "--follow", action="store_true", help="start the queue runner if none runs, and show each run as it ends"
    )
    sweep.add_argument("--parallel", type=int, default=None, metavar="N", help="start the queue runner, N at a time")
    sweep.set_defaults(handler=cmd_sweep)


if __name__ == "__main__":
    sys.exit(runner_main())
