"""Where generated data sets and extracted archives are kept, decided in one place."""

from __future__ import annotations

import os
from pathlib import Path


def root(chosen: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``chosen``, else ``$DSC_CACHE_DIR``, else ``~/.cache/dsc``.

    An empty ``chosen`` or an empty variable counts as unset, so that ``DSC_CACHE_DIR=`` (or
    ``--cache-dir ""``) never means the working directory. ``~`` is expanded.

    Examples
    --------
    >>> root("/tmp/dsc-cache").name
    'dsc-cache'
    """
    picked = chosen or os.environ.get("DSC_CACHE_DIR") or Path.home() / ".cache" / "dsc"
    return Path(picked).expanduser()
