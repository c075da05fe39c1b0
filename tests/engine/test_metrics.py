"""Per-class scores and the terminal report of a confusion matrix, counted by hand."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from engine.metrics import class_scores, macro_f1
from engine.report import class_table, confusion_grid


def test_per_class_scores_from_a_hand_made_confusion_matrix() -> None:
    # rows = true: 3 cats (2 right, 1 called dog), 2 dogs (both right), 1 bird (called cat)
    confusion = [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    cat, dog, bird = class_scores(confusion, ["cat", "dog", "bird"])
    assert (cat.precision, cat.recall, cat.support) == (pytest.approx(2 / 3), pytest.approx(2 / 3), 3)
    assert (dog.precision, dog.recall, dog.f1) == (pytest.approx(2 / 3), 1.0, pytest.approx(0.8))
    assert (bird.precision, bird.recall, bird.f1, bird.support) == (0.0, 0.0, 0.0, 1)  # never predicted


def test_macro_f1_averages_the_classes_that_appear_in_labels_or_predictions() -> None:
    # the third class is neither a label nor a prediction: it does not count
    assert macro_f1([[2, 1, 0], [0, 2, 0], [0, 0, 0]]) == pytest.approx((0.8 + 0.8) / 2)
    # the bird is a label but never predicted: it counts with F1 0
    assert macro_f1([[2, 1, 0], [0, 2, 0], [1, 0, 0]]) == pytest.approx((2 / 3 + 0.8 + 0.0) / 3)
    assert macro_f1([[0]]) == 0.0


def test_a_class_the_run_did_not_name_is_shown_by_its_number() -> None:
    assert [c.label for c in class_scores([[1, 0], [0, 1]], ["only"])] == ["only", "1"]


def test_the_report_lists_every_count_and_score() -> None:
    confusion = [[2, 1], [0, 3]]
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(confusion_grid(confusion, ["neg", "pos"]))
    console.print(class_table(confusion, ["neg", "pos"]))
    lines = [" ".join(line.split()) for line in console.export_text().splitlines()]
    assert lines[:3] == ["true \\ predicted neg pos", "neg 2 1", "pos 0 3"]
    assert "neg 1.000 0.667 0.800 3" in lines and "pos 0.750 1.000 0.857 3" in lines


def test_labels_are_shown_as_written_never_as_markup() -> None:
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(confusion_grid([[1, 0], [0, 1]], ["[neg]", "a[/b]"]))
    console.print(class_table([[1, 0], [0, 1]], ["[neg]", "a[/b]"]))
    text = console.export_text()
    assert text.count("[neg]") == 3 and text.count("a[/b]") == 3  # grid column, grid row, class table row
