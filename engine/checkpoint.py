"""Training checkpoints: written atomically, found again after any crash, loaded without unpickling code.

Layout of one checkpoint, ``<run>/checkpoints/checkpoint-<step>/``::

    model.safetensors   weights (safetensors: no code runs on load); a LoRA run has its adapter instead:
                        adapter_config.json and adapter_model.safetensors (engine.adapters)
    config.json, tokenizer files    so that the checkpoint loads as a model (Predict, while the run trains)
    optimizer.pt        optimizer state  } loaded with torch.load(weights_only=True)
    scheduler.pt        scheduler state  }
    rng.pt              python, numpy, torch (and cuda) RNG states, and the sampler's generator state
    state.json          step counters, data position, running sums of the current epoch
    COMPLETE            written last; a folder without it is ignored

The folder is first written as a hidden temporary sibling, every file is fsynced, and only then renamed to
its final name (the rule of ``engine.files``), so a kill at any moment leaves either the whole checkpoint or
none of it. The SFT engine writes the Trainer's own files through the same ``write_checkpoint``.

Why not accelerate's ``save_state``/``load_state``: what the loop engine needs beyond the model, optimizer,
schedule and RNG (the sampler's generator, the epoch's running sums) would go through
``register_for_checkpointing``, and accelerate 1.16 loads those objects with ``torch.load(weights_only=False)``
(``accelerate.checkpointing.load_custom_state``): a checkpoint file could then run code when a run resumes.
Here nothing is unpickled (``tests/engine/test_security.py``).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import adapters
from engine.errors import DISK_ERRNOS, CheckpointError, os_error_of
from engine.events import plural
from engine.faults import kill_point
from engine.files import fsync_path, make_temp_dir, rename_durably, seal_tree, write_synced

if TYPE_CHECKING:
    import torch

log = logging.getLogger("tunebench.checkpoint")

MARKER = "COMPLETE"
STATE_FILE = "state.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
RNG_FILE = "rng.pt"
SCALER_FILE = "scaler.pt"
_NAME = re.compile(r"^checkpoint-(\d+)$")
_TEMP_PREFIX = ".checkpoint-"


@dataclass
class TrainingState:
    """Where a run stands after an optimizer step; enough to continue the same trajectory."""

    step: int
    #: 1-based epoch the next batch belongs to.
    epoch: int
    #: Batches of ``epoch`` already trained on (all of them when the epoch's end-of-epoch work is pending).
    batches_done: int
    batches_per_epoch: int
    total_steps: int
    #: Sum and count of the micro-batch losses of the current epoch (for EpochEnded.train_loss).
    epoch_loss_sum: float = 0.0
    epoch_batches: int = 0
    #: The same for the current logging window.
    window_loss_sum: float = 0.0
    window_batches: int = 0
    window_samples: int = 0
    #: Seconds spent stepping so far, pauses and downtime excluded (base of ETA and throughput).
    train_time: float = 0.0
    #: Seconds of ``epoch`` trained so far: a resumed epoch's EpochEnded duration goes on from them.
    epoch_seconds: float = 0.0
    #: Metrics of the last finished epoch, so a resumed run reports them even if it ends at once.
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def epoch_float(self) -> float:
        return self.epoch - 1 + self.batches_done / max(self.batches_per_epoch, 1)


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step}"


def complete_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Complete checkpoints under ``checkpoints_dir``, oldest (lowest step) first."""
    if not checkpoints_dir.is_dir():
        return []
    found: list[tuple[int, Path]] = []
    for path in checkpoints_dir.iterdir():
        match = _NAME.match(path.name)
        if match and path.is_dir() and (path / MARKER).is_file():
            found.append((int(match.group(1)), path))
    return [p for _, p in sorted(found)]


def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The complete checkpoint with the highest step, or None; half-written ones never count."""
    done = complete_checkpoints(checkpoints_dir)
    return done[-1] if done else None


def remove_partial(checkpoints_dir: Path) -> None:
    """Delete leftovers of checkpoints whose writing was interrupted (temporary or marker-less folders)."""
    if not checkpoints_dir.is_dir():
        return
    for path in checkpoints_dir.iterdir():
        partial = path.name.startswith(_TEMP_PREFIX) or (_NAME.match(path.name) and not (path / MARKER).exists())
        if partial and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def write_checkpoint(
    checkpoints_dir: Path,
    step: int,
    write: Callable[[Path], None],
    *,
    keep: int | None = None,
    best: Path | None = None,
) -> Path:
    """Write a checkpoint atomically and prune old ones; returns its final path.

    ``write(folder)`` fills a temporary folder. Then every file is fsynced, the marker written, the folder
    renamed to ``checkpoint-<step>`` and the parent fsynced. Only after that are checkpoints beyond ``keep``
    deleted, oldest first, so a failure never costs one that was already complete. The new checkpoint and
    ``best`` (the best evaluated one) are never deleted: with ``keep: 1`` two may stay, as in transformers.
    """
    final = checkpoints_dir / checkpoint_name(step)
    try:
        checkpoints_dir.mkdir(parents=True, exist_ok=True)
        tmp = make_temp_dir(checkpoints_dir, f"{_TEMP_PREFIX}{step}.")
    except OSError as exc:
        raise _disk_error(checkpoints_dir, exc) from None
    try:
        write(tmp)
        seal_tree(tmp)
        kill_point("checkpoint-write", step)
        write_synced(tmp / MARKER, json.dumps({"step": step}) + "\n")
        fsync_path(tmp)
        if final.exists():  # the same step saved twice (a stop right after a scheduled save)
            shutil.rmtree(final)
        rename_durably(tmp, final)
        kill_point("checkpoint-renamed", step)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        disk = os_error_of(exc)  # safetensors reports a full disk in its own error type
        if disk is not None and disk.errno in DISK_ERRNOS:
            raise _disk_error(checkpoints_dir, disk) from None
        raise
    if keep is not None:
        prune(checkpoints_dir, keep, protected={final, best})
    return final


def prune(checkpoints_dir: Path, keep: int, protected: set[Path | None]) -> None:
    """Delete the oldest complete checkpoints until ``keep`` are left, sparing the ``protected`` ones."""
    done = complete_checkpoints(checkpoints_dir)
    excess = len(done) - max(keep, len(protected & set(done)))
    for old in done:
        if excess <= 0:
            break
        if old not in protected:
            # Renamed first, so that it goes at once for a reader (predict on a live run), not file by file; a
            # leftover of a kill mid-delete is a temporary folder that remove_partial clears.
            gone = old.with_name(f"{_TEMP_PREFIX}pruned-{old.name}")
            try:
                os.replace(old, gone)
            except OSError:
                gone = old
            shutil.rmtree(gone, ignore_errors=True)
            excess -= 1


def _disk_error(where: Path, exc: OSError) -> CheckpointError:
    kept = latest_checkpoint(where)
    intact = f"; {kept.name} is intact" if kept else ""
    return CheckpointError(
        f"cannot write a checkpoint in {where} ({exc.strerror or exc}){intact}; free disk space or fix the "
        "folder's permissions, then resume the run with tunebench run --resume"
    )


# ---------------------------------------------------------------------------------------------------------
# What goes in: model, optimizer, scheduler, RNG states, counters


def rng_states() -> dict[str, Any]:
    """Every random state that shapes the rest of the run, as tensors and plain values (no pickled objects)."""
    import numpy as np
    import torch

    version, mt_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    states: dict[str, Any] = {
        "python_version": version,
        "python_state": torch.tensor(mt_state, dtype=torch.int64),
        "python_gauss": gauss,
        "numpy_name": np_name,
        "numpy_keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
        "numpy_pos": int(np_pos),
        "numpy_has_gauss": int(np_has_gauss),
        "numpy_gauss": float(np_gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any], sampler_generator: torch.Generator | None) -> None:
    import numpy as np
    import torch

    random.setstate(
        (
            int(states["python_version"]),
            tuple(int(x) for x in states["python_state"].tolist()),
            states["python_gauss"],
        )
    )
    np.random.set_state(
        (
            str(states["numpy_name"]),
            states["numpy_keys"].numpy().astype(np.uint32),
            int(states["numpy_pos"]),
            int(states["numpy_has_gauss"]),
            float(states["numpy_gauss"]),
        )
    )
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    if sampler_generator is not None and "sampler" in states:
        sampler_generator.set_state(states["sampler"])


def rng_of_rank(states: dict[str, Any], rank: int, processes: int) -> dict[str, Any]:
    """The RNG states one process of a run restores: its own where the checkpoint holds every process's (a
    many-process run's), else the main process's, with a warning when the run's process count changed (the
    rest of the run then draws other random numbers than it would have)."""
    ranks = states.get("ranks")
    saved = len(ranks) if isinstance(ranks, list) else 1
    if saved != processes:
        if rank == 0:
            log.warning(
                "the checkpoint was written by %s and the run goes on with %d: its random numbers "
                "(dropout, masks) differ from an uninterrupted run's from here on",
                plural(saved, "process", "processes"),
                processes,
            )
        return states
    if isinstance(ranks, list):
        return {**ranks[rank], **({"sampler": states["sampler"]} if "sampler" in states else {})}
    return states


def save_training_checkpoint(
    folder: Path,
    *,
    model: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    state: TrainingState,
    epoch_sampler_state: torch.Tensor | None,
    scaler: Any = None,
    tokenizer: Any = None,
    base: str = "",
    rank_rngs: list[dict[str, Any]] | None = None,
) -> None:
    """Fill ``folder`` with everything a resumed run needs (called inside :func:`write_checkpoint`), and the
    model's config and ``tokenizer``, so that it also loads as a model folder (a LoRA model: its adapter on
    ``base``).

    ``epoch_sampler_state`` is the shuffling generator's state at the start of the current epoch: the resumed
    run rewinds to it and skips the batches already done, so it sees the same batches in the same order.
    ``rank_rngs``: every process's ``rng_states()`` in rank order, for a run of many processes.
    """
    import torch
    from safetensors.torch import save_model

    if adapters.is_adapter_model(model):
        adapters.save_adapter(model, folder, base)  # the frozen base is not saved again: it reloads as it was
    else:
        save_model(model, str(folder / MODEL_FILE))
        config = getattr(model, "config", None)
        if config is not None:
            # What save_pretrained records and a model folder has: the head's class, which predict reads the
            # task from (the loaded config still names the base model's class, BertModel for MiniLM).
            config = copy.copy(config)
            config.architectures = [type(model).__name__]
            config.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    torch.save(optimizer.state_dict(), folder / OPTIMIZER_FILE)
    torch.save(scheduler.state_dict(), folder / SCHEDULER_FILE)
    if scaler is not None:  # fp16 loss scale: part of the trajectory
        torch.save(scaler.state_dict(), folder / SCALER_FILE)
    rng = rng_states()
    if epoch_sampler_state is not None:
        rng["sampler"] = epoch_sampler_state
    if rank_rngs is not None:
        rng["ranks"] = rank_rngs
    torch.save(rng, folder / RNG_FILE)
    (folder / STATE_FILE).write_text(json.dumps(asdict(state), indent=2) + "\n", encoding="utf-8")


def _safe_torch_load(path: Path) -> Any:
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise CheckpointError(
            f"checkpoint file {path} cannot be loaded safely ({first}); delete that checkpoint folder to resume "
            "from an older one"
        ) from None


def weights_file(model: torch.nn.Module) -> str:
    """The file that holds what a checkpoint of ``model`` trains: its weights, or its adapter's."""
    return adapters.ADAPTER_WEIGHTS if adapters.is_adapter_model(model) else MODEL_FILE


def load_weights(folder: Path, model: torch.nn.Module) -> None:
    """Load a checkpoint's weights into ``model`` (no code runs: safetensors)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    if adapters.is_adapter_model(model):
        adapters.load_adapter_weights(folder, model)
        return
    try:
        missing, unexpected = load_model(model, str(folder / MODEL_FILE), strict=False)
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {folder}: {MODEL_FILE} does not fit this model ({exc})") from None
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {folder} was written for another model ({len(missing)} missing, "
            f"{len(unexpected)} unexpected weights); resume only with the run's own config.yaml"
        )


def load_training_checkpoint(
    folder: Path,
    *,
    model: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    scaler: Any = None,
) -> tuple[TrainingState, dict[str, Any]]:
    """Load weights, optimizer and scheduler into the given objects; return the counters and the RNG states
    (restore those last, right before training goes on)."""
    for name in (STATE_FILE, weights_file(model), OPTIMIZER_FILE, SCHEDULER_FILE, RNG_FILE):
        if not (folder / name).is_file():
            raise CheckpointError(f"checkpoint {folder} lacks {name}; delete it to resume from an older one")
    try:
        raw = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
        state = TrainingState(**raw)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {folder}: {STATE_FILE} is unreadable ({exc})") from None
    load_weights(folder, model)
    optimizer.load_state_dict(_safe_torch_load(folder / OPTIMIZER_FILE))
    scheduler.load_state_dict(_safe_torch_load(folder / SCHEDULER_FILE))
    if scaler is not None and (folder / SCALER_FILE).is_file():
        scaler.load_state_dict(_safe_torch_load(folder / SCALER_FILE))
    rng = _safe_torch_load(folder / RNG_FILE)
    if not isinstance(rng, dict):
        raise CheckpointError(f"checkpoint {folder}: {RNG_FILE} holds no RNG states; delete the checkpoint")
    return state, rng
