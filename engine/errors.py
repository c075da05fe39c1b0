"""Errors a user can cause and fix. Anything else is an internal bug and keeps its traceback."""

import errno
import os
import re
import traceback

#: errno values that mean the disk or the folder refuses a write: the user's to fix, not a bug.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


#: How a library outside Python names the system error that stopped it: safetensors' writer raises its own
#: SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)").
_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def disk_fix(exc: OSError) -> str:
    """What frees the way for a write that failed with ``exc``: "free disk space" only where the disk is full."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free disk space or pick another folder"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "fix its permissions or pick another folder"
    return "pick another folder"


def os_error_of(exc: BaseException) -> OSError | None:
    """The system error behind ``exc``: itself when it is an OSError, else the one its message names, if any."""
    if isinstance(exc, OSError):
        return exc
    found = _OS_ERROR.search(str(exc))
    if found is None:
        return None
    code = int(found.group(1))
    return OSError(code, os.strerror(code))


class UserError(Exception):
    """A mistake in the config, the data, the model choice or the text; its message says how to fix it."""


class ConfigError(UserError):
    """A config value is wrong; `path` is the dotted key (``train.learning_rate``)."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


class DataError(UserError):
    """The dataset cannot be read or does not fit the config."""


class ModelError(UserError):
    """The model or tokenizer cannot be loaded or does not fit the task."""


class PredictError(UserError):
    """The text or model given to a prediction cannot be used."""


class CheckpointError(UserError):
    """A checkpoint cannot be written, or read back for a resume."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the message says at which step and what to change."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step


class OutOfMemory(UserError):
    """The accelerator ran out of memory; the message names the settings that shrink a step."""


class RunFolderError(UserError):
    """A run folder cannot be created, written, or resumed."""


class AmbiguousRunError(RunFolderError):
    """A run name given by a prefix that several runs share."""


def describe_failure(exc: BaseException) -> tuple[str, str | None]:
    """(message, traceback): a user's mistake gives its one line and no traceback; anything else is a bug,
    shown as a short line with its traceback kept for the log."""
    if isinstance(exc, UserError):
        return str(exc), None
    return f"internal error: {type(exc).__name__}: {exc}", "".join(traceback.format_exception(exc))
