"""Where library log records from the workbench's own workers go."""

from __future__ import annotations

import logging

from tui.bridge import LogBridge


def test_the_train_logs_bridge_leaves_predict_warnings_to_the_predict_panel() -> None:
    posted: list[object] = []
    bridge = LogBridge(posted.append)
    for name in ("tunebench.predict", "transformers.modeling_utils"):
        bridge.handle(logging.LogRecord(name, logging.WARNING, __file__, 1, "a warning", None, None))
    assert [m.event.logger for m in posted] == ["transformers.modeling_utils"]  # type: ignore[attr-defined]
