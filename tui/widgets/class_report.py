"""A classification run's last evaluation: the confusion matrix as a coloured grid and the per-class scores."""

from __future__ import annotations

from textual.widgets import Static

from tui.widgets.epoch_table import RunCurves


class ClassReport(Static):
    """Drawn by ``engine.report``, as ``tunebench runs RUN`` prints it."""

    def show(self, curves: RunCurves) -> None:
        from engine.report import class_report

        last = curves.last_confusion
        if last is None:
            self.update("no confusion matrix: the run has no classification evaluation yet")
            return
        self.update(class_report(last, curves.label_names))
