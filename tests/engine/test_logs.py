"""Library log records during a run: which reach the run's events, and which only its run.log."""

from __future__ import annotations

import logging
from pathlib import Path

from engine.events import Event, LogMessage
from engine.logs import capture_library_logs


def test_a_warning_about_tied_weights_missing_from_a_checkpoint_goes_to_run_log_only(tmp_path: Path) -> None:
    events: list[Event] = []
    missing = "There were missing keys in the checkpoint model loaded:"
    tied = f"{missing} ['cls.predictions.decoder.weight', 'cls.predictions.decoder.bias']."
    real = f"{missing} ['bert.encoder.layer.0.output.dense.weight']."
    with capture_library_logs(events.append, tmp_path / "run.log"):
        for message in (tied, real):
            logging.getLogger("transformers.trainer").warning(message)
    assert [e.message for e in events if isinstance(e, LogMessage)] == [real]
    assert tied in (tmp_path / "run.log").read_text()
