"""The best evaluation and early stopping by ``train.metric_for_best_model``: transformers' rules (the Trainer's
best metric, its EarlyStoppingCallback), which the SFT engine gets from transformers and the loop engine through
``EarlyStopping``; the Runner uses it to say why a run stopped early and which evaluation was the best."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from engine.config import TrainConfig, best_direction
from engine.events import Evaluated, Event


class EarlyStopping:
    """transformers' EarlyStoppingCallback rule, for the loop engine (the SFT engine uses the callback itself):
    an evaluation resets the patience count when its metric beats the best so far by more than ``threshold``,
    else adds one; the best so far moves on any improvement; training stops once the count reaches
    ``patience``."""

    def __init__(self, metric: str, greater_is_better: bool, patience: int | None, threshold: float) -> None:
        self.metric, self.greater, self.patience, self.threshold = metric, greater_is_better, patience, threshold
        self.best: float | None = None
        self.best_step = 0
        self.count = 0

    @classmethod
    def for_run(cls, train: TrainConfig, earlier: Iterable[Event] = (), upto_step: int = 0) -> EarlyStopping:
        """The rule of ``train``, with the evaluations a resumed run made up to its checkpoint's step folded in."""
        rule = cls(*best_direction(train), train.early_stopping_patience, train.early_stopping_threshold)
        for event in earlier:
            if isinstance(event, Evaluated) and event.step <= upto_step:
                rule.see(dataclasses.asdict(event), event.step)
        return rule

    @property
    def metric_name(self) -> str:
        """The metric as evaluations name it: eval_loss, accuracy, ..."""
        return "eval_loss" if self.metric == "loss" else self.metric

    def value(self, scores: Mapping[str, float | None]) -> float | None:
        return scores.get(self.metric_name)

    def see(self, scores: Mapping[str, float | None], step: int) -> bool:
        """Fold in one evaluation; True when training should stop now."""
        value = self.value(scores)
        if value is None:
            return False
        better = self.best is None or (value > self.best if self.greater else value < self.best)
        if self.best is not None and better and abs(value - self.best) > self.threshold:
            self.count = 0
        elif self.best is not None:
            self.count += 1
        if better:
            self.best, self.best_step = value, step
        return self.patience is not None and self.count >= self.patience

    def note(self, step: int) -> str:
        """What the run's end says when it stopped early at ``step``: "stopped early at step 24: eval_loss did not
        improve for 2 evaluations in a row (best 0.3100 at step 12)"."""
        shown = "-" if self.best is None else f"{self.best:.4f}"
        # transformers' rule: the best moves on any gain, the patience resets only on one past the threshold.
        by = f" by more than {self.threshold:g}" if self.threshold else ""
        times = "1 evaluation" if self.count == 1 else f"{self.count} evaluations"
        return (
            f"stopped early at step {step}: {self.metric_name} did not improve{by} for {times} in a row "
            f"(best {shown} at step {self.best_step})"
        )
