"""The ``tunebench`` command: the workbench with no subcommand (or ``ui``), the headless CLI for the rest."""

from __future__ import annotations

import sys


def open_workbench(config_path: str) -> int:
    from tui.app import main as ui_main

    return int(ui_main(config_path) or 0)


def main(argv: list[str] | None = None) -> int:
    from engine import cli

    return cli.main(argv, open_ui=open_workbench)


if __name__ == "__main__":
    sys.exit(main())
