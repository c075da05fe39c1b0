"""One module per workbench panel.

The app imports a panel's module when it mounts the panel: the first frame waits only for the panel it shows,
and the other four are mounted right after it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from textual.widget import Widget

    from engine.config import RunConfig
    from tui.panels.predict import Backend

#: Panel id -> (tab label, title shown at the top of the panel), in tab order.
PANELS: dict[str, tuple[str, str]] = {
    "data": ("Data", "Data browser"),
    "config": ("Config", "Run config"),
    "train": ("Train", "Training"),
    "predict": ("Predict", "Prediction"),
    "runs": ("Runs", "Run history"),
}


def make_panel(panel: str, cfg: RunConfig, config_path: str, predict_backend: Backend | None) -> Widget:
    """A new widget for ``panel``; its module is imported here, the first time it is needed."""
    if panel == "data":
        from tui.panels.data import DataPanel

        return DataPanel(cfg, id="data-panel")
    if panel == "config":
        from tui.panels.config import ConfigPanel

        return ConfigPanel(cfg, config_path, id="config-panel")
    if panel == "train":
        from tui.panels.train import TrainPanel

        return TrainPanel(cfg, id="train-panel")
    if panel == "predict":
        from tui.panels.predict import PredictPanel

        return PredictPanel(cfg, predict_backend, id="predict-panel")
    if panel == "runs":
        from tui.panels.runs import RunsPanel

        return RunsPanel(cfg.output.runs_dir, id="runs-panel")
    raise ValueError(f"no panel {panel!r}; panels: {', '.join(PANELS)}")
