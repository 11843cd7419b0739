"""Atomic file writes: checkpoints, logs, lifted poses and images are written to a fresh temporary file beside
their path and renamed over it, so a reader, or a run killed while writing, never sees half a file."""
from __future__ import annotations

import os
import uuid
from typing import BinaryIO, Callable


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], object], *, fsync: bool = False) -> None:
    """Calls `write(handle)` on a temporary file in `path`'s folder (which must exist), then renames it to `path`;
    with `fsync`, the data reaches the disk before the rename. The temporary file is removed on any failure."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {path}: folder {folder} does not exist")
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
