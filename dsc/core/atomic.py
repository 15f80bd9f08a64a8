"""Writing a file so that a reader sees the old contents or the new, never half of the new."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomic(
    path: str | os.PathLike, write: Callable[[BinaryIO], object], *, mode: int | None = None, durable: bool = True
) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it to ``path``.

    The temporary file lives in the same folder (a rename within one file system is atomic)
    under a hidden name ending in ``.tmp``, so that globs for the finished files skip it; it
    is removed when ``write`` or the rename fails, whatever the exception.

    Parameters
    ----------
    path : the file to create or replace; its folder must exist.
    write : receives the open binary file and writes the whole contents.
    mode : permission bits of the finished file; None keeps the temporary file's owner-only
        0o600.
    durable : flush the contents to the disk before the rename, so that after a crash the
        name never points at data that was not yet written. A file that is checked on reading
        and rebuilt when torn (a cache) can skip the cost.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
