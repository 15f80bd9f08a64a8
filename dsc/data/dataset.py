"""One ``--data`` spec to a normalised tensor dataset with a stratified train/validation split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from dsc.data import cache
from dsc.data.base import DataError, ImageSet
from dsc.settings import DataConfig
from dsc.settings.data import parse_classes


def load_imageset(cfg: DataConfig) -> ImageSet:
    """The raw images named by ``cfg.data`` (generated, or read from a local path)."""
    cache_dir = cache.root(cfg.cache_dir)
    if cfg.kind == "synthetic":
        from dsc.data import synthetic

        return synthetic.load(n_identities=cfg.identities, size=cfg.image_size, seed=cfg.data_seed, cache_dir=cache_dir)
    if not cfg.path.exists():
        raise DataError(f"--data {cfg.data!r}: path {cfg.path} does not exist")
    if cfg.kind == "yale":
        from dsc.data import yale

        return yale.load(
            cfg.path, size=cfg.image_size, subjects=cfg.subjects, seed=cfg.data_seed, extract_dir=cache_dir / "yale"
        )
    from dsc.data import folder

    return folder.load(cfg.path, size=cfg.image_size, classes=parse_classes(cfg.pick_classes), seed=cfg.data_seed)


def split_indices(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train, val) index arrays, sorted; the same for the same labels and seed."""
    counts = np.bincount(labels)
    if len(counts) < 2 or (counts > 0).sum() < 2:
        raise DataError(f"dataset has {(counts > 0).sum()} class; a classification task needs at least 2")
    n_val = round(val_fraction * len(labels))
    if counts[counts > 0].min() < 2 or n_val < (counts > 0).sum() or len(labels) - n_val < (counts > 0).sum():
        raise DataError(
            f"dataset too small to split: class counts {counts.tolist()} with val_fraction {val_fraction}; "
            "each class needs at least 2 images and both splits one image per class"
        )
    idx = np.arange(len(labels))
    train, val = train_test_split(idx, test_size=n_val, stratify=labels, random_state=seed)
    return np.sort(train), np.sort(val)


def per_class_subset(
    labels: np.ndarray, train_idx: np.ndarray, k: int, seed: int, classes: tuple[str, ...] = ()
) -> np.ndarray:
    """``k`` training indices per class drawn by ``seed``, sorted; ``k = 0`` keeps them all.

    Each class's training indices are put in one seeded order and the first ``k`` kept, so
    the subset of a smaller ``k`` lies inside that of a larger one (nested densities).

    Parameters
    ----------
    labels : int array, shape (N,), the labels of every image.
    train_idx : int array, shape (M,), the training split's indices into ``labels``.
    k : exemplars per class (0: all).
    seed : the data seed.
    classes : class names (index = label), to name a class that has too few images.

    Returns
    -------
    int array, shape (k * n_classes,) (or (M,) for ``k = 0``), sorted indices into ``labels``.
    """
    if k == 0:
        return train_idx
    rng = np.random.default_rng(seed)
    kept = []
    for label in np.unique(labels[train_idx]):
        own = train_idx[labels[train_idx] == label]
        if k > own.size:
            name = classes[label] if label < len(classes) else str(label)
            raise DataError(f"--exemplars-per-class {k}: class {name!r} has {own.size} training images")
        kept.append(own[rng.permutation(own.size)[:k]])
    return np.sort(np.concatenate(kept))


@dataclass
class Prepared:
    """Normalised tensors and the split, ready for training.

    ``x`` is (N, C, H, W) float32 with C = 1 for grey data (replicated to 3 channels per
    batch by :meth:`batch`, which avoids holding 3 copies); ``mean``/``std`` come from the
    training split and are stored with every checkpoint.
    """

    imageset: ImageSet
    x: torch.Tensor
    y: torch.Tensor
    train_idx: np.ndarray
    val_idx: np.ndarray
    mean: float
    std: float

    @property
    def classes(self) -> tuple[str, ...]:
        return self.imageset.classes

    def batch(
        self, idx: np.ndarray | torch.Tensor, device: torch.device, channels_last: bool = False, expanded: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (B, 3, H, W) and labels (B,) for the given indices, on ``device``.

        Grey images are replicated to 3 channels; with ``expanded`` as a view (channel stride 0,
        which :mod:`dsc.nn.conv3` reads without the copy), otherwise in memory.
        """
        xb, yb = self.x[idx].to(device), self.y[idx].to(device)
        if xb.shape[1] == 1:
            xb = xb.expand(-1, 3, -1, -1)
            if expanded:
                return xb, yb
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        return xb.contiguous(memory_format=fmt), yb


def prepare(imageset: ImageSet, cfg: DataConfig) -> Prepared:
    """Split ``imageset`` and normalise its pixels with the training split's mean and std."""
    train_idx, val_idx = split_indices(imageset.labels, cfg.val_fraction, cfg.data_seed)
    train_idx = per_class_subset(imageset.labels, train_idx, cfg.exemplars_per_class, cfg.data_seed, imageset.classes)
    pixels = torch.from_numpy(imageset.images).float().div_(255.0)  # (N, C, H, W) in [0, 1]
    mean = float(pixels[train_idx].mean())
    std = float(pixels[train_idx].std())
    if not np.isfinite(std) or std < 1e-6:
        raise DataError(f"training images are constant (pixel std {std:.2g}); the dataset carries no signal")
    pixels.sub_(mean).div_(std)
    return Prepared(imageset, pixels, torch.from_numpy(imageset.labels), train_idx, val_idx, mean, std)
