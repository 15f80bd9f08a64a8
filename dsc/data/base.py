"""The in-memory form every data source produces, before tensors and splits."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from dsc.errors import DataError

__all__ = ["DataError", "ImageSet"]


@dataclass(frozen=True)
class ImageSet:
    """Images of a classification task, with per-image metadata.

    Attributes
    ----------
    images : uint8 array, shape (N, C, H, W), C in {1, 3}; all images one size.
    labels : int64 array, shape (N,), values in [0, len(classes)).
    classes : class names, index = label.
    meta : per-image columns, each an array of shape (N,) (e.g. pose, azimuth, elevation).
    name : short dataset name, used for registered-model names.
    source : where the data came from (a path, or a generator with its parameters).
    """

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    meta: dict[str, np.ndarray] = field(default_factory=dict)
    name: str = "data"
    source: str = ""

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[1] not in (1, 3):
            raise DataError(f"images must be (N, C, H, W) with C in 1 or 3, got {self.images.shape}")
        if self.images.dtype != np.uint8:
            raise DataError(f"images must be uint8, got {self.images.dtype}")
        if len(self.labels) != len(self.images):
            raise DataError(f"{len(self.labels)} labels for {len(self.images)} images")
        for key, col in self.meta.items():
            if len(col) != len(self.images):
                raise DataError(f"meta column {key!r} has {len(col)} rows for {len(self.images)} images")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=self.num_classes)
        return {c: int(n) for c, n in zip(self.classes, counts)}

    def digest(self) -> str:
        """SHA-256 (first 16 hex digits) of pixels, labels and class names."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.images).tobytes())
        h.update(np.ascontiguousarray(self.labels.astype(np.int64)).tobytes())
        h.update("\x00".join(self.classes).encode())
        return h.hexdigest()[:16]
