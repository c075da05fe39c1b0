"""The ``tunebench`` command: the workbench with no subcommand (or ``ui``), the headless CLI for the rest."""

from __future__ import annotations

import sys
from pathlib import Path


def open_workbench(config_path: str, attach: Path | None = None) -> int:
    """Open the workbench on ``config_path`` (following the run in ``attach``, on the Train panel); exit code 2
    when the config cannot be read."""
    import os

    from engine.config import load_config
    from engine.errors import ConfigError
    from tui.app import WorkbenchApp

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        print(f"tunebench: error: {exc}", file=sys.stderr)
        return 2
    app = WorkbenchApp(cfg, config_path, attach=attach, initial_panel="train" if attach else "data")
    app.run()
    if app.training.left_run is not None:
        print(left_run_line(app.training.left_run))
    return app.return_code or 0


def left_run_line(run_dir: Path) -> str:
    """What the terminal says after the workbench quit and left a run going: where it is, how to see it again."""
    from engine.runs import RunDir, run_ref

    run = RunDir(run_dir)
    ref = run_ref(run)
    if run.live_state() == "paused":  # left paused (l in the quit question): it waits for a resume
        return f"the run waits paused without the workbench: {run_dir}; tunebench resume {ref} continues it"
    return f"the run goes on without the workbench: {run_dir}; tunebench attach {ref} shows it"


def main(argv: list[str] | None = None) -> int:
    from engine import cli

    return cli.main(argv, open_ui=open_workbench)


if __name__ == "__main__":
    sys.exit(main())
