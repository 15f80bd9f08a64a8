"""Small array helpers of the run analysis: metric lookups, leading units, layer distances, picks.

NumPy (and scikit-learn for the stratified split) only; the analysis job composes them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from dsc.errors import ConfigError


def series_at(steps: np.ndarray, values: np.ndarray, epochs: Iterable[int]) -> np.ndarray:
    """Values of a metric history at the given epochs (NaN where it has none).

    Parameters
    ----------
    steps, values : array, shape (n,)
        The metric's history (``tracking.metric_history``).
    epochs : iterable of int, length E

    Returns
    -------
    array, shape (E,)
    """
    lookup = dict(zip(np.asarray(steps).tolist(), np.asarray(values, dtype=float).tolist()))
    return np.array([lookup.get(int(e), np.nan) for e in epochs], dtype=float)


def leading_feature(acts: np.ndarray, labels: np.ndarray, cls: int) -> tuple[int | None, float]:
    """The unit most correlated (Pearson) with the one-vs-rest indicator of class ``cls``.

    Parameters
    ----------
    acts : array, shape (n, ...)
        Probe activations of one layer at one epoch (trailing dimensions are units).
    labels : int array, shape (n,)

    Returns
    -------
    unit, r : index of the unit (None when every unit is constant) and its correlation.
    """
    x = np.asarray(acts, dtype=np.float64).reshape(len(acts), -1)
    ind = (np.asarray(labels) == cls).astype(np.float64)
    xc, ic = x - x.mean(0), ind - ind.mean()
    den = np.sqrt((xc * xc).sum(0) * (ic * ic).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 1e-12, (xc.T @ ic) / den, np.nan)
    if not np.isfinite(r).any():
        return None, float("nan")
    unit = int(np.nanargmax(r))
    return unit, float(r[unit])


def cka_by_distance(cka: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean CKA of layer pairs (i, i + d) for each distance d = 1..L-1 (NaN pairs skipped).

    Parameters
    ----------
    cka : array, shape (L, L)

    Returns
    -------
    distance : int array, shape (L - 1,)
    mean : array, shape (L - 1,)
    """
    n = len(cka)
    d = np.arange(1, n)
    means = []
    for k in d:
        vals = np.diagonal(cka, offset=k)
        vals = vals[np.isfinite(vals)]
        means.append(vals.mean() if vals.size else np.nan)
    return d, np.array(means, dtype=float)


def near_layers_summary(cka: np.ndarray) -> dict[str, Any]:
    """Whether near layers are more alike than far ones: slope of mean CKA against distance.

    Parameters
    ----------
    cka : array, shape (L, L)

    Returns
    -------
    dict
        ``distance`` (L - 1,), ``mean_cka`` (L - 1,) (see `cka_by_distance`), ``slope`` (mean
        CKA per layer of distance; NaN under two finite points) and ``near_more_alike``
        (slope < 0; None when the slope is NaN).
    """
    d, mean = cka_by_distance(cka)
    ok = np.isfinite(mean)
    slope = float(np.polyfit(d[ok], mean[ok], 1)[0]) if ok.sum() >= 2 else float("nan")
    return {
        "distance": d,
        "mean_cka": mean,
        "slope": slope,
        "near_more_alike": bool(slope < 0) if math.isfinite(slope) else None,
    }


def pick_esd_epochs(epochs: list[int], requested: tuple[int, ...], transition: int | None) -> list[int]:
    """Snapshot epochs for the ESD histograms: the requested ones, or first, transition, last.

    ConfigError (naming the snapshots' range) when a requested epoch has no snapshot.
    """
    if requested:
        missing = [e for e in requested if e not in epochs]
        if missing:
            raise ConfigError(
                f"--esd-epochs {','.join(map(str, requested))}: no snapshot at epoch(s) "
                f"{missing}; snapshots exist at {epochs[0]}..{epochs[-1]}"
            )
        return list(dict.fromkeys(requested))
    picks = [epochs[0]]
    if transition is not None:
        picks.append(min(epochs, key=lambda e: abs(e - transition)))
    picks.append(epochs[-1])
    return list(dict.fromkeys(picks))


def stratified_subset(idx: np.ndarray, labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """At most ``size`` of ``idx``, class shares kept (sorted), seeded.

    Parameters
    ----------
    idx : int array, shape (n,)
        Indices into ``labels``.
    labels : int array, shape (N,)

    Returns
    -------
    int array, shape (min(size, n),)
    """
    if size >= len(idx):
        return np.sort(idx)
    from sklearn.model_selection import train_test_split

    counts = np.bincount(labels[idx])
    stratify = labels[idx] if size >= (counts > 0).sum() and counts[counts > 0].min() >= 2 else None
    keep, _ = train_test_split(idx, train_size=size, stratify=stratify, random_state=seed)
    return np.sort(keep)
