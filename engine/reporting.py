"""Copies of a run's scalars for the tools people already use (``output.report_to``): TensorBoard and Weights &
Biases. ``events.jsonl`` stays the source of truth.

A reporter is one more subscriber of the run's events, so both engines write the same scalars under the same
names and steps. The writers are accelerate's trackers (``accelerate.tracking``), used on their own: the loop
engine's Accelerator and the Trainer's ``report_to`` would each log under their own names and steps.
"""

from __future__ import annotations

import importlib.util
import logging
import netrc
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from engine.config import RunConfig
from engine.errors import ConfigError
from engine.events import Emit, EpochEnded, Evaluated, Event, LogMessage, RunStarted, StepLogged

if TYPE_CHECKING:
    from accelerate.tracking import GeneralTracker

    from engine.runs import RunDir

log = logging.getLogger("tunebench.reporting")

#: report_to name -> the module it needs (each is an extra: pip install 'tunebench[NAME]').
MODULES = {"tensorboard": "tensorboard", "wandb": "wandb"}


def check_installed(report_to: Sequence[str]) -> None:
    """Refuse a tracker whose package is missing, with the command that installs it."""
    for name in report_to:
        if importlib.util.find_spec(MODULES[name]) is None:
            raise ConfigError("output.report_to", f"{name} is not installed; pip install 'tunebench[{name}]'")


def scalars(event: Event) -> tuple[dict[str, float], int] | None:
    """The values an event adds to a run's charts, and its optimizer step."""
    if isinstance(event, StepLogged):
        return {
            "train/loss": event.loss,
            "train/learning_rate": event.learning_rate,
            "train/samples_per_second": event.samples_per_second,
            "train/epoch": event.epoch,
        }, event.step
    if isinstance(event, EpochEnded):
        return {"train/epoch_loss": event.train_loss}, event.step
    if isinstance(event, Evaluated):
        scores = {
            "eval/loss": event.eval_loss,
            "eval/accuracy": event.accuracy,
            "eval/macro_f1": event.macro_f1,
            "eval/perplexity": event.perplexity,
        }
        return {k: v for k, v in scores.items() if v is not None}, event.step
    return None


def wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def flat_config(cfg: RunConfig) -> dict[str, Any]:
    """``section.key`` -> value, as trackers store hyperparameters (scalars and strings only)."""
    out: dict[str, Any] = {}
    for key, value in cfg.to_dict().items():
        items = value.items() if isinstance(value, dict) else [("", value)]
        for name, v in items:
            out[f"{key}.{name}" if name else key] = ", ".join(map(str, v)) if isinstance(v, list) else v
    return out


class Reporter:
    """Starts its trackers at the run's first RunStarted (the main process's, once the engine has set up its
    processes) and logs each event's scalars. A tracker that fails is dropped with one warning; it never fails
    the run."""

    def __init__(self, cfg: RunConfig, run_dir: RunDir, say: Emit) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.say = say
        self.started = False
        #: The trackers that started and have not failed since.
        self.trackers: list[GeneralTracker] = []

    def _start(self, start_step: int) -> None:
        from accelerate import PartialState
        from accelerate.tracking import TensorBoardTracker, WandBTracker

        PartialState()  # the engine's, by now; accelerate's trackers log through it
        report_to = self.cfg.output.report_to
        wanted: list[GeneralTracker] = []
        if "tensorboard" in report_to:
            # logs in RUN/tensorboard: `tensorboard --logdir runs` shows every run by its folder name. A resumed
            # run purges what its earlier session logged after the checkpoint it resumes from: it logs it again.
            purge = {"purge_step": start_step + 1} if start_step else {}
            wanted.append(TensorBoardTracker("tensorboard", self.run_dir.path, **purge))
        if "wandb" in report_to:
            # one wandb run per run folder, continued when the run is resumed
            settings: dict[str, Any] = {
                "name": self.run_dir.name,
                "id": self.run_dir.name,
                "resume": "allow",
                "dir": str(self.run_dir.path),
            }
            if "WANDB_MODE" not in os.environ and not wandb_has_credentials():
                settings["mode"] = "offline"  # wandb would otherwise stop the run to ask for a key
                self.say(
                    LogMessage(
                        "warning",
                        f"wandb: no credentials (WANDB_API_KEY or `wandb login`), logging offline to "
                        f"{self.run_dir.path / 'wandb'}; `wandb sync` uploads it later",
                        "tunebench.reporting",
                    )
                )
            wanted.append(WandBTracker("tunebench", **settings))
        hyperparameters = flat_config(self.cfg)
        for tracker in wanted:
            tracker.main_process_only = False  # events come from the main process only
            try:
                tracker.start()
                tracker.store_init_configuration(hyperparameters)
            except Exception as exc:
                self._drop(tracker, "start", exc)
                continue
            self.trackers.append(tracker)

    def _drop(self, tracker: GeneralTracker, doing: str, exc: Exception) -> None:
        """Give up on a tracker that failed, saying so once; the run and the other trackers go on."""
        log.debug("report_to: %s failed to %s", tracker.name, doing, exc_info=exc)
        self.say(
            LogMessage(
                "warning",
                f"report_to: {tracker.name} failed to {doing} ({type(exc).__name__}: {exc}); no more is sent to it, "
                "events.jsonl has everything",
                "tunebench.reporting",
            )
        )
        if tracker in self.trackers:
            self.trackers.remove(tracker)

    def see(self, event: Event) -> None:
        if isinstance(event, RunStarted) and not self.started:
            self.started = True
            self._start(event.start_step)
        found = scalars(event)
        if found is None:
            return
        values, step = found
        for tracker in list(self.trackers):
            try:
                tracker.log(values, step=step)
            except Exception as exc:
                self._drop(tracker, "log", exc)

    def close(self) -> None:
        for tracker in self.trackers:
            try:
                tracker.finish()
            except Exception:
                log.exception("report_to: closing %s failed", tracker.name)
        self.trackers = []
