"""``tunebench``: the workbench (no arguments or ``ui``), and the headless ``run``, ``predict`` and ``runs``.

Exit codes: 0 success, 1 internal failure, 2 user error (bad config, data, model or text), 130 stopped by
Ctrl+C (the run is saved and marked stopped).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from engine.errors import PredictError, UserError
from engine.events import fmt_duration, fmt_epoch, fmt_memory, text_width

if TYPE_CHECKING:
    from engine.events import Evaluated
    from engine.predict import PredictResult

DEFAULT_CONFIG = "sample_configs/quickstart-classify.yaml"
EXIT_OK, EXIT_INTERNAL, EXIT_USER, EXIT_STOPPED = 0, 1, 2, 130


def _error(message: str) -> None:
    print(f"tunebench: error: {message}", file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    """argparse's errors as the house's: one line that names the option and where the others are listed, in
    place of the usage text (subcommands' parsers are of this class too)."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message}; {self.prog} --help lists the options")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tunebench", description="Fine-tune Hugging Face models from the terminal.")
    sub = parser.add_subparsers(dest="command")

    ui = sub.add_parser("ui", help="open the workbench on a config (tunebench CONFIG.yaml does too)")
    ui.add_argument("config", nargs="?", default=None, help=f"YAML config (default: {DEFAULT_CONFIG})")

    run = sub.add_parser("run", help="train headless from a YAML config, or continue a run with --resume")
    run.add_argument(
        "config", nargs="?", default=None, help="YAML config, e.g. sample_configs/quickstart-classify.yaml"
    )
    run.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=None,
        help="continue a stopped, failed or killed run in its folder, from its latest checkpoint",
    )
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set train.learning_rate=3e-5 (repeatable)",
    )
    run.add_argument("--runs-dir", default=None, help="folder for run folders (default: output.runs_dir)")
    run.add_argument(
        "--detach",
        action="store_true",
        help="train in a process of its own that outlives this terminal; print its folder once it trains, and return",
    )

    predict = sub.add_parser("predict", help="fill masks, classify or generate with a model")
    predict.add_argument(
        "--model", required=True, help="run (folder, name in --runs-dir or its prefix), model folder, hub id, or minilm"
    )
    predict.add_argument("--runs-dir", default="runs", help="where --model looks for a run by its name")
    predict.add_argument("--top-k", type=int, default=5, help=f"how many tokens or labels to show (1 to {MAX_TOP_K})")
    predict.add_argument("--max-new-tokens", type=int, default=40, help="generation length (causal LMs)")
    predict.add_argument("--json", action="store_true", help="print JSON instead of a table")
    predict.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    predict.add_argument("text", help='e.g. "This is a [MASK] movie!"')

    from engine.runs import RUNS_DIR_HELP

    run_help = "a run folder, its name in --runs-dir, or a unique prefix of the name"
    runs = sub.add_parser("runs", help="list runs, or show one run's evaluations")
    runs.add_argument("run", nargs="?", help=run_help + ": its evaluations and classes")
    runs.add_argument("--runs-dir", default="runs", help=RUNS_DIR_HELP)

    follow = sub.add_parser("follow", help="show a run's progress as tunebench run does; Ctrl+C leaves the run alone")
    follow.add_argument("run", help=run_help)
    follow.add_argument("--runs-dir", default="runs", help=RUNS_DIR_HELP)
    attach = sub.add_parser("attach", help="open the workbench on a run's Train panel, following it")
    attach.add_argument("run", nargs="?", help=run_help + "; default: the most recent live run")
    attach.add_argument("--runs-dir", default="runs", help=RUNS_DIR_HELP)
    for command, what in (
        ("stop", "stop a live run at its next step; it saves"),
        ("pause", "pause a live run"),
        ("resume", "resume a paused run"),
    ):
        one = sub.add_parser(command, help=what)
        one.add_argument("run", help=run_help)
        one.add_argument("--runs-dir", default="runs", help=RUNS_DIR_HELP)
    # Commands with a module of their own: each adds its parsers, with ``handler`` set to the function to call.
    from engine import compare, export, queue

    compare.add_parsers(sub)
    queue.add_parsers(sub)
    export.add_parsers(sub)
    return parser


# ----------------------------------------------------------------------------------------------------------
# run


def shown_message(message: str) -> str:
    """A library's warning as a run's terminal shows it: its first line, and the lines it introduces with a
    colon (transformers' list of the arguments a resumed run changed), up to five."""
    lines = message.splitlines()
    if not lines:
        return ""
    if not lines[0].rstrip().endswith(":"):
        return lines[0]
    return "\n".join([lines[0], *("  " + line.strip() for line in lines[1:6] if line.strip())])


class _Console:
    """Renders a run's events with rich: a progress bar and a table row per epoch."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, Progress, TextColumn

        from engine.report import stdout_console

        self.console = stdout_console()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("step {task.completed}/{task.total}"),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[speed]}"),  # "66.9 samples/s", or nothing before the first logged step
            TextColumn("ETA {task.fields[eta]}"),
            console=self.console,
            transient=False,
        )
        self.task_id: Any = None
        #: The step the bar stands at. A follower's readings of the run's beacon (StepDone) may come after the
        #: events of a later step, so the bar only moves on, but for a resumed session's start.
        self.step = 0
        self.header_done = False
        self.lm = False
        #: An epoch's end, printed with the evaluation that follows it at the same step, or alone.
        self.epoch_end: Any = None
        self.started: Any = None

    def __call__(self, event: Any) -> None:
        from rich.markup import escape  # paths, notes and library messages are text, never markup

        from engine import events as ev

        c = self.progress.console
        # Progress readings (a followed run's come from live.json, at any time) never split a row.
        if self.epoch_end is not None and not isinstance(
            event, ev.Status | ev.LogMessage | ev.DeviceUsage | ev.StepDone
        ):
            ended, self.epoch_end = self.epoch_end, None
            if isinstance(event, ev.Evaluated) and event.step == ended.step:
                self._row(ended, event)
                return
            self._row(ended, None)
        if isinstance(event, ev.RunFinished) and self.task_id is not None:
            # ended: at its last step (a run shorter than logging_steps logs none), with no time left to guess at
            self._advance(event.step, eta="-")
        elif isinstance(event, ev.RunFailed) and self.task_id is not None:
            self.progress.update(self.task_id, eta="-")
        if isinstance(event, ev.Status):
            if self.task_id is None:
                c.print(f"[dim]{event.stage}[/dim] {escape(event.detail)}")
        elif isinstance(event, ev.LogMessage):
            c.print(f"[yellow]{event.level}:[/yellow] {escape(shown_message(event.message))}")
        elif isinstance(event, ev.RunFinished) and event.note:
            c.print(escape(event.note))
        elif isinstance(event, ev.RunStarted):
            self.lm = event.task != "classification"
            self.started = event
            c.print(
                f"[bold]{escape(event.run_name)}[/bold]: {event.task} with {event.engine} "
                f"on {event.device} ({event.compute_text}"
                f"{f', {event.num_processes} processes, {event.backend}' if event.num_processes > 1 else ''}), "
                f"{event.parameters_text}, {event.num_train_samples} train samples, "
                f"eval: {escape(event.eval_set) or f'{event.num_eval_samples} rows'}, {event.total_steps} steps"
            )
            if self.task_id is None:
                self.progress.start()
                self.task_id = self.progress.add_task(
                    self._epoch(event.start_step + 1),
                    total=event.total_steps,
                    completed=event.start_step,
                    loss="-",
                    speed="",
                    eta="-",
                )
            else:  # a resumed session of the run (tunebench follow replays them all): the same bar goes on
                self.progress.update(
                    self.task_id,
                    description=self._epoch(event.start_step + 1),
                    total=event.total_steps,
                    completed=event.start_step,
                )
            self.step = event.start_step
        elif isinstance(event, ev.StepLogged) and self.task_id is not None:
            self._advance(
                event.step,
                loss=f"{event.loss:.4f}",
                speed=f"{event.samples_per_second:.1f} samples/s",
                eta=fmt_duration(event.eta_seconds),
            )
        elif isinstance(event, ev.StepDone) and self.task_id is not None:
            self._advance(event.step)  # every step, so that the bar stands at the step a stop or the end came at
        elif isinstance(event, ev.EpochEnded):
            self.epoch_end = event
        elif isinstance(event, ev.Evaluated):
            self._row(None, event)
        elif isinstance(event, ev.Paused | ev.StopRequested):
            if self.task_id is not None:  # no speed or time left to guess at: the next logged step brings them
                self._advance(event.step, speed="", eta="-")
            if isinstance(event, ev.Paused):
                c.print(f"[yellow]paused at step {event.step}[/yellow]")
            else:
                c.print(f"[yellow]stopping at step {event.step}; saving what the run has[/yellow]")
        elif isinstance(event, ev.Resumed):
            c.print(f"[yellow]resumed at step {event.step}[/yellow]")
        elif isinstance(event, ev.CheckpointSaved):
            c.print(f"[dim]checkpoint saved: {escape(event.path)}[/dim]")

    def _advance(self, step: int, **fields: Any) -> None:
        self.step = max(self.step, step)
        self.progress.update(self.task_id, completed=self.step, description=self._epoch(self.step), **fields)

    def _epoch(self, step: int) -> str:
        return f"epoch {self.started.epoch_at(step)}"

    def _row(self, ended: Any, evaluated: Any) -> None:
        """One line of the epoch table: an epoch's end (EpochEnded) and/or an evaluation (Evaluated)."""
        c = self.progress.console
        third = "perplexity" if self.lm else "macro-F1"
        if not self.header_done:
            c.print(
                f"[bold]{'epoch':>5}  {'train loss':>10}  {'eval loss':>9}  {'accuracy':>8}  {third:>10}  {'time':>6}"
            )
            self.header_done = True

        def number(value: float | None, width: int, digits: int) -> str:
            return f"{'-':>{width}}" if value is None else f"{value:{width}.{digits}f}"

        e = evaluated
        third_value = None if e is None else e.perplexity if self.lm else e.macro_f1
        seconds = (ended.duration_seconds if ended else 0.0) + (e.duration_seconds if e else 0.0)
        c.print(
            f"{fmt_epoch(e.epoch if e else ended.epoch):>5}  {number(ended and ended.train_loss, 10, 4)}  "
            f"{number(e and e.eval_loss, 9, 4)}  {number(e and e.accuracy, 8, 3)}  {number(third_value, 10, 4)}  "
            f"{fmt_duration(seconds):>6}"
        )

    def close(self) -> None:
        if self.task_id is not None:  # a bar never started would still end in an empty line
            self.progress.stop()


def _handle_for(args: argparse.Namespace, subscribers: list[Any]) -> Any:
    """A DetachedRun for a new run from ``config``, or for the run folder given to ``--resume``; raises UserError
    for a bad config or run folder before any process starts."""
    from engine.config import load_config
    from engine.detached import DetachedRun
    from engine.reporting import check_installed

    if args.resume is not None:
        if args.config is not None:
            raise UserError(f"give either a config or --resume RUN_DIR, not both (got {args.config} and --resume)")
        from engine.live import resolve_run

        path = resolve_run(args.resume, args.runs_dir or "runs").path
        if args.overrides and (note := DetachedRun.relaunch(path, args.overrides)):
            print(f"note: {note}", file=sys.stderr)
        return DetachedRun.from_run_dir(path, subscribers=subscribers)
    if args.config is None:
        raise UserError("run: give a config file (e.g. sample_configs/quickstart-classify.yaml) or --resume RUN_DIR")
    cfg = load_config(args.config, args.overrides)
    check_installed(cfg.output.report_to)  # here, before a process starts: the run's would say the same, later
    return DetachedRun(cfg, subscribers=subscribers, runs_dir=args.runs_dir)


def cmd_run(args: argparse.Namespace) -> int:
    """Train in a process of the run's own (engine.detached), followed here until it ends. Ctrl+C or SIGTERM stops
    it at its next step and it saves; a second one stops following. A closed terminal or a dropped SSH session
    ends only the following: the run trains on, and ``tunebench follow`` or ``attach`` finds it again."""
    from engine.events import RunFailed, RunStarted
    from engine.runs import run_ref

    if args.detach:
        return _detach(args)
    view = _Console()
    failures: list[RunFailed] = []

    def watch(event: Any) -> None:
        if isinstance(event, RunFailed):
            failures.append(event)
        elif isinstance(event, RunStarted) and handle.run_dir is not None and not failures:
            view.progress.console.print(
                f"{handle.run_dir.path} (pid {handle.pid}); if this terminal goes, the run trains on: "
                f"tunebench follow {run_ref(handle.run_dir)}",
                style="dim",
                markup=False,
                soft_wrap=True,
            )

    try:
        handle = _handle_for(args, [view, watch])
    except UserError as exc:
        _error(str(exc))
        return EXIT_USER
    outcome: list[Any] = []
    follower = threading.Thread(target=lambda: outcome.append(handle.run()), name="tunebench-follow", daemon=True)
    stops = 0

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal stops
        stops += 1
        if stops == 1:
            view.progress.console.print("[yellow]stop requested; saving (Ctrl+C again stops following)[/yellow]")
            handle.stop()
        else:  # the run still saves and ends on its own
            handle.leave()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        follower.start()
        follower.join()  # signals still reach their handlers during the wait
    finally:
        view.close()
        for s, h in old.items():
            signal.signal(s, h)
    result = outcome[0]
    if result.status == "running":  # left by a second Ctrl+C
        if handle.run_dir is None:
            print("stopped following; the run saves and stops on its own")
        else:
            name, ref = handle.run_dir.name, run_ref(handle.run_dir)
            print(f"stopped following; {name} saves and stops on its own (tunebench follow {ref} shows it)")
        return EXIT_STOPPED
    if result.status == "failed":
        _error(result.error or "the run failed")
        if not result.user_error and failures and failures[-1].traceback:
            print(failures[-1].traceback, file=sys.stderr)
        if result.run_dir:
            print(f"run folder: {result.run_dir}", file=sys.stderr)
        return EXIT_USER if result.user_error else EXIT_INTERNAL
    print(f"{result.status}: {result.run_dir}")
    return EXIT_STOPPED if result.status == "stopped" and stops else EXIT_OK


def _detach(args: argparse.Namespace) -> int:
    """``run --detach``: the run in a process of its own; returns once it trains (or has failed to start)."""
    from engine.detached import RunDiedError, start_detached
    from engine.runs import run_ref

    try:
        handle = _handle_for(args, [])
    except UserError as exc:
        _error(str(exc))
        return EXIT_USER
    print("starting the run in the background; it returns once training begins", file=sys.stderr)
    try:
        run, pid = start_detached(handle.cfg, handle.runs_dir, resume=handle.resume_dir)
    except RunDiedError as exc:
        _error(str(exc))
        return EXIT_INTERNAL
    except KeyboardInterrupt:
        _error("stopped waiting; the run may still start (tunebench runs lists it)")
        return EXIT_STOPPED
    print(f"training: {run.path} (pid {pid})")
    print(f"  tunebench follow {run_ref(run)}    tunebench pause|resume|stop {run_ref(run)}")
    return EXIT_OK


def cmd_follow(args: argparse.Namespace) -> int:
    """Show a run's events as ``tunebench run`` does, from its start, until it is no longer live."""
    from engine.detached import DetachedRun
    from engine.live import resolve_run
    from engine.runs import run_ref

    run = resolve_run(args.run, args.runs_dir)
    view = _Console()
    try:
        result = DetachedRun.attach(run.path, subscribers=[view]).run()
    except KeyboardInterrupt:
        result = None
    finally:
        view.close()  # the progress bar ends before anything else is printed
    if result is None:
        print(f"stopped following; {run.name} goes on (tunebench stop {run_ref(run)} stops it)")
        return EXIT_STOPPED
    if result.status == "failed":
        _error(result.error or "the run failed")
        return EXIT_USER if result.user_error else EXIT_INTERNAL
    print(f"{result.status}: {run.path}")
    return EXIT_OK


def attach_target(name: str | None, runs_dir: str) -> Any:
    """The run ``tunebench attach`` opens: ``name`` resolved, or the most recent live run in ``runs_dir``."""
    from engine.live import resolve_run
    from engine.runs import LIVE, RunDir, list_runs, runs_dir_option

    if name is not None:
        return resolve_run(name, runs_dir)
    live = [r for r in list_runs(runs_dir) if r.status in LIVE]
    if not live:
        if not Path(runs_dir).expanduser().is_dir():
            raise UserError(f"{runs_dir}/: no such runs folder; give the one your runs are in with --runs-dir")
        raise UserError(
            f"no live run in {runs_dir}/; tunebench attach RUN opens any run, "
            f"tunebench runs{runs_dir_option(runs_dir)} lists them"
        )
    return RunDir(live[0].path)


def cmd_control(args: argparse.Namespace) -> int:
    """``stop``, ``pause`` or ``resume``: leave the command in the live run's folder."""
    from engine.live import has_pending_commands, resolve_run, send_command
    from engine.runs import run_ref

    run = resolve_run(args.run, args.runs_dir)
    state = run.live_state()
    # Said, not sent, unless a command waits: a resume on its way would need the pause.
    if args.command == "pause" and state == "paused" and not has_pending_commands(run):
        print(f"pause: {run.name} is already paused; nothing sent (tunebench resume {run_ref(run)} resumes it)")
        return EXIT_OK
    send_command(run, args.command)
    if args.command == "resume" and state == "running":  # it undoes a pause not acted on yet, if there is one
        print(f"resume: sent to {run.name}, which is not paused (tunebench follow {run_ref(run)} shows it)")
        return EXIT_OK
    when = "at its next optimizer step" if args.command != "resume" else "now"
    print(f"{args.command}: sent to {run.name}; it acts {when} (tunebench follow {run_ref(run)} shows it)")
    return EXIT_OK


# ----------------------------------------------------------------------------------------------------------
# runs, ui


def cmd_runs(args: argparse.Namespace) -> int:
    from engine.runs import list_runs

    if args.run is not None:
        return cmd_show_run(args.run, args.runs_dir)

    # said, so that a typo in --runs-dir does not pass for an empty folder
    if not Path(args.runs_dir).expanduser().is_dir():
        print(f"no runs: {args.runs_dir}/ is not a folder (runs go where output.runs_dir says)", file=sys.stderr)
        return EXIT_OK
    # The run's name already holds its date, task and model: those columns come only where they fit.
    wide = shutil.get_terminal_size().columns >= 120
    header = ["run", "status", "best", "time", "memory"] + (["started", "task", "model"] if wide else [])
    rows = [
        [r.name, r.status_text, r.best_text, fmt_duration(r.duration_seconds), fmt_memory(r.peak_memory_mb)]
        + ([r.started_text, r.task, r.model] if wide else [])
        for r in list_runs(args.runs_dir)
    ]
    print_columns(header, rows)
    return EXIT_OK


def print_columns(header: list[str], rows: list[list[str]]) -> None:
    """Left-aligned columns, one line per row (a header in bold on a terminal): a rich Table measures and wraps
    every cell, most of the time ``tunebench runs`` takes over a thousand runs (BENCHMARKS.md, run list)."""
    widths = [max(map(text_width, column)) for column in zip(header, *rows, strict=True)]
    title, *lines = (
        "  ".join(cell + " " * (width - text_width(cell)) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )
    if sys.stdout.isatty() and not os.environ.get("NO_COLOR"):
        title = f"\033[1m{title}\033[0m"
    sys.stdout.write("\n".join([title, *lines]) + "\n")


def cmd_show_run(name: str, runs_dir: str) -> int:
    """One run: its state, a row per evaluation and, for classification, the last evaluation's confusion matrix
    and per-class scores; read from its events, so a live run shows as far as it got."""
    from rich.table import Table

    from engine.events import Evaluated, RunStarted
    from engine.live import resolve_run
    from engine.report import class_report, stdout_console
    from engine.runs import ended_status, failure_of, live_progress

    run = resolve_run(name, runs_dir)
    events = run.events()
    summary = run.read_summary() or {}
    starts = [e for e in events if isinstance(e, RunStarted)]
    # A resumed run redoes the evaluations after its checkpoint: the latest one of each step counts.
    evals = sorted({e.step: e for e in events if isinstance(e, Evaluated)}.values(), key=lambda e: e.step)
    live = run.live_state()  # before the summary: a resumed run's is its last session's
    if live is not None:
        status = f"{live} {live_progress(run, paused=live == 'paused')}".rstrip()
    else:
        status = summary.get("status") or ended_status(run.events_path) or "ended without a summary (killed?)"
    console = stdout_console()
    what = f"{starts[-1].task}, {starts[-1].model}" if starts else "never started"
    labels: list[Any] = list(starts[-1].label_names) if starts else []
    if not run.events_path.exists() and summary:  # its history was deleted: the summary still has the scores
        what = f"{summary.get('task', '?')}, {summary.get('model', '?')} (its events.jsonl is missing)"
        records = [r for r in summary.get("evaluations") or [] if isinstance(r, dict)]
        evals = [e for e in map(_summary_evaluation, records) if e is not None]
        labels = list(records[-1].get("labels") or []) if records else []
    from rich.text import Text

    console.print(Text.assemble((run.name, "bold"), f": {status}; {what}"), soft_wrap=True)
    if (error := failure_of(summary, events)) is not None:
        console.print(f"failed: {error}", markup=False, soft_wrap=True)
    if summary.get("note"):  # "stopped early at step N ...", "model/ holds step N, the best ...": what model/ is
        console.print(str(summary["note"]), markup=False, soft_wrap=True)
    if not evals:
        console.print("no evaluation yet")
        return EXIT_OK
    lm = evals[-1].perplexity is not None
    table = Table("epoch", "step", "eval loss", "accuracy", "perplexity" if lm else "macro-F1", box=None)
    for e in evals:
        third = e.perplexity if lm else e.macro_f1
        table.add_row(
            str(e.epoch),
            str(e.step),
            f"{e.eval_loss:.4f}",
            "-" if e.accuracy is None else f"{e.accuracy:.3f}",
            "-" if third is None else f"{third:.4f}",
        )
    console.print(table)
    last = evals[-1]
    if last.confusion is not None:
        console.print()
        console.print(class_report(last, [str(label) for label in labels]))
    return EXIT_OK


def _summary_evaluation(record: dict[str, Any]) -> Evaluated | None:
    """An evaluation as summary.json keeps it, as the event it was; None for a record that is not one."""
    from engine.events import Evaluated, event_from_dict

    try:
        event = event_from_dict({**record, "type": "Evaluated", "time": 0.0})
    except (TypeError, ValueError, KeyError):
        return None
    return event if isinstance(event, Evaluated) else None


def default_config_path(config: str | None) -> str:
    """The config the workbench opens: the one given, else the quickstart (from the checkout if not in cwd)."""
    path = config or DEFAULT_CONFIG
    if config is None and not Path(path).exists():
        path = str(Path(__file__).resolve().parent.parent / DEFAULT_CONFIG)
    return path


# ----------------------------------------------------------------------------------------------------------
# predict: tunebench predict --model X [--top-k 5] [--max-new-tokens N] [--json] "TEXT"


#: More rows than a terminal or a reader wants; a fill-mask vocabulary is tens of thousands of tokens.
MAX_TOP_K = 1000


def predict_json(result: PredictResult) -> Any:
    """The ``--json`` shape: fill-mask → [{token_str, score}] (a list of those per mask when there are
    several); classify → {label: prob}; generate → {prompt, completion}."""
    from engine.predict import ClassifyResult, FillMaskResult

    if isinstance(result, FillMaskResult):
        rows = [[{"token_str": t.token_str, "score": t.score} for t in mask] for mask in result.masks]
        return rows[0] if len(rows) == 1 else rows
    if isinstance(result, ClassifyResult):
        return {s.label: s.score for s in result.labels}
    return {"prompt": result.prompt, "completion": result.completion}


def _bar(score: float, width: int = 20) -> str:
    return "█" * max(0, min(width, round(score * width)))


#: The longest text a prediction's table repeats above itself; a longer one is cut, with its length said.
ECHO_CHARS = 160


def _echo(text: str) -> str:
    """``text`` on one line, cut to ``ECHO_CHARS``: the table under it is what matters, not the text again."""
    line = " ".join(text.split())
    return line if len(line) <= ECHO_CHARS else f"{line[: ECHO_CHARS - 1]}… ({len(text):,} characters)"


def _score_table(rows: list[tuple[str, float]], title: str, column: str) -> str:
    name_width = max([text_width(name) for name, _ in rows] + [len(column)])
    lines = [title, f"  {'#':>2}  {column:<{name_width}}  {'score':>7}"]
    for i, (name, score) in enumerate(rows, 1):
        lines.append(f"  {i:>2}  {name}{' ' * (name_width - text_width(name))}  {score:7.4f}  {_bar(score)}")
    return "\n".join(lines)


def predict_text(result: PredictResult) -> str:
    """A plain-text table of ``result`` for the terminal."""
    from engine.predict import ClassifyResult, FillMaskResult

    if isinstance(result, FillMaskResult):
        many = len(result.masks) > 1
        blocks = [
            _score_table(
                [(t.token_str, t.score) for t in mask],
                _echo(result.text) + (f"  (mask {i} of {len(result.masks)})" if many else ""),
                "token",
            )
            for i, mask in enumerate(result.masks, 1)
        ]
        return "\n\n".join(blocks)
    if isinstance(result, ClassifyResult):
        return _score_table([(s.label, s.score) for s in result.labels], _echo(result.text), "label")
    return result.prompt + result.completion  # the completion starts with the space it follows the prompt by


def cmd_predict(args: argparse.Namespace) -> int:
    """``tunebench predict``; a user error raises, and ``main`` turns it into one line and exit 2."""
    from engine.config import DEVICES, valid_device
    from engine.errors import AmbiguousRunError, RunFolderError
    from engine.live import resolve_run
    from engine.logs import capture_library_logs

    try:
        from engine.predict import predict
    except ImportError:
        _error("prediction is not available in this build")
        return EXIT_INTERNAL
    if not 1 <= args.top_k <= MAX_TOP_K:
        raise PredictError(f"--top-k: expected a whole number from 1 to {MAX_TOP_K}, got {args.top_k}")
    if args.max_new_tokens < 1:
        raise PredictError(f"--max-new-tokens: expected at least 1, got {args.max_new_tokens}")
    if not valid_device(args.device):
        raise PredictError(f'--device: expected {DEVICES}, got "{args.device}"')
    model = args.model
    try:  # a run as the other commands take it; else a model folder or a hub id
        model = str(resolve_run(args.model, args.runs_dir).path)
    except AmbiguousRunError:  # the prefix of several runs, not a hub id: run names start with their date
        raise
    except RunFolderError:
        pass
    # library chatter (load reports, progress bars) stays off the terminal; our own warnings come from the result
    with capture_library_logs(lambda _event: None):
        result = predict(model, args.text, top_k=args.top_k, max_new_tokens=args.max_new_tokens, device=args.device)
    if result.description:  # "adapter on minilm": what answered
        print(f"{args.model}: {result.description}", file=sys.stderr)
    for warning in result.warnings:
        print(f"tunebench: warning: {args.model}: {warning}", file=sys.stderr)
    print(json.dumps(predict_json(result), ensure_ascii=False) if args.json else predict_text(result))
    return EXIT_OK


def _dispatch(args: argparse.Namespace, open_ui: Callable[..., int] | None) -> int:
    if args.command in (None, "ui"):
        path = default_config_path(getattr(args, "config", None))
        if open_ui is None:
            _error(f"the workbench opens with the tunebench command; headless: tunebench run {path}")
            return EXIT_USER
        return int(open_ui(path) or 0)
    if args.command == "run":
        return cmd_run(args)
    if args.command == "runs":
        return cmd_runs(args)
    if args.command == "follow":
        return cmd_follow(args)
    if args.command == "attach":
        run = attach_target(args.run, args.runs_dir)
        if open_ui is None:
            from engine.runs import run_ref

            _error(f"the workbench opens with the tunebench command; headless: tunebench follow {run_ref(run)}")
            return EXIT_USER
        return int(open_ui(str(run.config_path), attach=run.path) or 0)
    if args.command in ("stop", "pause", "resume"):
        return cmd_control(args)
    if args.command == "predict":
        return cmd_predict(args)
    if hasattr(args, "handler"):
        return int(args.handler(args))
    raise AssertionError(f"unhandled command {args.command}")


def main(argv: list[str] | None = None, open_ui: Callable[..., int] | None = None) -> int:
    """Run one command. ``open_ui`` opens the workbench; the ``tunebench`` script (tui.launch) passes it, so
    that the engine itself never imports the TUI."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0].endswith((".yaml", ".yml")):  # tunebench my.yaml: the workbench on it, as tunebench ui does
        argv = ["ui", *argv]
    try:
        args = build_parser().parse_args(argv)
        code = _dispatch(args, open_ui)
        sys.stdout.flush()  # inside the try: a reader gone away is caught below
        return code
    except UserError as exc:
        _error(str(exc))
        return EXIT_USER
    except KeyboardInterrupt:
        return EXIT_STOPPED
    except BrokenPipeError:
        if not _stdout_is_a_pipe():
            raise  # some other pipe, not the reader of this command's output
        # The reader left (`| head`): what was asked is done, only its output was cut. Python would report the
        # pipe again when it flushes stdout at exit, so stdout goes to /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _stdout_is_a_pipe() -> bool:
    import stat

    try:
        return stat.S_ISFIFO(os.fstat(sys.stdout.fileno()).st_mode)
    except (OSError, ValueError):  # no file descriptor (an embedding replaced stdout)
        return False


if __name__ == "__main__":
    sys.exit(main())
