"""Route library logs, warnings and progress bars away from the terminal and into the run's events and log.

Under Textual, anything written straight to the terminal tears the screen; in the CLI it fights the progress
bar. So while a run is active, transformers/datasets/accelerate/trl/torch log records become ``LogMessage``
events and lines in ``run.log``, and their progress bars are off.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from engine.events import Event, LogMessage

LIBRARY_LOGGERS = (
    "tunebench",
    "transformers",
    "datasets",
    "accelerate",
    "trl",
    "torch",
    "huggingface_hub",
    "py.warnings",
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: Library warnings about choices Tunebench makes for the user, not to show as if something were wrong (run.log
#: keeps them): its early stopping goes with or without train.load_best_model_at_end, which says what model/ holds.
_NOT_SHOWN = ("Using EarlyStoppingCallback without load_best_model_at_end",)


#: Weights a checkpoint leaves out because they are the same tensors as others it holds (an MLM decoder shares the
#: input embeddings and the head's bias, a causal LM's head the embeddings); loading ties them again.
_TIED = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias", "lm_head.weight")
_MISSING = "There were missing keys in the checkpoint model loaded:"


def _only_tied_weights_missing(message: str) -> bool:
    """Trainer's warning on loading a checkpoint (a resume, the best model at the end) that names tied weights
    only: the run goes on exactly as it would have, so it is no warning to show (run.log keeps it)."""
    if not message.startswith(_MISSING):
        return False
    keys = re.findall(r"'([^']+)'", message)
    return bool(keys) and all(key.endswith(_TIED) for key in keys)


class _EventHandler(logging.Handler):
    def __init__(self, emit: Callable[[Event], None]) -> None:
        super().__init__(logging.INFO)
        self._emit = emit

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = _ANSI.sub("", record.getMessage()).strip()
            if message.startswith(_NOT_SHOWN) or _only_tied_weights_missing(message):
                return
            self._emit(LogMessage(level=record.levelname.lower(), message=message, logger=record.name))
        except Exception:  # a log line must never break training
            self.handleError(record)


def quiet_libraries() -> None:
    """Turn off the libraries' own terminal handlers and progress bars (idempotent, process-wide)."""
    import datasets
    import transformers

    transformers.utils.logging.disable_default_handler()
    transformers.utils.logging.enable_propagation()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    logging.captureWarnings(True)


@contextlib.contextmanager
def capture_library_logs(emit: Callable[[Event], None], log_path: Path | None = None) -> Iterator[None]:
    """While active, library records at INFO or above (warnings and up for chatty ones) go to ``emit`` and to
    ``log_path``; nothing reaches the terminal."""
    quiet_libraries()
    handlers: list[logging.Handler] = [_EventHandler(emit)]
    if log_path is not None:
        fh = logging.FileHandler(log_path, encoding="utf-8")
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handlers.append(fh)
    saved: list[tuple[logging.Logger, bool, list[logging.Handler], int]] = []
    for name in LIBRARY_LOGGERS:
        lg = logging.getLogger(name)
        saved.append((lg, lg.propagate, list(lg.handlers), lg.level))
        lg.handlers = list(handlers)
        lg.propagate = False
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, propagate, old, level in saved:
            lg.handlers = old
            lg.propagate = propagate
            lg.setLevel(level)
        for h in handlers:
            h.close()
