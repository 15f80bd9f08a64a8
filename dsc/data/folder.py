"""Any torchvision ImageFolder tree (one sub-directory per class) as an ImageSet."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torchvision.datasets import ImageFolder

from dsc.data.base import DataError, ImageSet
from dsc.data.images import read_images


def load(
    root: str | os.PathLike, size: int = 128, classes: int | Sequence[str] | None = None, seed: int = 0
) -> ImageSet:
    """Images under ``root/<class>/...``; kept grey (1 channel) when every image is grey.

    ``classes``: None for every class, a count drawn at random by ``seed``, or class names;
    the kept classes are relabelled 0..k-1 in sorted order.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"folder dataset {root} is not an existing directory; pass folder:PATH with one sub-directory per class"
        )
    try:
        # torchvision does the class discovery and file filtering; we read pixels ourselves
        # so that a corrupt file is reported by name instead of failing mid-training.
        tree = ImageFolder(str(root), loader=lambda p: p)
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"folder dataset {root}: {exc}; expected {root}/<class>/<image files>") from None
    if len(tree.classes) < 2:
        raise DataError(
            f"folder dataset {root} has {len(tree.classes)} class ({tree.classes}); "
            "a classification task needs at least 2"
        )
    names = _choose(tree.classes, classes, seed, root)
    keep = {tree.class_to_idx[name]: label for label, name in enumerate(names)}
    samples = [(Path(p), keep[t]) for p, t in tree.samples if t in keep]
    paths = [p for p, _ in samples]
    images = read_images(paths, size, grey=False)
    if (images[:, 0] == images[:, 1]).all() and (images[:, 1] == images[:, 2]).all():
        images = np.ascontiguousarray(images[:, :1])
    return ImageSet(
        images=images,
        labels=np.array([label for _, label in samples], dtype=np.int64),
        classes=tuple(names),
        name=root.name or "folder",
        source=str(root.resolve()),
    )


def _choose(available: list[str], classes: int | Sequence[str] | None, seed: int, root: Path) -> list[str]:
    """The kept class names, sorted: all, ``classes`` of them drawn by ``seed``, or those named."""
    if classes is None:
        return list(available)
    if isinstance(classes, int):
        if classes > len(available):
            raise DataError(f"--pick-classes {classes}: folder dataset {root} has {len(available)} classes")
        drawn = np.random.default_rng(seed).choice(len(available), size=classes, replace=False)
        return [available[i] for i in sorted(drawn)]
    missing = [name for name in classes if name not in available]
    if missing:
        shown = ", ".join(available[:10]) + (" ..." if len(available) > 10 else "")
        raise DataError(f"--pick-classes: no class {missing[0]!r} in folder dataset {root} (it has: {shown})")
    return sorted(classes)
