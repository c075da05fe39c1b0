"""Files written whole: a reader sees the old content or the new one, never a part, and no temporary is left."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.files import atomic_write_text


def test_atomic_write_replaces_the_whole_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "summary.json"
    atomic_write_text(path, "old\n")
    atomic_write_text(path, "new\n")
    assert path.read_text() == "new\n"
    assert [p.name for p in path.parent.iterdir()] == ["summary.json"]


def test_a_failed_rename_keeps_the_old_file_and_removes_the_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("old\n")

    def full_disk(_src: object, _dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError):
        atomic_write_text(path, "new\n")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_files_and_folders_written_whole_get_the_umask_mode_not_a_private_one(tmp_path: Path) -> None:
    from engine.files import _umask
    from engine.runs import save_dir_atomically

    preset = tmp_path / "preset.yaml"
    atomic_write_text(preset, "a: 1\n")
    assert preset.stat().st_mode & 0o777 == 0o666 & ~_umask()
    preset.chmod(0o640)
    atomic_write_text(preset, "a: 2\n")
    assert preset.stat().st_mode & 0o777 == 0o640, "a file written again keeps its mode"

    model = tmp_path / "model"
    save_dir_atomically(model, lambda tmp: (tmp / "config.json").write_text("{}"))
    assert model.stat().st_mode & 0o777 == 0o777 & ~_umask()


@pytest.mark.parametrize("folder", ["model", "checkpoint"])
def test_weights_that_safetensors_writes_private_get_the_umask_mode(tmp_path: Path, folder: str) -> None:
    """safetensors writes its file 0600: a teammate on a shared server could not load an exported model."""
    import torch
    from safetensors.torch import save_file

    from engine.checkpoint import write_checkpoint
    from engine.files import _umask
    from engine.runs import save_dir_atomically

    def write(tmp: Path) -> None:
        save_file({"w": torch.zeros(2)}, str(tmp / "model.safetensors"))
        assert (tmp / "model.safetensors").stat().st_mode & 0o777 == 0o600  # what the test is about

    if folder == "model":
        save_dir_atomically(tmp_path / "model", write)
        written = tmp_path / "model" / "model.safetensors"
    else:
        written = write_checkpoint(tmp_path / "checkpoints", 3, write) / "model.safetensors"
    assert written.stat().st_mode & 0o777 == 0o666 & ~_umask()


def test_atomic_write_through_a_link_replaces_the_file_it_names_and_keeps_the_link(tmp_path: Path) -> None:
    real = tmp_path / "presets" / "real.yaml"
    real.parent.mkdir()
    real.write_text("a: 1\n")
    link = tmp_path / "link.yaml"
    link.symlink_to(real)
    atomic_write_text(link, "a: 2\n")
    assert link.is_symlink() and real.read_text() == "a: 2\n"
    assert sorted(p.name for p in real.parent.iterdir()) == ["real.yaml"]


def test_atomic_write_refuses_a_pipe_and_leaves_it_a_pipe(tmp_path: Path) -> None:
    import os
    import stat

    pipe = tmp_path / "pipe.yaml"
    os.mkfifo(pipe)
    with pytest.raises(OSError, match="not a regular file"):
        atomic_write_text(pipe, "a: 1\n")
    assert stat.S_ISFIFO(pipe.stat().st_mode) and [p.name for p in tmp_path.iterdir()] == ["pipe.yaml"]
