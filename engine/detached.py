"""Detached runs: a run in a process of its own session, which a closed terminal or a dropped SSH session does not
reach; its folder is all anyone needs to follow and control it (engine.live).

    python -m engine.detached RUN_DIR [--resume] [--torch-threads N] [--rank]

trains the config in ``RUN_DIR`` (a fresh folder made by ``start_detached``, or a run to continue), with its
stdout and stderr in ``RUN_DIR/stdout.log`` and ``stderr.log``. SIGTERM stops it at the next step and saves.
``--torch-threads N`` applies where the config leaves ``train.torch_threads`` null (the workbench leaves the UI a
core of its own).

A run of ``launch.num_processes`` > 1 (or with ``launch.accelerate_config``) is still one such process: it becomes
the launcher, and runs the existing launcher (``torch.distributed.run``, or ``accelerate launch`` with the config
file) over ``python -m engine.detached RUN_DIR --rank``. Rank 0 is the Runner that owns the folder (lock, beacon,
events, checkpoints, model, summary); the other ranks train beside it and write nothing there. SIGTERM to the
launcher becomes a stop command for rank 0, which shares it with the others at the next step.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import gc
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

from engine.config import RunConfig, load_config, save_config
from engine.control import RunControl
from engine.errors import ConfigError, RunFolderError, UserError
from engine.events import DeviceUsage, Emit, Event, RunFailed, RunFinished, RunStarted, StepDone, plural
from engine.live import EventFollower, send_command
from engine.runner import Runner, RunResult, engine_path, fan_out, fan_out_many
from engine.runs import EVENTS_FILE, EventLog, RunDir, create_run_dir, open_run_dir, remove_run_dir

log = logging.getLogger("tunebench.detached")

STDOUT_FILE = "stdout.log"
STDERR_FILE = "stderr.log"
#: Lines of the run's stderr read for the message when its process dies.
STDERR_TAIL = 15
ERROR_PREFIX = "tunebench: error: "
#: How often a front reads the events a detached run has written (a read of an open file: cheap when there is
#: nothing new), and how often it asks whether the run is still live and reads live.json (BENCHMARKS.md,
#: live_follow.py, has what following costs and how soon a pause shows).
FOLLOW_SECONDS = 0.05
CHECK_SECONDS = 0.5


class RunDiedError(RuntimeError):
    """The run's process ended before training began, without saying why in its events."""


class DetachedRun:
    """A run in a detached process, seen from a front: ``run()`` starts it (or continues ``resume_dir``, or
    attaches to the run in ``attach_dir``), passes the events it writes to its folder to the subscribers, and
    returns once the run is no longer live, or at once when the front ``leave``s it (the run goes on).

    Pause, resume and stop go to the run's folder (engine.live); given before its process listens, they wait.
    """

    def __init__(
        self,
        cfg: RunConfig,
        *,
        subscribers: list[Emit] | tuple[Emit, ...] = (),
        runs_dir: str | Path | None = None,
        resume_dir: Path | None = None,
        attach_dir: Path | None = None,
        torch_threads: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.runs_dir = runs_dir
        self.resume_dir = resume_dir
        self.attach_dir = attach_dir
        #: Torch threads for a config that leaves ``train.torch_threads`` null.
        self.torch_threads = torch_threads
        self.run_dir: RunDir | None = None
        self.pid: int | None = None
        self._subscribers = list(subscribers)
        self._pending: list[str] = []
        self._lock = threading.Lock()
        self._left = threading.Event()

    @classmethod
    def from_run_dir(
        cls, path: str | Path, *, subscribers: list[Emit] | tuple[Emit, ...] = (), torch_threads: int | None = None
    ) -> DetachedRun:
        """Continue the stopped, failed or killed run in ``path``; raises UserError at once if it cannot be."""
        run = open_run_dir(path)
        return cls(
            load_config(run.config_path), subscribers=subscribers, resume_dir=run.path, torch_threads=torch_threads
        )

    @staticmethod
    def relaunch(path: str | Path, overrides: list[str]) -> str | None:
        """Change where the stopped run in ``path`` goes on: ``launch.*`` overrides only, written to its config.yaml.

        On another number of processes the global batch stays what it was (``per_device_train_batch_size``
        becomes it ÷ the new count), so the steps, the schedule and the place in the data stay the run's; the
        random streams (dropout, masks) cannot. Returns a note saying so, or None when the count is unchanged;
        raises UserError for another key, a bad value, or a global batch that does not split."""
        run = open_run_dir(path)
        if other := [o.split("=", 1)[0] for o in overrides if not o.startswith("launch.")]:
            raise UserError(
                f"--set {other[0]}: a resumed run keeps its saved config.yaml but for launch.* (the processes it "
                "runs on); start a new run to change it"
            )
        before = load_config(run.config_path)
        after = load_config(run.config_path, overrides)
        old = last_processes(run) or launch_processes(before, warn=False)
        new = launch_processes(after, warn=False)  # said once, as the resumed run is started
        if new != old:
            t = before.train
            batch = t.per_device_train_batch_size * old
            if batch % new:
                raise UserError(
                    f"launch.num_processes={new}: the run's global batch of {batch} (per_device_train_batch_size "
                    f"{t.per_device_train_batch_size} × {plural(old, 'process', 'processes')}) does not split over "
                    f"{new}; pick a divisor "
                    f"of {batch}"
                )
            after = dataclasses.replace(
                after, train=dataclasses.replace(after.train, per_device_train_batch_size=batch // new)
            )
        save_config(after, run.config_path)
        if new == old:
            return None
        return (
            f"{run.name} trained on {plural(old, 'process', 'processes')} and goes on with {new}, {batch // new} "
            "samples each (the same "
            f"global batch of {batch}): close to the run it would have been, not exact (its random numbers differ "
            "from here on)"
        )

    @classmethod
    def attach(cls, path: str | Path, *, subscribers: list[Emit] | tuple[Emit, ...] = ()) -> DetachedRun:
        """Follow the run in ``path`` from its first event: live, or read to its end when it is over."""
        run = RunDir(Path(path))
        if not run.config_path.is_file():
            raise RunFolderError(f"{run.path}: not a run folder (it has no config.yaml); pass a folder under runs/")
        return cls(load_config(run.config_path), subscribers=subscribers, attach_dir=run.path)

    # -- control (any thread) ---------------------------------------------------------------------------------
    def pause(self) -> None:
        self._command("pause")

    def resume(self) -> None:
        self._command("resume")

    def stop(self) -> None:
        self._command("stop")

    def leave(self) -> None:
        """Stop following; the run trains on."""
        self._left.set()

    def _command(self, command: str) -> None:
        with self._lock:
            self._pending.append(command)
        self._send_pending()

    def _send_pending(self) -> None:
        with self._lock:
            if self.run_dir is None or not self._pending or self.run_dir.live_state() is None:
                return  # not listening yet: sent when it is
            pending, self._pending = self._pending, []
        for command in pending:
            with contextlib.suppress(RunFolderError):  # it ended meanwhile: nothing to control
                send_command(self.run_dir, command)

    # -- the run ----------------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        process: subprocess.Popen[bytes] | None = None
        try:
            if self.attach_dir is not None:
                run, follower = RunDir(self.attach_dir), EventFollower(self.attach_dir / EVENTS_FILE)
            else:
                run, process, follower = self._spawn()
        except UserError as exc:
            fan_out(self._subscribers, RunFailed(error=str(exc), user_error=True))
            return RunResult("failed", None, error=str(exc), user_error=True)
        with self._lock:
            self.run_dir = run
        ended: Event | None = None
        live = _LiveReadings()
        alive, checked = True, 0.0
        try:
            while True:
                # Once the run has said its last word, only its exit is awaited: look for it at every read.
                if ended is not None or time.monotonic() - checked >= CHECK_SECONDS:
                    checked = time.monotonic()
                    alive = process.poll() is None if process is not None else run.live_state() is not None
                    self._send_pending()
                    if alive and ended is None:
                        for event in live.news(run):
                            fan_out(self._subscribers, event)
                events = follower.poll()  # after the check: what a run wrote before it ended is read
                for event in events:
                    if isinstance(event, RunStarted | RunFinished | RunFailed):
                        ended = None if isinstance(event, RunStarted) else event
                if events:
                    fan_out_many(self._subscribers, events)
                if not alive or self._left.wait(FOLLOW_SECONDS):
                    break
        finally:
            follower.close()
        return self._result(run, ended, process)

    def _spawn(self) -> tuple[RunDir, subprocess.Popen[bytes], EventFollower]:
        """Make (or open) the run's folder and start its process; read its events from here on."""
        launch_processes(self.cfg)  # a launch that cannot work fails here, before a new run has a folder
        run = open_run_dir(self.resume_dir) if self.resume_dir is not None else create_run_dir(self.cfg, self.runs_dir)
        run.events_path.touch()
        # Opened before the process starts: a new run that fails removes its folder, and this handle still reads
        # the RunFailed it wrote.
        follower = EventFollower(run.events_path, offset=run.events_path.stat().st_size)
        follower.open()
        process = spawn_run_process(run, resume=self.resume_dir is not None, torch_threads=self.torch_threads)
        self.pid = process.pid
        return run, process, follower

    def _result(self, run: RunDir, ended: Event | None, process: subprocess.Popen[bytes] | None) -> RunResult:
        kept = run.path if run.path.exists() else None
        if isinstance(ended, RunFinished):
            return RunResult(ended.status, kept, dict(ended.metrics))
        if isinstance(ended, RunFailed):
            return RunResult("failed", kept, error=ended.error, user_error=ended.user_error)
        if self._left.is_set():
            return RunResult("running", kept)
        user_error = True
        if process is not None:
            # Its events could not say why (a full disk): its last words on stderr may.
            error, user_error = died_message(run, process.returncode)
        else:  # attached: its process was another's
            from engine.checkpoint import complete_checkpoints

            saved = complete_checkpoints(run.checkpoints_dir)
            since = f"its last checkpoint is {saved[-1].name}" if saved else "no checkpoint: a resume starts over"
            error, user_error = f"{run.name} was killed before it ended; {since}", False
        fan_out(self._subscribers, RunFailed(error=error, user_error=user_error))
        return RunResult("failed", kept, error=error, user_error=user_error)


class _LiveReadings:
    """What a live run keeps in live.json rather than events.jsonl, as the events it would have sent: the step
    under way (StepDone) and the device's last reading (DeviceUsage), each once."""

    def __init__(self) -> None:
        self._step: list[int] | None = None
        self._usage: dict[str, Any] | None = None

    def news(self, run: RunDir) -> list[Event]:
        record = run.read_live() or {}
        out: list[Event] = []
        step, usage = record.get("step"), record.get("usage")
        with contextlib.suppress(TypeError, ValueError):
            if step and step != self._step:
                self._step = step
                out.append(StepDone(step=int(step[0]), total_steps=int(step[1])))
            if usage and usage != self._usage:
                self._usage = usage
                out.append(DeviceUsage(**usage))
        return out


def start_detached(
    cfg: RunConfig | None, runs_dir: str | Path | None = None, *, resume: str | Path | None = None
) -> tuple[RunDir, int]:
    """Start ``cfg`` (or continue the run in ``resume``) in a detached process, and return its folder and pid once
    training has begun: the config, data and model are known good then.

    Raises UserError, with the run's own one-line message, when it fails before its first step (a new run's
    folder is then gone), and RunDiedError when its process ends without a word.
    """
    started = threading.Event()
    handle: DetachedRun

    def watch(event: Event) -> None:
        if isinstance(event, RunStarted):
            started.set()
            handle.leave()

    if resume is not None:
        handle = DetachedRun.from_run_dir(resume, subscribers=[watch])
    else:
        assert cfg is not None
        handle = DetachedRun(cfg, subscribers=[watch], runs_dir=runs_dir)
    result = handle.run()
    if started.is_set() and handle.run_dir is not None and handle.pid is not None:
        return handle.run_dir, handle.pid
    if result.user_error:
        raise UserError(result.error or "the run failed before its first step")
    raise RunDiedError(result.error or "the run's process ended before training began")


def spawn_run_process(
    run: RunDir,
    *,
    resume: bool = False,
    torch_threads: int | None = None,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    pass_fds: tuple[int, ...] = (),
) -> subprocess.Popen[bytes]:
    """Start ``python -m engine.detached`` on ``run``'s folder in a session of its own, its stdout and stderr in the
    folder; ``pass_fds``: files it inherits (the queue's claim lock)."""
    argv = [sys.executable, "-m", "engine.detached", str(run.path)]
    argv += ["--resume"] if resume else []
    argv += ["--torch-threads", str(torch_threads)] if torch_threads else []
    with open(run.path / STDOUT_FILE, "ab") as out, open(run.path / STDERR_FILE, "ab") as err:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
            pass_fds=pass_fds,
        )


def died_message(run: RunDir, code: int | None) -> tuple[str, bool]:
    """Why the run's process ended without a final event, and whether that is the user's to fix: its own one-line
    error (``main`` prints it) when it left one, else how it ended and its last line on stderr."""
    try:
        tail = (run.path / STDERR_FILE).read_text(encoding="utf-8", errors="replace").splitlines()[-STDERR_TAIL:]
    except OSError:
        tail = []
    last = next((line.strip() for line in reversed(tail) if line.strip()), "")
    if code == 2 and last.startswith(ERROR_PREFIX):
        return last.removeprefix(ERROR_PREFIX), True
    how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
    return f"the training process {how} before the run ended" + (f": {last}" if last else ""), False


def last_processes(run: RunDir) -> int | None:
    """The processes of the run's last session, from its last RunStarted; None before it ever started."""
    found = None
    with contextlib.suppress(FileNotFoundError), open(run.events_path, "rb") as fh:
        for line in fh:  # a prefix test per line: the steps' lines are not parsed
            if line.startswith(b'{"type": "RunStarted"'):
                found = line
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        return int(json.loads(found).get("num_processes", 1)) if found else None
    return None


def launch_processes(cfg: RunConfig, *, warn: bool = True) -> int:
    """The processes ``cfg.launch`` asks for on this machine (``auto`` resolved); raises ConfigError, naming the
    key, where the GPUs or cores are too few. Without an accelerate config, more than 1 means torchrun.
    ``warn``: say that processes on CPU share its cores (once, where the run is started)."""
    launch = cfg.launch
    if launch.num_processes == 1 and launch.gpu_ids is None:
        return 1  # the common case: no torch import in the front
    import torch

    on_cuda = cfg.train.device not in ("cpu", "mps") and torch.cuda.is_available()
    gpus = torch.cuda.device_count() if on_cuda else 0
    if launch.gpu_ids is not None:
        ids = [int(i) for i in launch.gpu_ids.replace(" ", "").split(",")]
        if not on_cuda or max(ids) >= gpus:
            raise ConfigError(
                "launch.gpu_ids",
                f"names GPU {max(ids)}, but {gpus} CUDA GPUs are visible; name GPUs 0 to {gpus - 1}"
                if on_cuda
                else "names GPUs, but this machine trains on CPU (no CUDA GPU); set it to null",
            )
        gpus = len(ids)
    n = launch.num_processes if isinstance(launch.num_processes, int) else max(gpus, 1)
    if n > 1 and cfg.train.device.startswith("cuda:"):
        raise ConfigError(
            "train.device",
            f"{cfg.train.device} pins one GPU, but launch.num_processes is {n}; set train.device: "
            "auto and pick the GPUs with launch.gpu_ids",
        )
    if on_cuda and n > gpus:
        raise ConfigError(
            "launch.num_processes", f"{n} processes, but {gpus} GPUs are visible; set it to {gpus} or less, or auto"
        )
    if not on_cuda:
        if launch.backend == "nccl":
            raise ConfigError("launch.backend", "nccl needs CUDA GPUs and this run trains on CPU; use gloo or auto")
        cores = os.cpu_count() or 1
        if n > cores:
            raise ConfigError(
                "launch.num_processes",
                f"{n} processes on CPU, but this machine has {cores} cores; set it to {cores} or less",
            )
        if n > 1 and warn:
            log.warning(
                "launch.num_processes: %d processes share %d CPU cores; on CPU this checks a many-GPU setup rather "
                "than speeding training up",
                n,
                cores,
            )
    return n


def launch_argv(cfg: RunConfig, run_path: Path, processes: int, *, resume: bool = False) -> list[str]:
    """The launcher's command line for the ranks of a run: ``accelerate launch`` with ``launch.accelerate_config``
    (which then decides the machines, and the processes unless launch.num_processes is above 1), else torchrun on
    this machine alone."""
    rank = ["engine.detached", str(run_path), "--rank"] + (["--resume"] if resume else [])
    if cfg.launch.accelerate_config is not None:
        argv = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", cfg.launch.accelerate_config]
        argv += ["--num_processes", str(processes)] if processes > 1 else []
        return [*argv, "--module", *rank]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(processes),
        "--standalone",
        "-m",
        *rank,
    ]


def launch_env(cfg: RunConfig, processes: int, torch_threads: int | None = None) -> dict[str, str]:
    """The ranks' environment: ``launch.gpu_ids`` as CUDA_VISIBLE_DEVICES, and ``torch_threads`` (the
    workbench's), else the cores, shared out between the processes (torchrun would give each one thread);
    ``train.torch_threads`` and an OMP_NUM_THREADS already set win."""
    env = dict(os.environ)
    if cfg.launch.gpu_ids is not None:
        env["CUDA_VISIBLE_DEVICES"] = cfg.launch.gpu_ids.replace(" ", "")
    share = max((torch_threads or os.cpu_count() or 1) // max(processes, 1), 1)
    env.setdefault("OMP_NUM_THREADS", str(cfg.train.torch_threads or share))
    return env


def _launch(cfg: RunConfig, run: RunDir, processes: int, *, resume: bool, torch_threads: int | None) -> int:
    """Run the ranks through the launcher and wait for them; SIGTERM (or Ctrl+C) stops the run at its next step,
    saving, through the command rank 0 listens for."""
    process = subprocess.Popen(
        launch_argv(cfg, run.path, processes, resume=resume),
        stdin=subprocess.DEVNULL,
        env=launch_env(cfg, processes, torch_threads),
    )

    def stop(_signum: int, _frame: Any) -> None:
        try:
            send_command(run, "stop")
        except RunFolderError:  # rank 0 is not listening yet (or any more): nothing to save, end the ranks
            with contextlib.suppress(ProcessLookupError):
                process.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # torchrun ends every rank when one fails, and exits 1; rank 0's events say how the run ended.
    return 0 if process.wait() == 0 else 1


def _other_rank(path: Path, resume: bool) -> int:
    """A rank other than 0 of a many-process run (rank 0 is a Runner, as in a run of one process): it trains beside
    rank 0, emits nothing and writes nothing in the run folder."""
    # Torchrun sends SIGTERM when another rank fails: stop at the next step (which the others share).
    control = RunControl()
    signal.signal(signal.SIGTERM, lambda _s, _f: control.request_stop())
    try:
        cfg = load_config(path / "config.yaml")
        engine_path(cfg.engine)(cfg, _silent, control, RunDir(path), resume=resume)
    except UserError as exc:
        print(f"{ERROR_PREFIX}{exc}", file=sys.stderr)
        return 2
    return 0


def _silent(_event: Event) -> None:
    """A rank other than 0 reports nothing: rank 0 speaks for the run."""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path, resume = Path(args[0]), "--resume" in args[1:]
    threads = int(args[args.index("--torch-threads") + 1]) if "--torch-threads" in args else None
    # A new session has no terminal to hang up; ignore SIGHUP too, should someone send it to the group.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    rank = "--rank" in args[1:]  # one of the processes the launcher below started
    if rank and int(os.environ.get("RANK", "0")) != 0:
        return _other_rank(path, resume)
    try:
        runner = Runner.from_run_dir(path) if resume else Runner(load_config(path / "config.yaml"), fresh_dir=path)
    except UserError as exc:
        print(f"{ERROR_PREFIX}{exc}", file=sys.stderr)
        return 2
    # Importing torch and transformers and loading the model make hundreds of thousands of long-lived objects and
    # little garbage, which the cyclic collector would walk again and again (docs/perf-log.md, cause 44): it
    # stays off until the run's first step.
    gc.disable()
    runner.collector_held = True
    try:
        processes = 1 if rank else launch_processes(runner.cfg)
    except ConfigError as exc:
        print(f"{ERROR_PREFIX}{exc}", file=sys.stderr)
        if not resume:  # a new run that cannot launch leaves no folder; its follower reads why from the event
            with contextlib.closing(EventLog(RunDir(path).events_path)) as events:
                events.write(RunFailed(error=str(exc), user_error=True))
            remove_run_dir(RunDir(path))
        return 2
    if processes > 1 or (runner.cfg.launch.accelerate_config is not None and not rank):
        gc.enable()  # this process only launches and waits; its ranks train
        return _launch(runner.cfg, RunDir(path), processes, resume=resume, torch_threads=threads)
    if threads and runner.cfg.train.torch_threads is None:
        import torch  # this process is for training: torch loads now or a moment later, with the engine

        torch.set_num_threads(threads)  # a null train.torch_threads leaves torch's setting as it is

    def stop(_signum: int, _frame: Any) -> None:
        runner.stop()

    signal.signal(signal.SIGTERM, stop)
    runner.start()
    runner.join()  # no polling, so this thread never wakes while the run trains; signals still reach their handlers
    result = runner.result
    if result is None or result.status == "failed":
        if result is not None:  # for a front that could not read it from events.jsonl (a full disk)
            print(f"{ERROR_PREFIX}{result.error}", file=sys.stderr)
        return 2 if result is not None and result.user_error else 1
    return 0


def leave(code: int) -> NoReturn:
    """End the run's process without the interpreter's teardown, which collects torch's, transformers' and
    datasets' objects one by one while the user waits for a run that has ended (docs/perf-log.md, cause 38).
    By now every file of the run is written, synced and closed; exit handlers still run."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    leave(main())
