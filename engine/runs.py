"""Run folders: ``runs/<timestamp>-<name>/`` with config.yaml, events.jsonl, checkpoints/, model/, summary.json.

Nothing is written half: files go to a temporary name and are renamed; JSONL lines are appended whole and
flushed, and a torn last line (a crash mid-write) is skipped on read.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.config import RunConfig
from engine.errors import UserError
from engine.events import Event, event_from_dict

CONFIG_FILE = "config.yaml"
EVENTS_FILE = "events.jsonl"
SUMMARY_FILE = "summary.json"
LOG_FILE = "run.log"
MODEL_DIR = "model"
CHECKPOINTS_DIR = "checkpoints"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, fsync, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def slugify(text: str, limit: int = 48) -> str:
    """A file-name-safe slug: letters, digits, '-', '_' and '.', never '..' or a path separator."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    slug = re.sub(r"\.{2,}", ".", slug)
    return slug[:limit] or "run"


def default_run_name(cfg: RunConfig) -> str:
    model = cfg.model.name_or_path.rstrip("/").split("/")[-1]
    return f"{cfg.task}-{model}"


class EventLog:
    """Appends events to ``events.jsonl``, one whole line each, flushed; thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, event: Event) -> None:
        line = json.dumps(event.to_dict(), ensure_ascii=False, allow_nan=True) + "\n"
        with self._lock:
            if self._fh.closed:
                return
            self._fh.write(line)
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                os.fsync(self._fh.fileno())
                self._fh.close()


def read_events(path: Path) -> list[Event]:
    """Events from a JSONL file; a torn or unknown line is skipped rather than failing the whole read."""
    events: list[Event] = []
    try:
        with open(path, encoding="utf-8") as fh:
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
        atomic_write_text(self.summary_path, json.dumps(summary, indent=2, allow_nan=True) + "\n")

    def read_summary(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.summary_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def events(self) -> list[Event]:
        return read_events(self.events_path)


def create_run_dir(cfg: RunConfig, runs_dir: str | os.PathLike[str] | None = None) -> RunDir:
    """Make a fresh run folder under the runs folder and write the resolved config into it."""
    root = Path(runs_dir if runs_dir is not None else cfg.output.runs_dir).expanduser()
    name = slugify(cfg.output.run_name or default_run_name(cfg))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        root.mkdir(parents=True, exist_ok=True)
        for n in range(1000):
            path = root / (f"{stamp}-{name}" if n == 0 else f"{stamp}-{name}-{n}")
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
        run = RunDir(path)
        atomic_write_text(run.config_path, cfg.to_yaml())
    except OSError as exc:
        raise UserError(
            f"output.runs_dir: cannot write to {root} ({exc.strerror}); choose a writable folder with --runs-dir"
        ) from None
    return run


def save_dir_atomically(path: Path, write: Any) -> None:
    """Call ``write(tmp_dir)`` and move the result to ``path``, replacing an older copy only when complete."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        write(tmp)
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        old = path.with_name(f".{path.name}.old")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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


def list_runs(runs_dir: str | os.PathLike[str]) -> list[RunInfo]:
    """Runs under ``runs_dir``, newest first, summarised from summary.json or, for live runs, events.jsonl."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    out: list[RunInfo] = []
    for path in sorted(root.iterdir(), reverse=True):
        if not path.is_dir() or path.name.startswith(".") or not (path / CONFIG_FILE).exists():
            continue
        run = RunDir(path)
        summary = run.read_summary() or {}
        if summary:
            out.append(
                RunInfo(
                    path=path,
                    name=path.name,
                    status=str(summary.get("status", "unknown")),
                    task=str(summary.get("task", "")),
                    model=str(summary.get("model", "")),
                    started=float(summary.get("started", path.stat().st_mtime)),
                    duration_seconds=summary.get("duration_seconds"),
                    best_metric=summary.get("best_metric"),
                    best_value=summary.get("best_value"),
                )
            )
        else:
            out.append(RunInfo(path, path.name, "running or killed", "", "", path.stat().st_mtime, None, None, None))
    return out
