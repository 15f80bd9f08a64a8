"""Any torchvision ImageFolder tree (one sub-directory per class) as an ImageSet."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from torchvision.datasets import ImageFolder

from dsc.data.base import DataError, ImageSet
from dsc.data.images import read_images


def load(root: str | os.PathLike, size: int = 128) -> ImageSet:
    """Images under ``root/<class>/...``; kept grey (1 channel) when every image is grey."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"folder dataset {root} is not an existing directory; pass folder:PATH with one sub-directory per class")
    try:
        # torchvision does the class discovery and file filtering; we read pixels ourselves
        # so that a corrupt file is reported by name instead of failing mid-training.
        tree = ImageFolder(str(root), loader=lambda p: p)
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"folder dataset {root}: {exc}; expected {root}/<class>/<image files>") from None
    if len(tree.classes) < 2:
        raise DataError(f"folder dataset {root} has {len(tree.classes)} class ({tree.classes}); a classification task needs at least 2")
    paths = [Path(p) for p, _ in tree.samples]
    images = read_images(paths, size, grey=False)
    if (images[:, 0] == images[:, 1]).all() and (images[:, 1] == images[:, 2]).all():
        images = np.ascontiguousarray(images[:, :1])
    return ImageSet(
        images=images,
        labels=np.array(tree.targets, dtype=np.int64),
        classes=tuple(tree.classes),
        name=root.name or "folder",
        source=str(root.resolve()),
    )
