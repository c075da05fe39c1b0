"""Per-class scores from an evaluation's confusion matrix (rows = true labels, columns = predicted).

Plain Python on lists, so that the summary, the CLI and the workbench read the same figures from
``events.jsonl`` without torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Confusion = list[list[int]]


@dataclass(frozen=True)
class ClassScores:
    label: str
    precision: float
    recall: float
    f1: float
    #: Eval rows whose true label is this one.
    support: int


def class_scores(confusion: Sequence[Sequence[int]], labels: Sequence[str]) -> list[ClassScores]:
    """Precision, recall and F1 of each class; 0 where a class was never predicted or never present."""
    out = []
    for i, row in enumerate(confusion):
        hits = row[i]
        predicted = sum(r[i] for r in confusion)
        actual = sum(row)
        precision = hits / predicted if predicted else 0.0
        recall = hits / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out.append(ClassScores(label_of(labels, i), precision, recall, f1, actual))
    return out


def macro_f1(confusion: Sequence[Sequence[int]]) -> float:
    """Mean F1 over the classes that appear in the labels or the predictions; 0 when none does."""
    present = [c for i, c in enumerate(class_scores(confusion, [])) if c.support or sum(row[i] for row in confusion)]
    return sum(c.f1 for c in present) / len(present) if present else 0.0


def label_of(labels: Sequence[str], index: int) -> str:
    """The name of class ``index``; its number when the run named fewer classes."""
    return labels[index] if index < len(labels) else str(index)
