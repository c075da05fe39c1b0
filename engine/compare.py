"""Compare runs: what differs in their configs, their evaluations side by side, their curves, and which did best.

``load_compared_run`` reads one run folder (its config with the defaults resolved, its events so far, so a live
run or one without an evaluation works too); ``compare`` lines several up in a ``Comparison``. The workbench
draws a ``Comparison`` with its own widgets; ``render`` draws it with rich for ``tunebench compare``, and
``Comparison.to_json`` is what ``tunebench compare --json`` prints.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from engine.config import RunConfig, best_direction, load_config, metric_greater_is_better, off_blocks
from engine.errors import ConfigError, RunFolderError, UserError
from engine.events import EVENTS_FORMAT, Evaluated, RunStarted, StepLogged, fmt_epoch
from engine.runs import CONFIG_FILE, RUNS_DIR_HELP, RunDir

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.table import Table

#: Version of ``Comparison.to_json``'s layout; a change that breaks a reader raises it.
COMPARE_FORMAT = 1
#: Lineage and where the folder lives: shown elsewhere, and different for every run of a sweep.
IGNORED_KEYS = ("output.parent", "output.sweep", "output.runs_dir")
#: Keys that name a run rather than change what it does: in the diff, but not in legends or the best run's values.
NAMING_KEYS = ("output.run_name",)
#: The metrics an evaluation reports (``Evaluated`` fields), in the order they are shown.
METRICS = ("eval_loss", "accuracy", "macro_f1", "perplexity")
METRIC_LABELS = {"eval_loss": "eval loss", "accuracy": "accuracy", "macro_f1": "macro-F1", "perplexity": "perplexity"}
#: Short names of common settings in legends, which name them in this order (the biggest change first, as a long
#: legend is cut); any other key is named by its last part, after these.
LEGEND_ALIASES = {
    "name_or_path": "model",
    "source": "data",
    "learning_rate": "lr",
    "per_device_train_batch_size": "batch",
    "num_train_epochs": "epochs",
    "weight_decay": "wd",
    "warmup_ratio": "warmup",
    "max_length": "max_len",
    "per_device_eval_batch_size": "eval_batch",
    "gradient_accumulation_steps": "accum",
    "lr_scheduler_type": "sched",
    "train_size": "n_train",
    "eval_size": "n_eval",
}
LEGEND_WIDTH = 30
#: The value of each key of a block of keys that a run leaves off (``model.lora: null``).
OFF = "off"
#: ``runs/20250101-120000-name``: the timestamp a run folder's name starts with.
_STAMP = re.compile(r"^\d{8}-\d{6}-")
_SPARKS = "▁▂▃▄▅▆▇█"


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


@dataclass(frozen=True)
class EvalPoint:
    """One evaluation of a run: its epoch, step and the metrics it reported (``Evaluated`` field names)."""

    epoch: float
    step: int
    #: ``eval_loss`` always; ``accuracy``, ``macro_f1``, ``perplexity`` when the task reports them.
    metrics: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        metrics = {name: _json_number(value) for name, value in self.metrics.items()}
        return {"epoch": self.epoch, "step": self.step, "metrics": metrics}


@dataclass(frozen=True)
class ComparedRun:
    """What a comparison needs of one run folder, read once."""

    name: str
    path: Path
    #: ``running`` or ``paused`` while live, else summary.json's (``finished``, ``stopped``, ``failed``), else
    #: ``killed`` (events but no summary) or ``not started``.
    status: str
    task: str
    data_source: str
    #: ``output.parent``: the folder name of the run this one's config was cloned from.
    parent: str | None
    #: ``output.sweep``: the sweep this run belongs to.
    sweep: str | None
    #: The config with its defaults, as dotted keys (``train.learning_rate``); lists stay lists.
    config: dict[str, Any]
    #: Evaluations by step; a resumed run's repeated evaluation of a step counts once, the latest.
    evaluations: list[EvalPoint]
    #: ``(step, train loss)`` at each logged step, the latest of each step.
    step_losses: list[tuple[int, float]]
    #: ``train.metric_for_best_model`` as an ``Evaluated`` field (``eval_loss``, ``accuracy``, ...).
    metric: str
    greater_is_better: bool

    @property
    def eval_curve(self) -> list[tuple[int, float]]:
        """``(step, value)`` of the run's own metric at each evaluation that reported it."""
        return [(e.step, e.metrics[self.metric]) for e in self.evaluations if self.metric in e.metrics]

    def best(self, metric: str | None = None, greater_is_better: bool | None = None) -> EvalPoint | None:
        """The evaluation with the best finite value of ``metric`` (default: the run's own), the earliest on a tie."""
        metric = metric or self.metric
        greater = self.greater_is_better if greater_is_better is None else greater_is_better
        found: EvalPoint | None = None
        for e in self.evaluations:
            value = e.metrics.get(metric)
            if value is None or not math.isfinite(value):
                continue
            if found is None or (value > found.metrics[metric] if greater else value < found.metrics[metric]):
                found = e
        return found


class DiffRow(NamedTuple):
    """A config key whose value differs between the runs, and its value in each run."""

    key: str
    values: list[Any]


@dataclass(frozen=True)
class EvalRow:
    """One row of the side-by-side evaluations: each run's evaluation at one epoch (or step), or None."""

    #: Set when rows are keyed by epoch (``Comparison.eval_key == "epoch"``).
    epoch: float | None
    #: Set when rows are keyed by step.
    step: int | None
    evaluations: list[EvalPoint | None]

    @property
    def label(self) -> str:
        """``2`` or ``1.50`` (an epoch), or ``300`` (a step)."""
        return fmt_epoch(self.epoch) if self.epoch is not None else str(self.step)

    def value(self, metric: str, run: int) -> float | None:
        """Run ``run``'s value of ``metric`` in this row; None where it has no evaluation or no such metric."""
        e = self.evaluations[run]
        return None if e is None else e.metrics.get(metric)


@dataclass(frozen=True)
class Rank:
    """A run's place in the ranking: its best value of the ranking metric and where it had it."""

    run: int
    value: float | None
    step: int | None
    epoch: float | None


@dataclass(frozen=True)
class Comparison:
    """Runs lined up: ``runs[i]``, ``legends[i]``, ``diff[k].values[i]`` and ``eval_rows[r].evaluations[i]`` are
    the same run."""

    runs: list[ComparedRun]
    #: The config keys that differ, in config order, with the defaults resolved (IGNORED_KEYS left out).
    diff: list[DiffRow]
    #: A short name per run, from what differs (``lr=3e-5 batch=16``), else its folder name; unique.
    legends: list[str]
    #: What the evaluation rows are keyed by: epoch, unless a run has two evaluations in one (rounded) epoch.
    eval_key: Literal["epoch", "step"]
    eval_rows: list[EvalRow]
    #: The metrics some evaluation reported, in METRICS order.
    metrics: list[str]
    #: Each metric's best finite value over every run and evaluation (lower is better for loss and perplexity).
    best: dict[str, float]
    #: The metric the runs are ranked by: their ``train.metric_for_best_model`` (the most common one if they differ).
    ranking_metric: str
    ranking_greater_is_better: bool
    #: Best run first; runs without an evaluation last, in the order given. Empty when ``not_ranked``.
    ranking: list[Rank]
    warnings: list[str] = field(default_factory=list)
    #: Why the runs are not ranked (runs of different tasks: one's loss is no measure of another's), or None.
    not_ranked: str | None = None

    def greater_is_better(self, metric: str) -> bool:
        return self.ranking_greater_is_better if metric == self.ranking_metric else metric_greater_is_better(metric)

    def is_best(self, metric: str, value: float | None) -> bool:
        """Whether ``value`` is the best of ``metric`` (to highlight it); ties are all best."""
        return value is not None and metric in self.best and value == self.best[metric]

    @property
    def best_run(self) -> int | None:
        """The index of the best run, or None when no run has an evaluation."""
        return self.ranking[0].run if self.ranking and self.ranking[0].value is not None else None

    @property
    def best_values(self) -> list[tuple[str, Any]]:
        """The best run's values of the keys that differ (its "best config"), naming keys aside."""
        best = self.best_run
        if best is None:
            return []
        return [(row.key, row.values[best]) for row in self.diff if row.key not in NAMING_KEYS]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; non-finite numbers become null. Its layout (``format`` 1)::

        {"format": 1,
         "runs": [{"name", "path", "status", "task", "data_source", "parent", "sweep", "legend",
                   "metric", "greater_is_better", "best": {"value", "step", "epoch"} | null,
                   "evaluations": [{"epoch", "step", "metrics": {name: value}}],
                   "curves": {"train_loss": [[step, loss]], "eval": [[step, value]]}}],
         "diff": [{"key", "values": [value per run]}],
         "metrics": [{"name", "greater_is_better", "best"}],
         "eval_key": "epoch" | "step",
         "evaluations": [{"label", "epoch", "step", "runs": [{"epoch", "step", "metrics"} | null per run]}],
         "ranking": {"metric", "greater_is_better",
                     "runs": [{"run": index, "name", "value", "step", "epoch"}],
                     "best": {"run": index, "name", "legend", "values": {key: value}} | null,
                     "not_ranked": str | null},
         "warnings": [str]}
        """
        runs = []
        for run, legend in zip(self.runs, self.legends, strict=True):
            best = run.best()
            runs.append(
                {
                    "name": run.name,
                    "path": str(run.path),
                    "status": run.status,
                    "task": run.task,
                    "data_source": run.data_source,
                    "parent": run.parent,
                    "sweep": run.sweep,
                    "legend": legend,
                    "metric": run.metric,
                    "greater_is_better": run.greater_is_better,
                    "best": None
                    if best is None
                    else {"value": _json_number(best.metrics[run.metric]), "step": best.step, "epoch": best.epoch},
                    "evaluations": [e.to_json() for e in run.evaluations],
                    "curves": {
                        "train_loss": [[step, _json_number(loss)] for step, loss in run.step_losses],
                        "eval": [[step, _json_number(value)] for step, value in run.eval_curve],
                    },
                }
            )
        best_run = self.best_run
        return {
            "format": COMPARE_FORMAT,
            "runs": runs,
            "diff": [{"key": row.key, "values": list(row.values)} for row in self.diff],
            "metrics": [
                {"name": m, "greater_is_better": self.greater_is_better(m), "best": _json_number(self.best.get(m))}
                for m in self.metrics
            ],
            "eval_key": self.eval_key,
            "evaluations": [
                {
                    "label": row.label,
                    "epoch": row.epoch,
                    "step": row.step,
                    "runs": [None if e is None else e.to_json() for e in row.evaluations],
                }
                for row in self.eval_rows
            ],
            "ranking": {
                "metric": self.ranking_metric,
                "greater_is_better": self.ranking_greater_is_better,
                "runs": [
                    {
                        "run": r.run,
                        "name": self.runs[r.run].name,
                        "value": _json_number(r.value),
                        "step": r.step,
                        "epoch": r.epoch,
                    }
                    for r in self.ranking
                ],
                "best": None
                if best_run is None
                else {
                    "run": best_run,
                    "name": self.runs[best_run].name,
                    "legend": self.legends[best_run],
                    "values": dict(self.best_values),
                },
                "not_ranked": self.not_ranked,
            },
            "warnings": list(self.warnings),
        }


def _metric_values(runs: Sequence[ComparedRun], metric: str) -> list[float]:
    """Every finite value of ``metric`` in the evaluations of ``runs``."""
    return [v for run in runs for e in run.evaluations if (v := e.metrics.get(metric)) is not None and math.isfinite(v)]


def _json_number(value: float | None) -> float | None:
    return value if _finite(value) else None


# ---------------------------------------------------------------------------------------------------------
# Reading a run


def flatten_config(cfg: RunConfig) -> dict[str, Any]:
    """``{"task": ..., "train.learning_rate": 5e-05, ...}``: every setting of ``cfg`` under its dotted key."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            out[prefix] = value

    walk("", cfg.to_dict())
    # A block that is off has each of its keys "off", so that beside a run where it is on (LoRA against full
    # fine-tuning) each key reads "lora.r=off", not "r=null", and "model.lora" makes no row of its own.
    for block, keys in off_blocks(cfg).items():
        del out[block]
        out.update({f"{block}.{key}": OFF for key in keys})
    return out


def _status(run: RunDir, has_events: bool) -> str:
    # A resumed run that trains now still has the summary of its earlier session: live wins.
    live = run.live_state()
    if live:
        return live
    summary = run.read_summary() or {}
    if summary.get("status"):
        return str(summary["status"])
    return "killed" if has_events else "not started"


def load_compared_run(run: RunDir) -> ComparedRun:
    """Read a run folder's config (defaults resolved) and its events so far.

    Raises:
        UserError: the config does not load, or the events were written by a newer Tunebench.
    """
    try:
        cfg = load_config(run.config_path)
    except ConfigError as exc:
        raise RunFolderError(f"{run.path}: its {CONFIG_FILE} does not load: {exc}") from None
    evaluations: dict[int, Evaluated] = {}
    losses: dict[int, float] = {}
    events = run.events()
    for event in events:
        if isinstance(event, StepLogged):
            losses[event.step] = event.loss
        elif isinstance(event, Evaluated):
            # A resumed run redoes the evaluations after its checkpoint: the latest one of each step counts.
            evaluations[event.step] = event
        elif isinstance(event, RunStarted) and event.format > EVENTS_FORMAT:
            raise RunFolderError(
                f"{run.name} was written by a newer Tunebench (events format {event.format}; this one reads "
                f"{EVENTS_FORMAT}); upgrade tunebench to compare it"
            )
    metric, greater = best_direction(cfg.train)
    return ComparedRun(
        name=run.name,
        path=run.path,
        status=_status(run, bool(events)),
        task=cfg.task,
        data_source=cfg.data.source,
        parent=cfg.output.parent,
        sweep=cfg.output.sweep,
        config=flatten_config(cfg),
        evaluations=[_eval_point(e) for e in sorted(evaluations.values(), key=lambda e: e.step)],
        step_losses=sorted(losses.items()),
        metric="eval_loss" if metric == "loss" else metric,
        greater_is_better=greater,
    )


def _eval_point(e: Evaluated) -> EvalPoint:
    metrics = {"eval_loss": float(e.eval_loss)}
    for name in METRICS[1:]:
        value = getattr(e, name)
        if value is not None:
            metrics[name] = float(value)
    return EvalPoint(epoch=float(e.epoch), step=e.step, metrics=metrics)


# ---------------------------------------------------------------------------------------------------------
# Comparing


def compare(runs: Sequence[ComparedRun]) -> Comparison:
    """Line ``runs`` up: the config diff, legends, evaluations side by side, the best of each metric, the ranking.

    Runs of different tasks or data compare too, with a warning in ``Comparison.warnings``.
    """
    if not runs:
        raise ValueError("compare needs at least one run")
    runs = list(runs)
    diff = config_diff(runs)
    legends = make_legends(runs, diff)
    eval_key, eval_rows = _eval_rows(runs)
    present = {m for run in runs for e in run.evaluations for m in e.metrics}
    metrics = [m for m in METRICS if m in present]
    metric, greater = _ranking_metric(runs)
    tasks = sorted({run.task for run in runs})
    not_ranked = f"not ranked: the runs have different tasks ({', '.join(tasks)})" if len(tasks) > 1 else None
    best: dict[str, float] = {}
    for m in metrics:
        direction = greater if m == metric else metric_greater_is_better(m)
        values = _metric_values(runs, m)
        if values:
            best[m] = max(values) if direction else min(values)
    return Comparison(
        runs=runs,
        diff=diff,
        legends=legends,
        eval_key=eval_key,
        eval_rows=eval_rows,
        metrics=metrics,
        best=best,
        ranking_metric=metric,
        ranking_greater_is_better=greater,
        ranking=[] if not_ranked else _ranking(runs, metric, greater),
        warnings=_warnings(runs, legends, metric),
        not_ranked=not_ranked,
    )


def config_diff(runs: Sequence[ComparedRun]) -> list[DiffRow]:
    """The config keys whose values differ between ``runs``, in config order; IGNORED_KEYS left out."""
    keys = list(dict.fromkeys(key for run in runs for key in run.config))
    rows = []
    for key in keys:
        if key in IGNORED_KEYS:
            continue
        values = [run.config.get(key) for run in runs]
        if any(v != values[0] for v in values[1:]):
            rows.append(DiffRow(key, values))
    return rows


def format_value(value: Any, compact: bool = False) -> str:
    """A config value as it reads best in a table: ``3e-5``, ``16``, ``true``, ``null``, ``tensorboard, wandb``.

    A float is shown in full, or to 6 significant digits when ``compact``, in the shorter of its plain and its
    scientific form (``0.1``, ``1e-4``).
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        plain = _exponent(f"{value:g}" if compact else repr(value))
        if not math.isfinite(value):
            return plain
        # the shortest scientific form that reads back as the value (6 significant digits when compact)
        forms = [f"{value:.{p}e}" for p in ([5] if compact else range(17))]
        shortest = next((t for t in forms if compact or float(t) == value), forms[-1])
        mantissa, _, exponent = shortest.partition("e")
        scientific = _exponent(f"{float(mantissa)!r}e{exponent}").replace(".0e", "e")
        return scientific if len(scientific) < len(plain) else plain
    if isinstance(value, list):
        return (", " if not compact else ",").join(format_value(v, compact) for v in value) if value else "[]"
    return str(value)


def _exponent(text: str) -> str:
    """``3e-05`` -> ``3e-5``, ``1e+20`` -> ``1e20``."""
    mantissa, e, exponent = text.partition("e")
    return f"{mantissa}e{int(exponent)}" if e else text


def setting_name(key: str) -> str:
    """A config key as a table or a legend names it: without its section ("learning_rate"), a block's key with
    its block ("lora.r")."""
    parts = key.split(".")
    return ".".join(parts[1:]) if len(parts) > 2 else parts[-1]


def _legend_part(key: str, value: Any) -> str:
    name = setting_name(key)
    text = format_value(value, compact=True)
    if isinstance(value, str) and "/" in value.strip("/"):  # a hub id or a path: its last part tells runs apart
        text = value.rstrip("/").rpartition("/")[2]
    return f"{LEGEND_ALIASES.get(name, name)}={text}"


def short_name(folder: str) -> str:
    """A run folder's name without its leading timestamp: ``20250101-120000-lr-sweep`` -> ``lr-sweep``."""
    return _STAMP.sub("", folder) or folder


def _clip(text: str, width: int = LEGEND_WIDTH) -> str:
    if len(text) <= width:
        return text
    cut = text[: max(0, width - 1)]
    space = cut.rfind(" ")  # end on a whole setting ("lr=3e-5 wd=0 …") where one fits
    return (cut[: space + 1] if space > 0 else cut) + "…"


def _clip_start(text: str, width: int = LEGEND_WIDTH) -> str:
    # A folder name differs at its end (-1, -2, ...) when its start does not: keep the end.
    return text if len(text) <= width else "…" + text[len(text) - width + 1 :]


def make_legends(runs: Sequence[ComparedRun], diff: Sequence[DiffRow]) -> list[str]:
    """A short, unique name per run from the settings that differ (``lr=3e-5 batch=16``).

    A run whose settings differ in nothing shown, or whose legend equals another's, gets its folder's short
    name (instead, or after it); a legend is at most LEGEND_WIDTH characters.
    """
    keys = [row.key for row in diff if row.key not in NAMING_KEYS]
    order = list(LEGEND_ALIASES)
    keys.sort(key=lambda key: order.index(name) if (name := key.rpartition(".")[2]) in order else len(order))
    described = [_legend(run, keys) for run in runs]
    if any(len(d) > LEGEND_WIDTH for d in described):
        # Cut, whole settings would tell fewer runs apart: name each by the settings that tell them apart.
        named = _telling_keys(runs, keys)
        room = LEGEND_WIDTH - 2  # " …" says that more settings differ than the legend names (the diff has them)
        for key in keys:  # then as many of the others as fit, in their order, where they read differently
            if key not in named and len({_legend_part(key, run.config.get(key)) for run in runs}) > 1:
                more = sorted([*named, key], key=keys.index)
                if all(len(_legend(run, more)) <= room for run in runs):
                    named = more
        described = [_legend(run, named) for run in runs]
        if len(named) < len(keys):
            described = [d if len(d) > room else f"{d} …" for d in described]
    shorts = [short_name(run.name) for run in runs]
    # Two runs of the same name started at different times: only the full folder name tells them apart.
    names = [run.name if shorts.count(s) > 1 else s for run, s in zip(runs, shorts, strict=True)]
    legends = [_clip(d) if d else _clip_start(n) for d, n in zip(described, names, strict=True)]
    twins = {legend for legend in legends if legends.count(legend) > 1}
    legends = [
        _with_name(d, n) if legend in twins else legend for legend, d, n in zip(legends, described, names, strict=True)
    ]
    # Still equal (one folder name in two runs folders, or cut to the same text): number them.
    return [
        f"{_clip(legend, LEGEND_WIDTH - 4)} #{i + 1}" if legends.count(legend) > 1 else legend
        for i, legend in enumerate(legends)
    ]


def _legend(run: ComparedRun, keys: Sequence[str]) -> str:
    return " ".join(_legend_part(key, run.config.get(key)) for key in keys)


def _telling_keys(runs: Sequence[ComparedRun], keys: Sequence[str]) -> list[str]:
    """Keys that tell the runs apart as their legends show them, taken in their order: each one splits runs that
    the keys before it left equal (a key that splits nothing more is skipped)."""
    groups = [list(range(len(runs)))]
    chosen: list[str] = []
    for key in keys:
        if all(len(group) == 1 for group in groups):
            break
        split: list[list[int]] = []
        for group in groups:
            by_value: dict[str, list[int]] = {}
            for i in group:
                by_value.setdefault(_legend_part(key, runs[i].config.get(key)), []).append(i)
            split.extend(by_value.values())
        if len(split) > len(groups):
            chosen.append(key)
            groups = split
    return chosen


def _with_name(described: str, name: str) -> str:
    if not described:
        return _clip_start(name)
    name = _clip_start(name, LEGEND_WIDTH // 2)
    return f"{_clip(described, LEGEND_WIDTH - len(name) - 1)} {name}"


def _eval_rows(runs: Sequence[ComparedRun]) -> tuple[Literal["epoch", "step"], list[EvalRow]]:
    # Runs with different batch sizes evaluate at different steps but the same epochs, so rows go by epoch;
    # evaluations closer than the shown precision (every few steps of a long epoch) need the step.
    by_epoch = all(len({round(e.epoch, 2) for e in run.evaluations}) == len(run.evaluations) for run in runs)
    if by_epoch:
        tables = [{round(e.epoch, 2): e for e in run.evaluations} for run in runs]
        epochs = sorted({epoch for table in tables for epoch in table})
        return "epoch", [EvalRow(epoch, None, [table.get(epoch) for table in tables]) for epoch in epochs]
    step_tables = [{e.step: e for e in run.evaluations} for run in runs]
    steps = sorted({step for table in step_tables for step in table})
    return "step", [EvalRow(None, step, [table.get(step) for table in step_tables]) for step in steps]


def _ranking_metric(runs: Sequence[ComparedRun]) -> tuple[str, bool]:
    chosen = [run.metric for run in runs]
    metric = max(dict.fromkeys(chosen), key=chosen.count)  # the most common; the first run's on a tie
    return metric, next(run.greater_is_better for run in runs if run.metric == metric)


def _ranking(runs: Sequence[ComparedRun], metric: str, greater: bool) -> list[Rank]:
    ranks = []
    for i, run in enumerate(runs):
        best = run.best(metric, greater)
        value = None if best is None else best.metrics[metric]
        ranks.append(Rank(i, value, None if best is None else best.step, None if best is None else best.epoch))

    def order(rank: Rank) -> tuple[bool, float]:
        if rank.value is None:
            return True, 0.0
        return False, -rank.value if greater else rank.value

    return sorted(ranks, key=order)  # stable: equal values keep the order given


def _warnings(runs: Sequence[ComparedRun], legends: Sequence[str], metric: str) -> list[str]:
    def groups(values: list[str]) -> str:
        by_value: dict[str, list[str]] = {}
        for value, legend in zip(values, legends, strict=True):
            by_value.setdefault(value, []).append(legend)
        return "; ".join(f"{value}: {', '.join(names)}" for value, names in by_value.items())

    out = []
    tasks = [run.task for run in runs]
    if len(set(tasks)) > 1:
        out.append(f"the runs have different tasks ({groups(tasks)}); their metrics may not be comparable")
    sources = [run.data_source for run in runs]
    if len(set(sources)) > 1:
        out.append(f"the runs train on different data.source ({groups(sources)}); their metrics may not be comparable")
    chosen = [run.metric for run in runs]
    if len(set(chosen)) > 1:
        out.append(f"the runs pick their best model by different metrics ({groups(chosen)}); ranked by {metric}")
    return out


# ---------------------------------------------------------------------------------------------------------
# Drawing


def sparkline(points: Sequence[tuple[int, float]], width: int, last_step: int, low: float, high: float) -> str:
    """``points`` as block characters, ``width`` cells for steps 1..``last_step`` and ``low``..``high`` for the
    height; each cell shows the mean of its points, a cell without one repeats the cell before, and cells past the
    run's last point stay blank. Give every run the same ``last_step``, ``low`` and ``high`` to compare them."""
    sums = [0.0] * width
    counts = [0] * width
    end = -1
    for step, value in points:
        if not math.isfinite(value):
            continue
        # step 1 in the first cell, last_step in the last
        cell = min(width - 1, max(0, round((step - 1) * (width - 1) / max(1, last_step - 1))))
        sums[cell] += value
        counts[cell] += 1
        end = max(end, cell)
    levels: list[int | None] = []
    for cell in range(end + 1):
        if counts[cell]:
            share = (sums[cell] / counts[cell] - low) / (high - low) if high > low else 0.5
            levels.append(min(len(_SPARKS) - 1, max(0, round(share * (len(_SPARKS) - 1)))))
        else:
            levels.append(None)
    # Before the first logged step (logging_steps > 1) the curve starts at its first point, not at a gap.
    level = next((lv for lv in levels if lv is not None), None)
    chars = []
    for cell_level in levels:
        level = level if cell_level is None else cell_level
        chars.append(" " if level is None else _SPARKS[level])
    return "".join(chars).ljust(width)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def render(comparison: Comparison, width: int = 100) -> list[RenderableType]:
    """``comparison`` for a terminal ``width`` columns wide: the runs, the config diff, the evaluations (each
    metric's best in bold green), the curves as sparklines, and the ranking. Warnings are left to the caller."""
    from rich.text import Text

    c = comparison
    parts: list[RenderableType] = [_runs_table(c), _diff_table(c)]
    if c.eval_rows:
        parts.append(_evaluations_table(c))
    else:
        parts.append(Text("no run has an evaluation yet"))
    # what the other columns of the curves table take: legend, first, min, last, eval sparkline, and the gaps
    others = max(len(legend) for legend in c.legends) + 7 + 16 + 7 + max(9, *(len(r.evaluations) for r in c.runs))
    parts += [_curves_table(c, max(10, min(60, width - others - 10))), _ranking_part(c)]
    return parts


def _table(*columns: str) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False, header_style="bold")
    for i, column in enumerate(columns):
        # The first column names the row (a run, a setting, a metric): whole, while the values may fold. A header
        # is text, never markup: a legend may hold brackets.
        table.add_column(Text(column), justify="left" if i == 0 else "right", overflow="fold", no_wrap=i == 0)
    return table


def _runs_table(c: Comparison) -> Table:
    from rich.text import Text

    table = _table("run", "folder", "status", "evals", "parent")
    for column in table.columns[1:3]:
        column.justify, column.no_wrap = "left", True
    table.columns[4].justify = "left"
    names = [run.name for run in c.runs]
    for i, run in enumerate(c.runs):
        parent = run.parent or "-"
        if run.parent in names:
            parent = c.legends[names.index(run.parent)]  # a compared run: its legend says which
        table.add_row(
            Text(c.legends[i], style="bold"), Text(run.name), run.status, str(len(run.evaluations)), Text(parent)
        )
    return table


def _diff_table(c: Comparison) -> RenderableType:
    from rich.text import Text

    if not c.diff:
        return Text("the configs are the same (lineage and runs folder aside)")
    table = _table("setting", *c.legends)
    for row in c.diff:
        table.add_row(Text(row.key), *(Text(format_value(v)) for v in row.values))
    return table


def _evaluations_table(c: Comparison) -> Table:
    from rich.text import Text

    table = _table("metric", c.eval_key, *c.legends)
    for m in c.metrics:
        direction = "higher" if c.greater_is_better(m) else "lower"
        for n, row in enumerate(c.eval_rows):
            cells = []
            for i in range(len(c.runs)):
                value = row.value(m, i)
                cells.append(Text(_number(value), style="bold green" if c.is_best(m, value) else ""))
            name = Text(f"{METRIC_LABELS.get(m, m)} ({direction})" if n == 0 else "")
            table.add_row(name, row.label, *cells, end_section=n == len(c.eval_rows) - 1)
    return table


def _curves_table(c: Comparison, width: int) -> Table:
    from rich.text import Text

    losses = [loss for run in c.runs for _, loss in run.step_losses if math.isfinite(loss)]
    last_step = max((step for run in c.runs for step, _ in run.step_losses), default=1)
    low, high = (min(losses), max(losses)) if losses else (0.0, 1.0)
    metric = c.ranking_metric
    evals = _metric_values(c.runs, metric)
    eval_low, eval_high = (min(evals), max(evals)) if evals else (0.0, 1.0)
    longest = max((len(run.evaluations) for run in c.runs), default=0)
    heading = f"train loss, steps 1-{last_step}"
    table = _table(
        "run", heading if len(heading) <= width else "train loss", "first", "min", "last", METRIC_LABELS[metric]
    )
    for column in (table.columns[1], table.columns[5]):
        column.justify, column.no_wrap = "left", True
    for legend, run in zip(c.legends, c.runs, strict=True):
        finite = [(step, loss) for step, loss in run.step_losses if math.isfinite(loss)]
        if finite:
            low_point = min(finite, key=lambda p: p[1])
            first, least, last = (
                _number(finite[0][1]),
                f"{low_point[1]:.4f} @{low_point[0]}",
                _number(finite[-1][1]),
            )
        else:
            first = least = last = "-"
        curve = [(i + 1, e.metrics[metric]) for i, e in enumerate(run.evaluations) if metric in e.metrics]
        table.add_row(
            Text(legend),
            Text(sparkline(run.step_losses, width, last_step, low, high), style="cyan"),
            first,
            least,
            last,
            Text(sparkline(curve, max(1, longest), max(1, longest), eval_low, eval_high), style="magenta"),
        )
    return table


def _ranking_part(c: Comparison) -> RenderableType:
    """The ranking as a table, then one line: the best run and its values of the settings that differ."""
    from rich.console import Group
    from rich.text import Text

    label = METRIC_LABELS.get(c.ranking_metric, c.ranking_metric)
    direction = "higher" if c.ranking_greater_is_better else "lower"
    best = c.best_run
    if c.not_ranked:
        return Text(c.not_ranked)
    if best is None:
        return Text(f"no run has an evaluation of {label} yet: nothing to rank")
    table = _table("rank", "run", f"best {label}", "at")
    table.columns[1].justify = table.columns[3].justify = "left"
    for n, rank in enumerate(c.ranking, 1):
        value = "no evaluation" if rank.value is None else _number(rank.value)
        table.add_row(str(n), Text(c.legends[rank.run]), value, _where(rank))
    line = Text.assemble(
        f"best by {label} ({direction} is better): ",
        (c.legends[best], "bold green"),
        f" ({c.runs[best].name}), {_number(c.ranking[0].value)} at {_where(c.ranking[0])}",
    )
    if c.best_values:
        line.append("; its settings: " + ", ".join(f"{key}={format_value(v)}" for key, v in c.best_values))
    return Group(table, Text(""), line)


def _where(rank: Rank) -> str:
    if rank.step is None:
        return "-"
    return f"step {rank.step}" if rank.epoch is None else f"epoch {fmt_epoch(rank.epoch)}, step {rank.step}"


# ---------------------------------------------------------------------------------------------------------
# tunebench compare RUN RUN [...] [--runs-dir runs] [--json]


def add_parsers(sub: Any) -> None:
    """Add this module's commands to ``tunebench``'s subparsers, each with ``handler`` set (see engine.cli)."""
    parser = sub.add_parser(
        "compare", help="compare runs: what differs in their configs, their evaluations and curves, the best run"
    )
    # "*" rather than "+": too few runs is a one-line user error, not argparse's usage text
    parser.add_argument(
        "runs",
        nargs="*",
        metavar="RUN",
        help="two or more runs (folders, names in --runs-dir, or unique prefixes), or a sweep's id: its runs",
    )
    parser.add_argument("--runs-dir", default="runs", help=RUNS_DIR_HELP)
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    parser.set_defaults(handler=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    """``tunebench compare``; a user error raises, and ``engine.cli.main`` turns it into one line and exit 2."""
    from engine.live import resolve_run
    from engine.runs import list_runs, runs_dir_option

    names = list(args.runs)
    if len(names) == 1:  # a sweep's id (tunebench sweep, queue ls): its runs, oldest first, as the Runs panel does
        members = [r.path.name for r in reversed(list_runs(args.runs_dir)) if r.sweep == names[0]]
        if len(members) == 1:
            raise UserError(
                f"compare: sweep {names[0]} has one run in {args.runs_dir}/ so far ({members[0]}); compare needs "
                "two or more"
            )
        names = members or names
    if len(names) < 2:
        raise UserError(
            f"compare: give two runs or more, or a sweep's id (got {len(args.runs)}); "
            f"tunebench runs{runs_dir_option(args.runs_dir)} lists the runs in {args.runs_dir}/"
        )
    folders: dict[Path, str] = {}
    dirs = []
    for name in names:
        run = resolve_run(name, args.runs_dir)
        same = folders.get(run.path.resolve())
        if same is not None:
            raise UserError(f"{name}: the same run as {same}; compare different runs")
        folders[run.path.resolve()] = name
        dirs.append(run)
    comparison = compare([load_compared_run(run) for run in dirs])
    for warning in comparison.warnings:
        print(f"tunebench: warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(comparison.to_json(), ensure_ascii=False))
        return 0
    from engine.report import stdout_console

    console = stdout_console()
    for i, part in enumerate(render(comparison, console.width)):
        if i:
            console.print()
        console.print(part)
    return 0
