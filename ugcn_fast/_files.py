"""Atomic file writes: checkpoints, logs, lifted poses and images are written to a fresh temporary file beside
their path and renamed over it, so a reader, or a run killed while writing, never sees half a file."""
from __future__ import annotations

import os
import uuid
from typing import BinaryIO, Callable


def check_output_file(name: str, path: str | os.PathLike) -> None:
    """A ValueError naming `name` (a flag or argument) unless write_atomically can write `path`: its folder exists
    and `path` is not a folder itself. For the commands, before they compute what they will write."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"{name} {path} is a folder; name a file")
    if not os.path.isdir(folder):
        raise ValueError(f"{name} {path}: its folder {folder} does not exist")


def check_output_folder(name: str, path: str | os.PathLike) -> None:
    """A ValueError naming `name` unless `path` is a folder or could be made one (its nearest existing ancestor is a
    folder)."""
    path = os.path.abspath(os.fspath(path))
    ancestor = path
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        where = "is" if ancestor == path else f"would be inside {ancestor}, which is"
        raise ValueError(f"{name} {path} {where} an existing file, not a folder; choose another {name}")


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], object], *, fsync: bool = False) -> None:
    """Calls `write(handle)` on a temporary file in `path`'s folder (which must exist), then renames it to `path`;
    with `fsync`, the data reaches the disk before the rename. The temporary file is removed on any failure."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {path}: folder {folder} does not exist")
    if os.path.isdir(path):  # (found before the data is written, not by the rename after)
        raise IsADirectoryError(f"cannot write {path}: it is a folder")
    # a fresh name opened with "x" (not mkstemp) so the file gets the usual umask permissions, not 0600
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-{os.path.basename(path)}")
    try:
        with open(tmp, "xb") as handle:
            write(handle)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
