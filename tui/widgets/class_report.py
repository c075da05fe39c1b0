"""A classification run's last evaluation: the confusion matrix as a coloured grid and the per-class scores."""

from __future__ import annotations

from typing import Any

from textual.widgets import Static

from tui.widgets.epoch_table import RunCurves


class ClassReport(Static):
    """Drawn by ``engine.report``, as ``tunebench runs RUN`` prints it; the per-class table beside the grid where
    the width holds both, so that a panel's few lines show every class."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._curves: RunCurves | None = None

    def show(self, curves: RunCurves) -> None:
        self._curves = curves
        self._draw()

    def on_resize(self) -> None:
        self._draw()

    def _draw(self) -> None:
        from engine.report import class_report

        last = self._curves.last_confusion if self._curves is not None else None
        if last is None or self._curves is None:
            self.update("no confusion matrix: the run has no classification evaluation yet")
            return
        self.update(class_report(last, self._curves.label_names, width=self.content_size.width or None))
