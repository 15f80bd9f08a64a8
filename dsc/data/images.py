"""Reading image files into one uint8 array, with errors that name the bad file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from dsc.data.base import DataError


def read_image(path: Path, size: int, grey: bool) -> np.ndarray:
    """One image resized to (size, size): (1, size, size) if grey else (3, size, size), uint8."""
    try:
        with Image.open(path) as opened:
            img = opened.convert("L" if grey else "RGB")
            img = img.resize((size, size), Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except Image.DecompressionBombError as exc:  # Pillow's guard against a tiny file of huge pixels
        raise DataError(
            f"cannot read image {path}: a decompression bomb (DecompressionBombError: {exc}); "
            "remove or replace the file"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot read image {path} ({type(exc).__name__}: {exc}); remove or replace the file") from exc
    return arr[None] if grey else arr.transpose(2, 0, 1)


def read_images(paths: Sequence[Path], size: int, grey: bool) -> np.ndarray:
    """Images of any sizes, resized to one (N, C, size, size) uint8 array (C = 1 if grey else 3)."""
    out = np.empty((len(paths), 1 if grey else 3, size, size), dtype=np.uint8)
    for i, p in enumerate(paths):
        out[i] = read_image(Path(p), size, grey)
    return out
