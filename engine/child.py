"""A run in a child process: the same events, control and result as ``Runner``, in an interpreter of its own.

A run in a thread shares the interpreter lock with whatever else the process does: the workbench's UI thread
then takes training time whenever it draws (BENCHMARKS.md has what a panel switch cost the training thread).
``ChildRun`` runs the ``Runner`` in a child Python instead; the parent reads the events the child writes and
calls its subscribers, on the thread that called ``run()``.

The channel is line-based JSON: the child writes each event's ``to_dict()`` (what ``events.jsonl`` holds) and,
last, the run's result on its original stdout (its own prints and library output go to its stderr);
the parent writes ``pause``, ``resume`` and ``stop`` to the child's stdin. The end of the child's stdin means
the parent is gone: the run stops at the next step and saves, as it would on ``stop``.

    python -m engine.child [--torch-threads N] CONFIG_YAML_TEXT     # or: ... --resume RUN_DIR

``--torch-threads N`` applies where the config leaves ``train.torch_threads`` null (the workbench leaves the UI
a core of its own).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from engine.config import RunConfig, from_dict, load_config, parse_yaml
from engine.errors import UserError
from engine.events import Emit, Event, RunFailed, RunStarted, event_from_dict
from engine.runner import Runner, RunResult, fan_out
from engine.runs import open_run_dir

COMMANDS = ("pause", "resume", "stop")
#: Lines of the child's stderr kept for the message when it dies without a result.
STDERR_TAIL = 20


class ChildRun:
    """Runs ``cfg`` (or continues ``resume_dir``) in a child process; ``run()`` blocks until it has ended."""

    def __init__(
        self,
        cfg: RunConfig,
        *,
        subscribers: list[Emit] | tuple[Emit, ...] = (),
        resume_dir: Path | None = None,
        torch_threads: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.resume_dir = resume_dir
        #: Torch threads for a config that leaves ``train.torch_threads`` null.
        self.torch_threads = torch_threads
        self._subscribers = list(subscribers)
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        #: Commands given before the child started, sent as soon as it has.
        self._pending: list[str] = []

    @classmethod
    def from_run_dir(
        cls, path: str | Path, *, subscribers: list[Emit] | tuple[Emit, ...] = (), torch_threads: int | None = None
    ) -> ChildRun:
        """Continue the stopped, failed or killed run in ``path``; raises UserError at once if it cannot be."""
        run = open_run_dir(path)
        return cls(
            load_config(run.config_path), subscribers=subscribers, resume_dir=run.path, torch_threads=torch_threads
        )

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    # -- control (any thread) ---------------------------------------------------------------------------------
    def pause(self) -> None:
        self._send("pause")

    def resume(self) -> None:
        self._send("resume")

    def stop(self) -> None:
        self._send("stop")

    def _send(self, command: str) -> None:
        with self._lock:
            if self._process is None:
                self._pending.append(command)
                return
            stdin = self._process.stdin
            try:
                assert stdin is not None
                stdin.write(command + "\n")
                stdin.flush()
            except (ValueError, OSError):  # the child has ended (or is ending): nothing to control
                pass

    # -- the run ----------------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        """Start the child, pass each of its events to the subscribers, and return its result."""
        args = ["--torch-threads", str(self.torch_threads)] if self.torch_threads else []
        args += ["--resume", str(self.resume_dir)] if self.resume_dir is not None else [self.cfg.to_yaml()]
        process = subprocess.Popen(
            [sys.executable, "-m", "engine.child", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            encoding="utf-8",
            errors="replace",  # a library's stray bytes on stderr must not stop the drain (and block the child)
            bufsize=1,
        )
        with self._lock:
            self._process = process
            pending, self._pending = self._pending, []
        for command in pending:
            self._send(command)
        assert process.stdout is not None and process.stderr is not None
        tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
        drain = threading.Thread(target=_drain, args=(process.stderr, tail), name="tunebench-child-stderr", daemon=True)
        drain.start()
        result: RunResult | None = None
        run_dir: Path | None = None
        for line in process.stdout:
            try:
                message = json.loads(line)
            except ValueError:  # the last line of a child killed mid-write
                tail.append(line)
                continue
            if "result" in message:
                result = _result_from_dict(message["result"])
                continue
            event = event_from_dict(message)
            if isinstance(event, RunStarted):
                run_dir = Path(event.run_dir)
            self._fan_out(event)
        code = process.wait()
        drain.join(timeout=5)
        with self._lock:
            if process.stdin is not None:
                process.stdin.close()
        if result is None:
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            last = next((line.strip() for line in reversed(tail) if line.strip()), "")
            error = f"the training process {how} before the run ended" + (f": {last}" if last else "")
            self._fan_out(RunFailed(error=error, user_error=False, traceback="".join(tail)))
            result = RunResult("failed", run_dir, error=error)
        return result

    def _fan_out(self, event: Event) -> None:
        fan_out(self._subscribers, event)


def _drain(stream: IO[str], tail: collections.deque[str]) -> None:
    for line in stream:
        tail.append(line)


def _result_from_dict(data: dict[str, Any]) -> RunResult:
    run_dir = data.get("run_dir")
    return RunResult(
        status=data["status"],
        run_dir=Path(run_dir) if run_dir else None,
        metrics=data.get("metrics") or {},
        error=data.get("error"),
        user_error=bool(data.get("user_error")),
    )


# -- the child --------------------------------------------------------------------------------------------------
def _follow_commands(runner: Runner) -> None:
    for line in sys.stdin:
        command = line.strip()
        if command in COMMANDS:
            getattr(runner, command)()
    runner.stop()  # the parent is gone: stop at the next step and save


def child_main(argv: list[str]) -> int:
    # The parent stops the run (a command, or the end of stdin when it is gone), so the run can save first; a
    # Ctrl+C or a hang-up sent to the whole process group must not kill it mid-step.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # The channel is the original stdout; anything else printed there would break it, so it goes to stderr.
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    write_lock = threading.Lock()

    def send(message: dict[str, Any]) -> None:
        with write_lock:
            if channel.closed:
                return
            try:
                channel.write(json.dumps(message) + "\n")
            except OSError:  # the parent is gone: the run goes on to its stop and writes its own folder
                with contextlib.suppress(OSError):
                    channel.close()

    def emit(event: Event) -> None:
        send(event.to_dict())

    threads = None
    if argv[:1] == ["--torch-threads"]:
        threads, argv = int(argv[1]), argv[2:]
    try:
        if argv[:1] == ["--resume"]:
            runner = Runner.from_run_dir(argv[1], subscribers=[emit])
        else:
            runner = Runner(from_dict(parse_yaml(argv[0])), subscribers=[emit])
        if threads and runner.cfg.train.torch_threads is None:
            import torch  # this process is for training: torch loads now or a moment later, with the engine

            torch.set_num_threads(threads)  # a null train.torch_threads leaves torch's setting as it is
    except UserError as exc:  # the run folder was taken or finished since the parent checked it
        emit(RunFailed(error=str(exc), user_error=True))
        result = RunResult("failed", None, error=str(exc), user_error=True)
    else:
        threading.Thread(target=_follow_commands, args=(runner,), name="tunebench-commands", daemon=True).start()
        runner.start()  # in a worker thread, as every front trains; a bug outside the run becomes a failed result
        joined = runner.join()
        assert joined is not None
        result = joined
    send({"result": {**asdict(result), "run_dir": str(result.run_dir) if result.run_dir else None}})
    with write_lock, contextlib.suppress(OSError):
        channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
