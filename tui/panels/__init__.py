"""One module per workbench panel.

The app imports a panel's module when it mounts the panel: the first frame waits only for the panel it shows,
and the other four are mounted right after it.
"""

#: Panel id -> (tab label, title shown at the top of the panel), in tab order.
PANELS: dict[str, tuple[str, str]] = {
    "data": ("Data", "Data browser"),
    "config": ("Config", "Run config"),
    "train": ("Train", "Training"),
    "predict": ("Predict", "Prediction"),
    "runs": ("Runs", "Run history"),
}
