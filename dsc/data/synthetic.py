"""A stand-in for Yale Face Database B: Lambertian faces under the 64 Yale B lights and 9 poses.

Each identity (a height field with an albedo map, :mod:`dsc.data.faces`) is rendered in every
pose under every light, plus Gaussian pixel noise. Illumination dominates the pixel variance;
identity is a smaller signal, as in the real data. :func:`load` caches the generated set.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from dsc.core.atomic import write_atomic
from dsc.data import cache
from dsc.data.base import DataError, ImageSet
from dsc.data.faces import (
    face_albedo,
    face_height,
    grid,
    render_face,
    sample_identities,
)
from dsc.data.lights import YALE_LIGHTS, YALE_POSES, light_vector

__all__ = ["DEFAULT_NOISE", "GENERATOR_VERSION", "generate", "load", "render_face"]

GENERATOR_VERSION: int = 2  # bump whenever the images change: it keys the cache
DEFAULT_NOISE: float = 0.02  # pixel noise std, in units of full scale (0.02 * 255 ~ 5 grey levels)


def _check(n_identities: int, size: int, seed: int, noise: float) -> None:
    """Raise DataError for arguments outside their range."""
    if not isinstance(n_identities, (int, np.integer)) or n_identities < 2:
        raise DataError(
            f"n_identities must be an integer >= 2, got {n_identities!r}; "
            "the task needs at least two classes (the paper uses 5)"
        )
    if not isinstance(size, (int, np.integer)) or size < 16:
        raise DataError(
            f"size must be an integer >= 16, got {size!r}; "
            "faces are unrecognisable below 16 pixels (the paper uses 128)"
        )
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"seed must be an integer >= 0, got {seed!r}; it seeds np.random.default_rng")
    if not isinstance(noise, (int, float, np.number)) or not np.isfinite(noise) or noise < 0:
        raise DataError(
            f"noise must be a finite number >= 0, got {noise!r}; "
            f"use 0 for clean images or about {DEFAULT_NOISE} for sensor-like noise"
        )


def _source(n_identities: int, size: int, seed: int, noise: float) -> str:
    return f"synthetic(n_identities={n_identities},size={size},seed={seed},noise={noise},v={GENERATOR_VERSION})"


def generate(n_identities: int = 5, size: int = 128, seed: int = 0, noise: float = DEFAULT_NOISE) -> ImageSet:
    """Generate the dense-sample face task: identities x 9 poses x 64 Yale B lights.

    Parameters
    ----------
    n_identities : number of people (classes), >= 2.
    size : image side in pixels, >= 16.
    seed : seed of ``np.random.default_rng``; the same seed gives the same bytes.
    noise : std of the Gaussian pixel noise, in units of full scale (1.0 = 255 grey levels).

    Returns
    -------
    ImageSet with images uint8 (n_identities * 576, 1, size, size), labels = identity, classes
    ("face1", ...), meta columns "identity", "pose" (0..8), "azimuth", "elevation" (degrees),
    ordered identity-major, then pose, then light (in ``YALE_LIGHTS`` order).

    Examples
    --------
    >>> data = generate(n_identities=2, size=32)
    >>> data.images.shape
    (1152, 1, 32, 32)
    """
    _check(n_identities, size, seed, noise)
    rng = np.random.default_rng(seed)
    people = sample_identities(rng, n_identities)
    x, y = grid(size)
    lights = np.array([light_vector(az, el) for az, el in YALE_LIGHTS])  # (64, 3)
    n_l, n_p = len(YALE_LIGHTS), len(YALE_POSES)
    images = np.empty((n_identities, n_p, n_l, 1, size, size), np.uint8)
    for i, person in enumerate(people):
        height, inside = face_height(person, x, y)
        albedo = face_albedo(person, x, y)
        for j, (yaw, pitch) in enumerate(YALE_POSES):
            img = render_face(height, albedo, inside, yaw, pitch, lights)  # (64, S, S)
            img += noise * rng.standard_normal(img.shape, dtype=np.float32)
            images[i, j, :, 0] = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
    identity, pose, light = np.meshgrid(np.arange(n_identities), np.arange(n_p), np.arange(n_l), indexing="ij")
    az, el = np.array(YALE_LIGHTS).T
    meta = {
        "identity": identity.ravel().astype(np.int64),
        "pose": pose.ravel().astype(np.int64),
        "azimuth": az[light.ravel()].astype(np.int64),
        "elevation": el[light.ravel()].astype(np.int64),
    }
    return ImageSet(
        images=images.reshape(-1, 1, size, size),
        labels=meta["identity"].copy(),
        classes=tuple(f"face{k + 1}" for k in range(n_identities)),
        meta=meta,
        name="synthetic",
        source=_source(n_identities, size, seed, noise),
    )


def _cache_path(cache_dir: Path, n_identities: int, size: int, seed: int, noise: float) -> Path:
    key = json.dumps(
        {
            "n_identities": int(n_identities),
            "size": int(size),
            "seed": int(seed),
            "noise": float(noise),
            "version": GENERATOR_VERSION,
        },
        sort_keys=True,
    )
    return cache_dir / f"synthetic-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def _read_cache(path: Path, expected_shape: tuple[int, ...]) -> ImageSet | None:
    """The cached set, or None when the file is missing, unreadable or of the wrong shape."""
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = {k[5:]: f[k] for k in f.files if k.startswith("meta_")}
            data = ImageSet(
                images=f["images"],
                labels=f["labels"],
                classes=tuple(str(c) for c in f["classes"]),
                meta=meta,
                name="synthetic",
                source=str(f["source"]),
            )
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error):
        return None
    return data if data.images.shape == expected_shape else None


def _write_cache(path: Path, data: ImageSet) -> None:
    """Write the set as a compressed ``.npz`` at ``path``, atomically, readable by every user."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {  # np.savez_compressed's keywords: arrays by entry name
        "images": data.images,
        "labels": data.labels,
        "classes": np.array(data.classes),
        "source": np.array(data.source),
        **{f"meta_{k}": v for k, v in data.meta.items()},
    }
    # A torn file fails to read and is generated again, so no fsync; the cache is shared by
    # every user of the folder, hence not mkstemp's owner-only mode.
    write_atomic(path, lambda f: np.savez_compressed(f, **arrays), mode=0o644, durable=False)


def load(
    n_identities: int = 5,
    size: int = 128,
    seed: int = 0,
    noise: float = DEFAULT_NOISE,
    cache_dir: str | Path | None = None,
) -> ImageSet:
    """``generate(...)``, cached as a compressed .npz keyed by every parameter and the version.

    Parameters
    ----------
    n_identities, size, seed, noise : as in ``generate``.
    cache_dir : folder of the cache; default :func:`dsc.data.cache.root`
        (``$DSC_CACHE_DIR``, else ``~/.cache/dsc``).

    Returns
    -------
    The same ImageSet that ``generate`` returns. A missing or corrupt cache file is (re)written.
    """
    _check(n_identities, size, seed, noise)
    path = _cache_path(cache.root(cache_dir), n_identities, size, seed, noise)
    shape = (n_identities * len(YALE_POSES) * len(YALE_LIGHTS), 1, size, size)
    data = _read_cache(path, shape) if path.exists() else None
    if data is None:
        data = generate(n_identities, size, seed, noise)
        _write_cache(path, data)
    return data
