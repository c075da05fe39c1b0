"""Named points where a run can be killed on purpose, to prove that it resumes from any of them.

``TUNEBENCH_KILL_AT=NAME`` or ``NAME@STEP`` makes the process SIGKILL itself the first time it reaches that
point (at that optimizer step): the same end as a ``kill -9`` or a power cut there, without the luck of timing.
Unset, a point costs one dictionary lookup. The points:

    model-load           the model's weights are loaded (no checkpoint exists yet)
    step                 an optimizer step is done, before any checkpoint of it
    checkpoint-write     a checkpoint's files are written, its completion marker is not
    checkpoint-renamed   a checkpoint is complete and renamed into place
    epoch-end            an epoch's last step is done, its epoch summary and evaluation are not
    evaluate             an evaluation has begun
    model-save           the final model's files are written, not yet renamed into place
    summary-write        the run has ended (its last event is written), summary.json is not yet

and in the queue runner (engine.queue), at each step of starting an entry's run:

    queue-claimed        the entry is marked claimed with its run folder's name
    queue-folder         the run folder and its config.yaml are made, no process started
    queue-spawned        the run's process is started, not yet known to train
"""

from __future__ import annotations

import os
import signal

ENV = "TUNEBENCH_KILL_AT"


def kill_point(name: str, step: int | None = None) -> None:
    """SIGKILL this process if ``TUNEBENCH_KILL_AT`` names this point (and this step, when it gives one)."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    point, _, at = wanted.partition("@")
    if point == name and (not at or (step is not None and int(at) == step)):
        os.kill(os.getpid(), signal.SIGKILL)
