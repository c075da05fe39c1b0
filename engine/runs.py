"""Run folders: ``runs/<timestamp>-<name>/`` with config.yaml, events.jsonl, checkpoints/, model/, summary.json.

Nothing is written half: files and the model folder go to a temporary name and are renamed (``engine.files``);
JSONL lines are appended whole and flushed, and a torn last line (a crash mid-write) is skipped on read.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from engine.config import RunConfig
from engine.errors import RunFolderError
from engine.events import (
    FIRST_STAGE,
    Event,
    RunFailed,
    RunFinished,
    RunStarted,
    Status,
    StepLogged,
    event_from_dict,
    fmt_duration,
)
from engine.faults import kill_point
from engine.files import atomic_write_text, make_temp_dir, not_a_folder, rename_durably, seal_tree

CONFIG_FILE = "config.yaml"
#: How a run folder's name starts: when it was made.
RUN_STAMP = "%Y%m%d-%H%M%S"
EVENTS_FILE = "events.jsonl"
SUMMARY_FILE = "summary.json"
LOG_FILE = "run.log"
MODEL_DIR = "model"
CHECKPOINTS_DIR = "checkpoints"
LOCK_FILE = ".lock"
#: The states of a run that some process trains now.
LIVE = ("running", "paused")
#: Where commands that take --runs-dir look without it, as the config's output.runs_dir default.
DEFAULT_RUNS_DIR = "runs"
#: --runs-dir of the commands that find a run by its name or a prefix of it.
RUNS_DIR_HELP = "the runs folder where a run's name or prefix is looked up (default: runs)"
#: Where the process that trains a run keeps its pid, host, state and heartbeat (engine.live.Beacon).
LIVE_FILE = "live.json"
#: A heartbeat older than this, from a process on another host, means the run is gone.
STALE_SECONDS = 30.0


def slugify(text: str, limit: int = 48) -> str:
    """A file-name-safe slug: letters, digits, '-', '_' and '.', never '..' or a path separator."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    slug = re.sub(r"\.{2,}", ".", slug)
    return slug[:limit] or "run"


def default_run_name(cfg: RunConfig) -> str:
    model = cfg.model.name_or_path.rstrip("/").split("/")[-1]
    # a run folder as the model ("20261207-130342-classification-minilm"): the model it names, not the whole folder
    model = re.sub(r"^\d{8}-\d{6}-", "", model).removeprefix(f"{cfg.task}-")
    return f"{cfg.task}-{model}"


class EventLog:
    """Appends events to ``events.jsonl``, one whole line each, flushed; thread-safe.

    Writing never raises: a full disk must not turn every event into a crash. The first failure is kept in
    ``write_error`` and later writes are skipped.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.write_error: OSError | None = None
        self._lock = threading.Lock()
        self._fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._end_torn_line()

    def _end_torn_line(self) -> None:
        # A process killed mid-write leaves a last line without its newline; the next event must not be glued
        # to it (read_events skips the torn line, and would skip the glued event with it).
        size = self._fh.seek(0, os.SEEK_END)
        if size:
            with open(self.path, "rb") as raw:
                raw.seek(size - 1)
                if raw.read(1) != b"\n":
                    self._fh.write("\n")
                    self._fh.flush()

    def write(self, event: Event) -> None:
        line = json.dumps(event.to_dict(), ensure_ascii=False, allow_nan=True) + "\n"
        with self._lock:
            if self._fh.closed or self.write_error is not None:
                return
            try:
                self._fh.write(line)
                self._fh.flush()
            except OSError as exc:
                self.write_error = exc

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                with contextlib.suppress(OSError):
                    self._fh.flush()
                    os.fsync(self._fh.fileno())
                with contextlib.suppress(OSError):
                    self._fh.close()


def read_events(path: Path) -> list[Event]:
    """Events from a JSONL file; a torn, garbled or unknown line is skipped rather than failing the whole read."""
    events: list[Event] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:  # a bad byte spoils its line only
            for line in fh:
                try:
                    events.append(event_from_dict(json.loads(line)))
                except (ValueError, KeyError, TypeError):
                    continue
    except FileNotFoundError:
        pass
    return events


@dataclass
class RunDir:
    path: Path

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def events_path(self) -> Path:
        return self.path / EVENTS_FILE

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def log_path(self) -> Path:
        return self.path / LOG_FILE

    @property
    def model_dir(self) -> Path:
        return self.path / MODEL_DIR

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def name(self) -> str:
        return self.path.name

    def write_summary(self, summary: dict[str, Any]) -> None:
        kill_point("summary-write")
        atomic_write_text(self.summary_path, json.dumps(summary, indent=2, allow_nan=True) + "\n")

    def read_summary(self) -> dict[str, Any] | None:
        return _read_summary(os.path.join(self.path, SUMMARY_FILE))

    def events(self) -> list[Event]:
        return read_events(self.events_path)

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK_FILE

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run's lock while it trains, so that a second process cannot resume it at the same time.

        The operating system drops the lock when the process dies, even on SIGKILL, so a killed run is never
        mistaken for a running one.
        """
        fh = open(self.lock_path, "a+", encoding="utf-8")  # noqa: SIM115 - closed below
        try:
            if not _try_lock(fh):
                raise RunFolderError(
                    f"{self.path}: this run is being trained by another process; wait for it, or stop it first"
                )
            fh.seek(0)
            fh.truncate()
            fh.write(f"{os.getpid()}\n")
            fh.flush()
            yield
        finally:
            fh.close()

    def read_live(self) -> dict[str, Any] | None:
        try:
            record = json.loads((self.path / LIVE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def live_state(self, record: dict[str, Any] | None = None) -> str | None:
        """ "running" or "paused" while some process trains the run, else None; ``record``: live.json as already
        read (``read_live``), else it is read here.

        On this host the run's lock says it (the system drops it when the process dies, even on SIGKILL); a process
        on another host sharing the folder counts while its heartbeat is fresh.
        """
        if record is None:
            record = self.read_live() or {}
        state = str(record.get("state") or "running")
        if self.is_running():
            return state
        elsewhere = record.get("host") not in (None, socket.gethostname())
        fresh = time.time() - float(record.get("heartbeat") or 0.0) < STALE_SECONDS
        return state if elsewhere and fresh else None

    def is_running(self) -> bool:
        """Whether some process holds this run's lock right now."""
        if not self.lock_path.exists():
            return False
        try:
            with open(self.lock_path, "a+", encoding="utf-8") as fh:
                return not _try_lock(fh)
        except OSError:
            return False


def _try_lock(fh: Any) -> bool:
    """Take an exclusive, non-blocking lock on an open file; True when taken (or locks are unsupported)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; resuming a live run is the user's to avoid
        return True
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def create_run_dir(cfg: RunConfig, runs_dir: str | os.PathLike[str] | None = None) -> RunDir:
    """Make a fresh run folder under the runs folder and write the resolved config into it.

    The folder name is a slug of ``output.run_name`` (no separators, no ``..``), so whatever the config
    says, the run lands directly inside the runs folder.
    """
    root = Path(runs_dir if runs_dir is not None else cfg.output.runs_dir).expanduser()
    name = slugify(cfg.output.run_name or default_run_name(cfg))
    stamp = time.strftime(RUN_STAMP)
    path: Path | None = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        for n in range(1000):
            candidate = root / (f"{stamp}-{name}" if n == 0 else f"{stamp}-{name}-{n}")
            try:
                candidate.mkdir()
            except FileExistsError:
                continue
            path = candidate
            break
        if path is None:
            raise RunFolderError(f"output.runs_dir: {root} already holds 1000 runs named {stamp}-{name}")
        if path.resolve().parent != root.resolve():  # slugify makes this impossible; keep it impossible
            raise RunFolderError(f"output.run_name: {cfg.output.run_name!r} would leave the runs folder")
        run = RunDir(path)
        atomic_write_text(run.config_path, cfg.to_yaml())
    except OSError as exc:
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)
        why = not_a_folder(root)
        if why is not None:
            raise RunFolderError(f"output.runs_dir: {root} {why}; choose a folder with --runs-dir") from None
        raise RunFolderError(
            f"output.runs_dir: cannot write to {root} ({exc.strerror}); choose a writable folder with --runs-dir"
        ) from None
    return run


def open_run_dir(path: str | os.PathLike[str]) -> RunDir:
    """An existing run folder to resume; refuses what is not a run, already finished, or running now."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise RunFolderError(f"{p}: no such run folder; see tunebench runs for the runs there are")
    run = RunDir(p)
    if not run.config_path.is_file():
        raise RunFolderError(f"{p}: not a run folder (it has no {CONFIG_FILE}); pass a folder under the runs folder")
    summary = run.read_summary() or {}
    if summary.get("status") == "finished":
        raise RunFolderError(f"{p}: this run already finished; start a new run to train further")
    if run.is_running():
        raise RunFolderError(f"{p}: this run is being trained by another process; wait for it, or stop it first")
    return run


def run_ref(run: RunDir) -> str:
    """``run`` as follow, pause, resume and stop find it from here: its name in ./runs (their --runs-dir
    default), else its folder."""
    return str(run.path) if runs_dir_option(run.path.parent) else run.name


def runs_dir_option(runs_dir: str | os.PathLike[str]) -> str:
    """ " --runs-dir DIR" for a command a message suggests, where DIR is not the default it would use."""
    root = Path(runs_dir).expanduser()
    return "" if root.resolve() == Path(DEFAULT_RUNS_DIR).resolve() else f" --runs-dir {runs_dir}"


def remove_run_dir(run: RunDir) -> None:
    """Delete a run folder that holds nothing worth keeping (a run that failed before its first step)."""
    shutil.rmtree(run.path, ignore_errors=True)


def save_dir_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_dir)`` and move the result to ``path``, replacing an older copy only when complete."""
    tmp = make_temp_dir(path.parent, f".{path.name}.")
    try:
        write(tmp)
        seal_tree(tmp)
        kill_point("model-save")
        old = path.with_name(f".{path.name}.old")
        if path.exists():
            os.replace(path, old)
        rename_durably(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def live_progress(run: RunDir, *, paused: bool = False, live: dict[str, Any] | None = None) -> str:
    """ "37/114 · loss 1.4531 · ETA 1:29" for a live run: its step from live.json (``live``: as already read), its
    last logged loss and ETA from the end of events.jsonl (read from the end, so a long run costs no more than a
    short one). A paused run has no ETA."""
    step = (live if live is not None else run.read_live() or {}).get("step")
    logged = _last_step_logged(run.events_path)
    parts = []
    if isinstance(step, list) and len(step) == 2:
        parts.append(f"{step[0]}/{step[1]}")
    elif logged is not None:
        parts.append(f"{logged.step}/{logged.total_steps}")
    if logged is not None:
        parts.append(f"loss {logged.loss:.4f}")
        if not paused:
            parts.append(f"ETA {fmt_duration(logged.eta_seconds)}")
    return " · ".join(parts)


def _last_events(path: Path, types: tuple[bytes, ...], tail_bytes: int = 65536) -> Iterator[Event]:
    """The events of these types near the end of an events.jsonl, last first (so a long run costs no more)."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - tail_bytes))
            lines = fh.read().split(b"\n")
    except OSError:
        return
    for line in reversed(lines):
        if not any(t in line for t in types):
            continue
        try:
            yield event_from_dict(json.loads(line))
        except (ValueError, KeyError, TypeError):
            continue


def _last_step_logged(path: Path) -> StepLogged | None:
    return next((e for e in _last_events(path, (b'"StepLogged"',)) if isinstance(e, StepLogged)), None)


def ended_status(path: Path) -> str | None:
    """How a run's last session ended, from the end of its events.jsonl: "finished", "stopped" or "failed"; None
    when it ended without a word (killed) or is still going. For a run whose summary.json is missing or damaged."""
    for event in _last_events(path, (b'"RunFinished"', b'"RunFailed"', b'"RunStarted"', FIRST_STAGE.encode())):
        if isinstance(event, RunFinished):
            return event.status
        if isinstance(event, RunFailed):
            return "failed"
        if isinstance(event, RunStarted) or (isinstance(event, Status) and event.stage == FIRST_STAGE):
            return None  # a session after the last end began and said nothing more
    return None


def failure_of(summary: dict[str, Any], events: list[Event]) -> str | None:
    """Why a run failed, when its last session did: its summary's error, else its last RunFailed's (a run whose
    summary was not written); None for a run that did not end failed."""
    if summary.get("status") == "failed" and summary.get("error"):
        return str(summary["error"])
    for event in reversed(events):
        if isinstance(event, RunFailed):
            return event.error
        if isinstance(event, RunFinished | RunStarted):
            return None
    return None


@dataclass
class RunInfo:
    """One row of the runs list."""

    path: Path
    name: str
    status: str
    task: str
    model: str
    started: float
    duration_seconds: float | None
    best_metric: str | None
    best_value: float | None
    #: The most memory the run held (GPU memory on CUDA, else the process's resident memory), in MiB.
    peak_memory_mb: float | None = None
    #: A live run's progress: "37/114 · loss 1.4531 · ETA 1:29".
    progress: str = ""
    #: The run it was cloned from (a folder name beside it), and the sweep it belongs to (``output.parent``,
    #: ``output.sweep``).
    parent: str | None = None
    sweep: str | None = None

    @property
    def status_text(self) -> str:
        return f"{self.status} {self.progress}" if self.progress else self.status

    @property
    def best_text(self) -> str:
        """ "acc 0.8000", "eval loss 0.3100" or "-"."""
        if not self.best_metric or self.best_value is None:
            return "-"
        name = {"accuracy": "acc", "eval_loss": "eval loss"}.get(self.best_metric, self.best_metric)
        return f"{name} {self.best_value:.4f}"

    @property
    def started_text(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(self.started))


class RunsCache:
    """The runs a listing made from summaries, each under its summary.json's stat: a later listing of the same
    folder reads only the summaries that changed (a finished run's never does). A new summary is a new file
    (``atomic_write_text``), so the stat tells it."""

    def __init__(self) -> None:
        self.runs: dict[str, tuple[tuple[int, int, int], RunInfo]] = {}


def run_entries(runs_dir: str | os.PathLike[str]) -> list[os.DirEntry[str]]:
    """The run folders under ``runs_dir`` (those with a config.yaml), by name; none when it cannot be read."""
    try:
        with os.scandir(os.path.expanduser(runs_dir)) as scan:
            # DirEntry and os.path, not Path: a runs folder holds thousands of runs, and Path's joins add up.
            folders = sorted((e for e in scan if not e.name.startswith(".") and e.is_dir()), key=lambda e: e.name)
    except OSError:  # no such folder, or not a folder
        return []
    return [e for e in folders if os.path.exists(os.path.join(e.path, CONFIG_FILE))]


def list_runs(runs_dir: str | os.PathLike[str], cache: RunsCache | None = None) -> list[RunInfo]:
    """Runs under ``runs_dir``, newest first, summarised from summary.json or, for live runs, events.jsonl."""
    known = cache.runs if cache is not None else {}
    seen: dict[str, tuple[tuple[int, int, int], RunInfo]] = {}
    out: list[RunInfo] = []
    for entry in reversed(run_entries(runs_dir)):
        info = _summarised(entry, known, seen)
        if info is None:
            path = Path(entry.path)
            run = RunDir(path)
            live = run.read_live() or {}
            status = run.live_state(live) or ended_status(run.events_path) or "killed"
            info = RunInfo(path, entry.name, status, "", "", _made(entry), None, None, None)
            _from_config(run, info)
            # live.json says the run's best score so far; a killed run's is its last word, with its seconds.
            best = live.get("best")
            if isinstance(best, list) and len(best) == 2 and isinstance(best[1], int | float):
                info.best_metric, info.best_value = str(best[0]), float(best[1])
            if status in LIVE:
                info.progress = live_progress(run, paused=status == "paused", live=live)
            elif isinstance(live.get("seconds"), int | float):
                info.duration_seconds = float(live["seconds"])
        out.append(info)
    if cache is not None:
        cache.runs = seen  # only the runs still there
    out.sort(key=lambda r: r.status not in LIVE)  # live runs first, each group newest first
    return out


def _summarised(
    entry: os.DirEntry[str],
    known: dict[str, tuple[tuple[int, int, int], RunInfo]],
    seen: dict[str, tuple[tuple[int, int, int], RunInfo]],
) -> RunInfo | None:
    """The run as its summary.json tells it (None without one): from ``known`` while the file is unchanged."""
    path = os.path.join(entry.path, SUMMARY_FILE)
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (st.st_ino, st.st_size, st.st_mtime_ns)
    hit = known.get(path)
    if hit is not None and hit[0] == key:
        info = hit[1]
    else:
        summary = _read_summary(path)
        if not summary:
            return None
        info = _run_info(entry, summary)
    seen[path] = (key, info)
    return info


def _made(entry: os.DirEntry[str]) -> float:
    """When a run without a summary's start time began: the stamp its folder's name starts with (create_run_dir
    names it so), else when its config was written. Not the folder's own time: each file added changes it."""
    try:
        return time.mktime(time.strptime(entry.name[:15], RUN_STAMP))
    except ValueError:
        try:
            return os.stat(os.path.join(entry.path, CONFIG_FILE)).st_mtime
        except OSError:
            return entry.stat().st_mtime


def _run_info(entry: os.DirEntry[str], summary: dict[str, Any]) -> RunInfo:
    started = summary.get("started")
    return RunInfo(
        path=Path(entry.path),
        name=entry.name,
        status=str(summary.get("status", "unknown")),
        task=str(summary.get("task", "")),
        model=str(summary.get("model", "")),
        started=float(started if started is not None else _made(entry)),
        duration_seconds=summary.get("duration_seconds"),
        best_metric=summary.get("best_metric"),
        best_value=summary.get("best_value"),
        peak_memory_mb=summary.get("peak_memory_mb"),
        parent=summary.get("parent"),
        sweep=summary.get("sweep"),
    )


def _read_summary(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.loads(fh.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _safe_yaml(text: str) -> Any:
    """``yaml.safe_load`` through libyaml's safe loader where PyYAML has it: several times faster than the
    pure-Python one, and a runs folder's killed runs add up."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _from_config(run: RunDir, info: RunInfo) -> None:
    """Fill ``info``'s task, model, ``output.parent`` and ``output.sweep`` from the run's config.yaml: a run
    without a summary (live, killed) has them nowhere else."""
    try:
        cfg = _safe_yaml(run.config_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return
    if not isinstance(cfg, dict):
        return
    model, output = cfg.get("model"), cfg.get("output")
    info.task = str(cfg.get("task") or "")
    info.model = str(model.get("name_or_path") or "") if isinstance(model, dict) else ""
    if isinstance(output, dict):
        parent, sweep = output.get("parent"), output.get("sweep")
        info.parent, info.sweep = (str(parent) if parent else None), (str(sweep) if sweep else None)


def lineage(name: str, runs: list[RunInfo]) -> list[str]:
    """``name`` and the runs it descends from, nearest first, as far as ``runs`` holds them."""
    parents = {r.name: r.parent for r in runs}
    chain = [name]
    while (parent := parents.get(chain[-1])) and parent not in chain:
        chain.append(parent)
    return chain
