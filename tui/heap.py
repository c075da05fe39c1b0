"""Keep the cyclic garbage collector's full passes off the workbench's long-lived heap.

Once torch, transformers or datasets are imported, the process holds hundreds of thousands of objects that
live as long as it does, and each full collection walks all of them with the interpreter lock held, so the
UI stalls (docs/perf-log.md, causes 3 and 15, has the figures). ``gc.freeze`` moves the objects alive at a quiet
point out of the collector's reach; collections then see only what was made since. (A run trains in a process
of its own, whose Runner does the same for its own heap.)

The young generation is also collected less often than Python's default: a panel switch allocates tens of
thousands of short-lived objects, and at the default threshold each switch ran about thirty young collections,
two or three middle ones, and every few keys a full one (docs/perf-log.md, cause 33).

The app freezes once its panels are mounted, after a panel has loaded a dataset or models, and when a run
starts (the engine modules imported to start it). Whatever was frozen and later becomes cyclic garbage
(models themselves are freed by reference counting) stays until a run ends: the app then thaws, collects
once (one full pass, while the screen changes anyway) and freezes again.
"""

from __future__ import annotations

import gc

#: Allocations (net of frees) between two collections of the young generation; Python's default is 700.
YOUNG_THRESHOLD = 5_000

_defaults: tuple[int, int, int] | None = None


def start() -> None:
    """The workbench is up: collect the young generation less often, and freeze what is alive now."""
    global _defaults
    if _defaults is None:
        _defaults = gc.get_threshold()
        gc.set_threshold(YOUNG_THRESHOLD, *_defaults[1:])
    freeze()


def freeze() -> None:
    """Take every object alive now out of the collector's passes."""
    gc.freeze()


def collect_and_freeze() -> None:
    """After a run: thaw, collect what the run left in cycles (one full pass), then freeze what remains."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def thaw() -> None:
    """Give every frozen object back to the collector, and the collector its thresholds (the app is closing)."""
    global _defaults
    gc.unfreeze()
    if _defaults is not None:
        gc.set_threshold(*_defaults)
        _defaults = None
