"""A classification run's last evaluation: the confusion matrix as a coloured grid and the per-class scores."""

from __future__ import annotations

from textual.widgets import Static

from tui.widgets.epoch_table import RunCurves


class ClassReport(Static):
    """Drawn by ``engine.report``, as ``tunebench runs RUN`` prints it."""

    def show(self, curves: RunCurves) -> None:
        from rich.console import Group
        from rich.text import Text

        from engine.report import class_table, confusion_grid

        last = curves.last_confusion
        if last is None or last.confusion is None:
            self.update("no confusion matrix: the run has no classification evaluation yet")
            return
        heading = Text.from_markup(
            f"[bold]confusion matrix[/bold], epoch {last.epoch}, step {last.step} (rows: true labels)"
        )
        labels = curves.label_names
        self.update(
            Group(heading, confusion_grid(last.confusion, labels), Text(""), class_table(last.confusion, labels))
        )
