"""A live run's folder: how the process that trains a run and whoever watches or controls it meet.

The run's process (the Runner, wherever it runs) keeps a ``Beacon`` in the folder while it holds the run's lock:

- ``live.json``: its pid, host, state (running or paused), a heartbeat time, and what ``events.jsonl`` leaves out
  as too frequent (the step under way, the device's last reading); rewritten (by rename) at least every
  ``HEARTBEAT_SECONDS``, and within ``LIVE_EVERY_SECONDS`` of a change, from a thread of its own, so also while
  paused or evaluating, and never by the training thread;
- ``commands/``: a folder only the run's user may enter (0700). A command is an empty file (0600) named
  ``<nanoseconds>-<pid>.<command>``; the beacon looks every ``POLL_SECONDS``, hands it to the run's RunControl
  (obeyed at the next optimizer step; a pause wakes within 0.5 s) and deletes it. A file owned by another user
  is ignored.

Commands are files, not a Unix socket: a socket's path is limited to 108 bytes, which a deep run folder (or one
with a long unicode name) exceeds, and a file needs no listener and works on any path. Nothing listens on a port.

A viewer (``EventFollower``) reads ``events.jsonl`` by byte offset and writes nothing but commands.
"""

from __future__ import annotations

import contextlib
import difflib
import gc
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson

from engine.errors import AmbiguousRunError, RunFolderError
from engine.events import (
    EVENTS_FORMAT,
    DeviceUsage,
    Event,
    Paused,
    Resumed,
    RunStarted,
    StepDone,
    event_from_dict,
    events_from_dicts,
)
from engine.runs import CONFIG_FILE, LIVE_FILE, RunDir, run_entries, runs_dir_option

if TYPE_CHECKING:
    from engine.control import RunControl

log = logging.getLogger("tunebench.live")

COMMANDS_DIR = "commands"
COMMANDS = ("pause", "resume", "stop")
#: How often the beacon looks for commands: a directory listing, twenty times a second, for a pause within a
#: step and 100 ms of the key (docs/perf-log.md, cause 20).
POLL_SECONDS = 0.05
#: How often it rewrites its heartbeat.
HEARTBEAT_SECONDS = 5.0
#: How soon a change (pause, step, device reading) reaches live.json.
LIVE_EVERY_SECONDS = 0.5


class Beacon:
    """The run process's side: heartbeat and commands, on a daemon thread, while the run holds its lock."""

    def __init__(self, run: RunDir, control: RunControl, clock: Callable[[], float] | None = None) -> None:
        self.run = run
        self.control = control
        #: The run's seconds so far, over all its sessions and less its pauses (``_Summary.duration``): a run
        #: killed before its summary lists them from here.
        self.clock = clock
        self.state = "running"
        #: The step under way and the run's steps in all (StepDone), and the device's last reading (DeviceUsage).
        self.step: tuple[int, int] | None = None
        self.usage: dict[str, Any] | None = None
        #: The run's headline score so far, [metric, value] (``set_best``): a live run has no summary to list it.
        self.best: list[Any] | None = None
        self._changed = True
        self._state_changed = False
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def commands_dir(self) -> Path:
        return self.run.path / COMMANDS_DIR

    def start(self) -> None:
        self.commands_dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.commands_dir, 0o700)  # mkdir's mode is cut by the umask, and the folder may be older
        for stale in self.commands_dir.iterdir():  # meant for an earlier session of the run, now gone
            with contextlib.suppress(OSError):
                stale.unlink()
        self._beat()
        self._thread = threading.Thread(target=self._loop, name="tunebench-beacon", daemon=True)
        self._thread.start()

    def see(self, event: Event) -> None:
        """Take in the run's state (a pause is real once the training loop obeys it), step and device reading;
        called on the run's thread, so it only keeps them for the beacon's thread to write."""
        if isinstance(event, Paused | Resumed | RunStarted):
            state = "paused" if isinstance(event, Paused) else "running"
            # A viewer that has read the Paused event may look at live.json next: a new state goes out at once.
            self._state_changed = self._state_changed or state != self.state
            self.state = state
        elif isinstance(event, StepDone):
            self.step = (event.step, event.total_steps)
        elif isinstance(event, DeviceUsage):
            self.usage = {k: v for k, v in event.to_dict().items() if k not in ("type", "time")}
        else:
            return
        self._changed = True

    def set_best(self, metric: str, value: float) -> None:
        """The run's best score so far, after an evaluation (called on the run's thread, as ``see``)."""
        self.best = [metric, value]
        self._changed = True

    def close(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        with contextlib.suppress(OSError):
            (self.run.path / LIVE_FILE).unlink()

    def _loop(self) -> None:
        last_beat = time.monotonic()
        while not self._done.wait(POLL_SECONDS):
            try:
                self._obey_commands()
                since = time.monotonic() - last_beat
                if since >= HEARTBEAT_SECONDS or self._state_changed or (self._changed and since >= LIVE_EVERY_SECONDS):
                    self._beat()
                    last_beat = time.monotonic()
            except OSError as exc:  # a full disk or a removed folder must not end the run
                log.debug("beacon: %s", exc)

    def _beat(self) -> None:
        self._changed = self._state_changed = False
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "state": self.state,
            "heartbeat": time.time(),
            "step": self.step,
            "usage": self.usage,
            "best": self.best,
            "seconds": self.clock() if self.clock is not None else None,
        }
        # Renamed into place, not synced: a reading that a crash loses is worth nothing anyway.
        path = self.run.path / LIVE_FILE
        tmp = path.with_name(f".{LIVE_FILE}.tmp")
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(record) + "\n", encoding="utf-8")
            os.replace(tmp, path)

    def _obey_commands(self) -> None:
        for path in sorted(self.commands_dir.iterdir()):
            command = path.name.rpartition(".")[2]
            try:
                owner = path.stat().st_uid
                path.unlink()
            except FileNotFoundError:
                continue
            if owner != os.getuid():
                log.warning("ignored %s: the file belongs to another user than the run's", path.name)
            elif command == "stop":
                self.control.request_stop()
            elif command == "pause":
                self.control.request_pause()
            elif command == "resume":
                self.control.request_resume()


def send_command(run: RunDir, command: str) -> None:
    """Leave ``command`` (pause, resume or stop) for the live run in ``run``; RunFolderError if it is not live."""
    if command not in COMMANDS:
        raise ValueError(command)
    if run.live_state() is None:
        summary = run.read_summary() or {}
        status = summary.get("status") or "killed"
        again = f" (tunebench run --resume {run.path} continues it)" if status != "finished" else ""
        raise RunFolderError(f"{run.name} is not live: it is {status}{again}")
    folder = run.path / COMMANDS_DIR
    path = folder / f"{time.time_ns()}-{os.getpid()}.{command}"
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        raise RunFolderError(f"cannot leave a command in {folder} ({exc.strerror}); is this run yours?") from None


def has_pending_commands(run: RunDir) -> bool:
    """Whether a command left with ``send_command`` waits in ``run``'s folder for the run to take it."""
    return any((run.path / COMMANDS_DIR).glob("*.*"))


def resolve_run(name: str, runs_dir: str | os.PathLike[str]) -> RunDir:
    """A run folder given as a path, a name in ``runs_dir``, or a unique prefix of a name there."""
    path, root = Path(name).expanduser(), Path(runs_dir).expanduser()
    listing = f"tunebench runs{runs_dir_option(root)} lists them"
    if not name.strip():
        raise RunFolderError(f"no run given; name a run folder, its name in {root}/ or a prefix of it ({listing})")
    for candidate in (path, root / name):
        if (candidate / CONFIG_FILE).is_file():
            return RunDir(candidate)
    for candidate in (path, root / name):
        if candidate.is_dir():
            raise RunFolderError(
                f"{candidate}: not a run folder (it has no {CONFIG_FILE}); pass a folder under the runs folder"
            )
    names = [e.name for e in run_entries(root)]
    if path.is_file() and not any(n.startswith(name) for n in names):
        raise RunFolderError(f"{path}: a file, not a run folder; give a run's folder ({listing})")
    if os.sep in name:  # a path, not a name
        raise RunFolderError(f"{path}: no such run folder; see tunebench runs for the runs there are")
    found = [n for n in names if n.startswith(name)]
    if len(found) == 1:
        return RunDir(root / found[0])
    if found:
        raise AmbiguousRunError(f"{name} matches {len(found)} runs ({_some(found)}); give more of the name")
    # Runs are named by their date first: a task or a model alone is no prefix, but says which run was meant.
    inside = [n for n in names if name in n]
    if len(inside) > 1:
        raise RunFolderError(f"{name}: no run name starts with it; {len(inside)} hold it ({_some(inside)})")
    if inside:
        hint = f' (did you mean "{inside[0]}"?)'
    else:  # a name alike by its date may be another run, where the one meant lies in another runs folder
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.75)
        hint = f' (did you mean "{close[0]}", or another --runs-dir?)' if close else f"; {listing}"
    raise RunFolderError(f"{name}: no run by that path, name or prefix in {root}/{hint}")


def _some(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


class EventFollower:
    """Reads the events a run appends to ``events.jsonl``, from a byte offset on; a torn last line waits for the
    rest of it, and a file that grows while it reads is read on at the next ``poll``.

    The file is opened once (at ``open`` or the first ``poll`` that finds it) and read through that handle, which
    goes on reading what was written even if the folder is removed meanwhile.
    """

    def __init__(self, path: Path, offset: int = 0) -> None:
        self.path = path
        self.offset = offset
        self._partial = b""
        self._fh: BinaryIO | None = None

    def open(self) -> bool:
        """Open the file now if it is there; True when it is open."""
        if self._fh is None:
            try:
                self._fh = open(self.path, "rb")  # noqa: SIM115 - closed in close()
            except FileNotFoundError:
                return False
        return True

    def poll(self) -> list[Event]:
        if not self.open():
            return []
        assert self._fh is not None
        self._fh.seek(self.offset)
        chunk = self._fh.read()
        self.offset += len(chunk)
        text = self._partial + chunk
        end = text.rfind(b"\n")
        if end < 0:  # no whole line yet
            self._partial = text
            return []
        self._partial = text[end + 1 :]  # the text after the last newline: a line still being written
        body = text[:end]
        if body.count(b"\n") >= 1000:  # a long history: one JSON document parses several times faster than its lines
            with _no_collections():
                return self._parse_many(body)
        return [event for event in map(_parse, body.split(b"\n")) if event is not None]

    @staticmethod
    def _parse_many(body: bytes) -> list[Event]:
        """The events of many whole lines (``body`` holds no last newline)."""
        document = b"[" + body.replace(b"\n", b",") + b"]"
        # orjson parses it in under half json's time, but refuses the NaN and Infinity that json writes (a
        # diverged loss): json then takes the whole document, and a bad line sends it line by line.
        for loads in (orjson.loads, json.loads):
            try:
                events = events_from_dicts(loads(document))
                for event in events:
                    if type(event) is RunStarted:
                        _check_format(event)
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            return events
        return [event for event in map(_parse, body.split(b"\n")) if event is not None]

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


@contextlib.contextmanager
def _no_collections() -> Iterator[None]:
    """Keep the cyclic collector off while a long history is built: its events are plain dicts of numbers, with
    no cycles to find, yet the collections their allocations set off walk them again and again. (Whether to
    freeze them afterwards is the front's choice: the workbench does, tui/heap.py.)"""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _parse(line: bytes) -> Event | None:
    try:
        return _event(json.loads(line))
    except (ValueError, KeyError, TypeError, AttributeError):  # AttributeError: a line that is no JSON object
        return None


def _event(record: dict[str, Any]) -> Event:
    event = event_from_dict(record)
    if isinstance(event, RunStarted):
        _check_format(event)
    return event


def _check_format(event: RunStarted) -> None:
    if event.format > EVENTS_FORMAT:
        raise RunFolderError(
            f"{Path(event.run_dir).name} was written by a newer Tunebench (events format {event.format}; this one "
            f"reads {EVENTS_FORMAT}); upgrade tunebench to follow it"
        )
