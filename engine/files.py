"""Files and folders written whole, by one durability rule.

Write to a temporary name in the same folder, flush and fsync it, rename it to its final name, then fsync the
folder, so that a crash at any moment leaves either the old content or the new, never a mix, and the rename
itself survives a power loss.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import tempfile
from pathlib import Path


@functools.cache
def _umask() -> int:
    """The process's umask (read once: setting it to read it back is not thread-safe, so never again)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_temp_dir(parent: Path, prefix: str) -> Path:
    """A fresh folder in ``parent`` with the mode a ``mkdir`` would give: ``mkdtemp`` makes it private (0700),
    and a model or run folder is meant to be read by others as the umask allows."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    tmp.chmod(0o777 & ~_umask())
    return tmp


def not_a_folder(path: Path) -> str | None:
    """Why no folder can be at ``path``: "is a file", or "is under F, which is a file"; None when nothing on the
    way is a file (mkdir would say "File exists" or "Not a directory", which names neither)."""
    if path.exists() and not path.is_dir():
        return "is a file"
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    return None if blocker is None else f"is under {blocker}, which is a file"


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a folder's entries, to disk."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:  # some platforms cannot open folders; their files are synced already
        return
    try:
        os.fsync(fd)
    except OSError:  # a folder that does not support fsync; nothing more can be done for it
        pass
    finally:
        os.close(fd)


def write_synced(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` and fsync it; not atomic alone (for a file in a folder renamed into place)."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def seal_tree(folder: Path) -> None:
    """Ready a folder written whole to be renamed into place, in one walk: each file gets the read bits the umask
    allows (safetensors writes weights 0600, and a model or checkpoint folder is meant to be read by others; other
    bits stay, and a file system without modes keeps its own), and every file and folder is fsynced, ``folder``
    too."""
    readable = 0o444 & ~_umask()
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            mode = path.stat().st_mode & 0o7777
            if mode | readable != mode:
                with contextlib.suppress(PermissionError):
                    path.chmod(mode | readable)
        fsync_path(path)
    fsync_path(folder)


def rename_durably(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` (replacing a file there) and fsync the folder that holds the new name."""
    os.replace(src, dst)
    fsync_path(dst.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole: a temporary file in the same folder, synced, then renamed over it. A link
    is written through (the file it names is replaced, the link stays); a device or a pipe is refused."""
    path = Path(os.path.realpath(path))
    if path.exists() and not path.is_file():
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # mkstemp makes the file private (0600): keep the old file's mode, else the umask's
        mode = path.stat().st_mode & 0o777
    except OSError:
        mode = 0o666 & ~_umask()
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        try:
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        write_synced(tmp, text)
        rename_durably(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
