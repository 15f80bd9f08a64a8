"""How the hidden representation and the learning curve change over epochs.

Three views of the paper's "PCA Timeline" (Figures 9, 10, 13, 14), all pure NumPy over the
activations of a fixed probe set captured at each snapshot epoch:

- `pca_timeline`: a PCA of each epoch's activations (Fig 13: variance of the leading PCs by
  epoch; Fig 9/10/14: the probe set in its 2-D PCA plane, signs aligned for an animation).
- `class_emergence`: the first epoch at which each class separates from the others (Fig 14).
- `change_point`: the epoch where the latent phase of a learning curve ends.

``epochs`` arguments give the epoch number of each snapshot (snapshots may be taken every k
epochs); results are in those units. They default to ``0, 1, ..., E-1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import median_abs_deviation
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_samples

Activations = np.ndarray | Sequence[np.ndarray]

CHANGE_POINT_METHODS = ("hinge",)


@dataclass(frozen=True)
class PCATimeline:
    """PCA of the probe activations, fitted separately at each epoch.

    Attributes
    ----------
    explained_variance : array, shape (E, k)
        Variance (ddof=1) along each leading PC; 0 for PCs beyond the data's rank (p < k, n <= k).
    explained_variance_ratio : array, shape (E, k)
        ``explained_variance / total_variance``; NaN at epochs where the layer is constant.
    total_variance : array, shape (E,)
        Sum of the per-unit variances (ddof=1); 0 for a constant layer.
    scores : array, shape (E, n, max(k, 2))
        Scores on the leading PCs, each sign-flipped where it anticorrelates with the previous
        epoch's, so that an animation does not mirror at random; zeros for a constant layer.
    """

    explained_variance: np.ndarray
    explained_variance_ratio: np.ndarray
    total_variance: np.ndarray
    scores: np.ndarray

    @property
    def projections(self) -> np.ndarray:
        """Sign-aligned scores on PC1 and PC2, shape (E, n, 2): the 2-D picture of Fig 9/10/14."""
        return self.scores[:, :, :2]


@dataclass(frozen=True)
class Emergence:
    """When each class separates from the others in the representation.

    Attributes
    ----------
    classes : int array, shape (C,)
        The class labels, in column order of ``scores``.
    scores : array, shape (E, C)
        Mean silhouette of each class's probe points at each epoch (see `class_emergence`).
    epochs : dict
        Class label -> epoch of emergence (in snapshot-epoch units), or None if never.
    order : list of int
        Class labels by emergence epoch (ties by label); classes that never emerge come last.
    snapshot_epochs : int array, shape (E,)
        The epoch of each row of ``scores``.
    threshold, patience :
        The criterion used.
    """

    classes: np.ndarray
    scores: np.ndarray
    epochs: dict[int, int | None]
    order: list[int]
    snapshot_epochs: np.ndarray
    threshold: float
    patience: int


@dataclass(frozen=True)
class ChangePoint:
    """The end of the latent phase of a learning curve.

    Attributes
    ----------
    epoch : int or None
        Last epoch of the latent phase (rounded onset); None for a curve that never rises.
    onset : float
        The onset before rounding (NaN when ``epoch`` is None).
    rise : float
        Late level minus early level, in the curve's units (sign-flipped for ``decreasing``).
    noise : float
        Robust estimate of the epoch-to-epoch noise standard deviation.
    method : str
    """

    epoch: int | None
    onset: float
    rise: float
    noise: float
    method: str


def _as_matrix(x: np.ndarray) -> np.ndarray:
    """(n, ...) activations -> float64 (n, p); conv maps are flattened per probe image."""
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(len(x), -1)


def _pca(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Scores (n, k), variances (k,) and total variance of one epoch; zero-padded beyond rank."""
    n, p = x.shape
    total = float(x.var(axis=0, ddof=1).sum()) if n > 1 else 0.0
    scores, var = np.zeros((n, k)), np.zeros(k)
    # Dead ReLUs make whole layers constant early on; PCA of them is undefined, not an error.
    if total <= 1e-20 * max(1.0, float(np.mean(x * x))):
        return scores, var, 0.0
    m = min(k, n, p)
    pca = PCA(n_components=m, random_state=0)  # fixed seed: randomized SVD on large layers
    scores[:, :m] = pca.fit_transform(x)
    var[:m] = pca.explained_variance_
    return scores, var, total


def _align_signs(proj: np.ndarray) -> np.ndarray:
    """Flip each column of proj (E, n, d) where it anticorrelates with its last nonzero epoch."""
    proj = proj.copy()
    ref = proj[0].copy()
    for e in range(1, len(proj)):
        dots = np.einsum("nd,nd->d", proj[e], ref)
        proj[e, :, dots < 0] *= -1
        alive = np.any(proj[e] != 0, axis=0)  # a constant epoch gives no reference
        ref[:, alive] = proj[e][:, alive]
    return proj


def pca_timeline(acts_by_epoch: Activations, n_components: int = 10) -> PCATimeline:
    """PCA of the probe activations at each epoch separately.

    Parameters
    ----------
    acts_by_epoch : sequence of E arrays, shape (n, p) (or (n, ...), flattened), or (E, n, p)
        Activations of the same n probe images at each snapshot, any float dtype.
    n_components : int, default 10
        Number k of leading PCs whose variance is reported.

    Returns
    -------
    PCATimeline
        Variances (E, k), ratios (E, k), totals (E,), sign-aligned scores (E, n, max(k, 2))
        and their first two columns as ``projections`` (E, n, 2).
    """
    if not isinstance(n_components, (int, np.integer)) or n_components < 1:
        raise ValueError(f"n_components must be an int >= 1, got {n_components!r}")
    fits = [_pca(_as_matrix(x), max(n_components, 2)) for x in acts_by_epoch]
    if not fits:
        raise ValueError("acts_by_epoch is empty: need at least one epoch")
    var = np.stack([f[1][:n_components] for f in fits])  # (E, k)
    total = np.array([f[2] for f in fits])  # (E,)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(total[:, None] > 0, var / total[:, None], np.nan)
    scores = _align_signs(np.stack([f[0] for f in fits]))  # (E, n, max(k, 2))
    return PCATimeline(var, ratio, total, scores)


def _epoch_numbers(epochs: Sequence[int] | np.ndarray | None, length: int) -> np.ndarray:
    if epochs is None:
        return np.arange(length)
    numbers = np.asarray(epochs)
    if numbers.shape != (length,):
        raise ValueError(f"epochs has shape {numbers.shape}, expected ({length},): one per snapshot")
    return numbers


def _first_sustained(above: np.ndarray, patience: int) -> np.ndarray:
    """Per column of above (E, C), the first row starting `patience` True rows in a row, or -1."""
    if len(above) < patience:
        return np.full(above.shape[1], -1)
    runs = np.lib.stride_tricks.sliding_window_view(above, patience, axis=0).all(axis=-1)
    return np.where(runs.any(axis=0), runs.argmax(axis=0), -1)


def _pc_scores(acts: Activations | PCATimeline, k: int):
    """Yield (PC scores (n, k), total variance) per epoch, reusing a PCATimeline's PCA."""
    if not isinstance(acts, PCATimeline):
        yield from ((z, total) for z, _, total in (_pca(_as_matrix(x), k) for x in acts))
        return
    if acts.scores.shape[2] < k:
        raise ValueError(f"the PCATimeline has {acts.scores.shape[2]} PCs, fewer than n_components={k}")
    yield from zip(acts.scores[:, :, :k], acts.total_variance)


def class_emergence(
    acts_by_epoch: Activations | PCATimeline,
    labels: np.ndarray,
    epochs: Sequence[int] | None = None,
    threshold: float = 0.25,
    patience: int = 3,
    n_components: int = 10,
) -> Emergence:
    """First epoch at which each class forms a cluster of its own in the representation.

    Criterion: at each epoch the activations are projected on their ``n_components`` leading
    PCs (the space in which the paper looks at the clusters), and each class is scored by the
    mean silhouette of its points under the true labels (`sklearn.metrics.silhouette_samples`:
    for a point, ``(b - a) / max(a, b)`` with a the mean distance to its own class and b the
    mean distance to the *nearest* other class). The silhouette measures cluster geometry, not
    linear separability (with p > n, a linear probe separates classes even at random init), and
    the nearest-class b means a class counts as emerged only once it is apart from every other
    class, while classes still mixed together stay near 0 even after another class has left
    (once all but one class have left, the last one is alone too, and emerges with them).
    A class emerges at the first snapshot whose score is >= ``threshold`` for ``patience``
    consecutive snapshots; the default 0.25 is Kaufman & Rousseeuw's boundary between "no
    substantial structure" and "weak structure". A constant layer scores 0 (a = b = 0).
    Cost per epoch: one PCA and one silhouette, O(n^2 k) (their share of `dsc analyze` is in
    ``bench/analyze.py``'s row on the benchmark page, docs/benchmarks.md).

    Parameters
    ----------
    acts_by_epoch : sequence of E arrays, shape (n, p), or (E, n, p), or a PCATimeline
        Activations of the same n probe images at each snapshot; passing the `pca_timeline`
        of them instead reuses its PCA (half the cost when both are wanted).
    labels : int array, shape (n,)
        Class of each probe image; at least two classes.
    epochs : sequence of int, shape (E,), optional
        Epoch number of each snapshot; default 0..E-1.
    threshold : float in (-1, 1), default 0.25
    patience : int >= 1, default 3
        Consecutive snapshots (not epochs) the score must stay at or above the threshold.
    n_components : int >= 1, default 10

    Returns
    -------
    Emergence
        ``scores`` (E, C), ``epochs`` {class: epoch or None}, ``order`` (labels by emergence).
    """
    labels = np.asarray(labels)
    classes, inverse = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"need at least 2 classes in labels, got {classes.tolist()}")
    if not -1 < threshold < 1:
        raise ValueError(f"threshold must be in (-1, 1) (a silhouette), got {threshold}")
    if not isinstance(patience, (int, np.integer)) or patience < 1:
        raise ValueError(f"patience must be an int >= 1, got {patience!r}")
    counts = np.bincount(inverse, minlength=len(classes))
    rows = []
    for z, total in _pc_scores(acts_by_epoch, n_components):
        if len(z) != len(labels):
            raise ValueError(f"activations have {len(z)} rows for {len(labels)} labels")
        s = silhouette_samples(z, inverse) if total > 0 else np.zeros(len(z))
        rows.append(np.bincount(inverse, weights=s, minlength=len(classes)) / counts)
    if not rows:
        raise ValueError("acts_by_epoch is empty: need at least one epoch")
    scores = np.array(rows)  # (E, C)
    snap = _epoch_numbers(epochs, len(scores))
    first = _first_sustained(scores >= threshold, patience)
    when = {int(c): (int(snap[i]) if i >= 0 else None) for c, i in zip(classes, first)}
    order = sorted(when, key=lambda c: (when[c] is None, when[c] or 0, c))
    return Emergence(classes, scores, when, order, snap, float(threshold), int(patience))


def _noise_sd(y: np.ndarray) -> float:
    """Epoch-to-epoch noise sd from the MAD of first differences (robust to a short rise)."""
    # A difference of two independent noisy points has sd sqrt(2) sigma.
    return float(median_abs_deviation(np.diff(y), scale="normal") / np.sqrt(2))


def _hinge_onset(t: np.ndarray, y: np.ndarray, floor: float, top: float) -> float:
    """Least-squares knot tau of y ~ a + b * max(0, t - tau) on the curve up to its half-rise.

    Cutting at the last point below the half-rise keeps the saturating top from bending the
    linear piece, and is immune to noise spikes in the flat part (unlike the first crossing).
    """
    below = np.flatnonzero(y < floor + 0.5 * (top - floor))
    cut = max(below[-1] + 1 if len(below) else 0, 2)
    t, y = t[: cut + 1], y[: cut + 1]
    taus = np.linspace(t[0], t[-2], 20 * (len(t) - 2) + 1)  # 20 candidates per interval
    h = np.maximum(0.0, t[None, :] - taus[:, None])  # (m, n) hinge regressor per candidate
    n, sh, shh, shy = len(t), h.sum(1), (h * h).sum(1), h @ y
    b = (n * shy - sh * y.sum()) / (n * shh - sh**2)  # closed-form 2-parameter least squares
    a = (y.sum() - b * sh) / n
    rss = ((a[:, None] + b[:, None] * h - y) ** 2).sum(1)
    return float(taus[np.argmin(rss)])


def change_point(
    y: np.ndarray,
    epochs: Sequence[int] | np.ndarray | None = None,
    method: str = "hinge",
    decreasing: bool = False,
    min_rise: float | None = None,
) -> ChangePoint:
    """Epoch at which the latent (flat) phase of a learning curve ends.

    Notes
    -----
    ``"hinge"`` (default): fit ``y ~ a + b * max(0, t - tau)`` (a flat floor, then a straight
    rise, continuous at tau) by least squares to the curve up to the point where it last
    crosses half its total rise, scanning tau on a grid of 20 steps per epoch interval. tau is
    the onset: where the extrapolated early rise leaves the floor. It uses every latent-phase
    point to place the floor, so it is stable under noise; for a logistic rise of centre c and
    scale s it gives about c - 2.5 * s.

    A curve whose rise (median of the last tenth minus median of the first tenth, at least 3
    points each) is not above ``min_rise`` is flat: epoch None.

    Parameters
    ----------
    y : array, shape (E,)
        Learning curve (accuracy, or loss with ``decreasing=True``); non-finite points dropped.
    epochs : sequence of int, shape (E,), optional
        Epoch number of each point; default 0..E-1.
    method : {"hinge"}
    decreasing : bool
        The curve falls as learning proceeds (a loss); it is negated before the search.
    min_rise : float, optional
        Smallest rise that counts, in the curve's units; default 4 noise sd (and > 0).

    Returns
    -------
    ChangePoint
        ``epoch`` (int, or None for a flat curve), the unrounded ``onset``, ``rise``, ``noise``.
    """
    if method not in CHANGE_POINT_METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {CHANGE_POINT_METHODS}")
    y = np.asarray(y, dtype=np.float64)
    t = _epoch_numbers(epochs, len(y)).astype(np.float64)
    ok = np.isfinite(y)
    t, y = t[ok], (-y[ok] if decreasing else y[ok])
    if len(y) < 5:
        return ChangePoint(None, np.nan, np.nan, np.nan, method)
    m = max(3, len(y) // 10)
    floor, top = float(np.median(y[:m])), float(np.median(y[-m:]))
    noise, rise = _noise_sd(y), top - floor
    if not rise > (4 * noise if min_rise is None else min_rise) or rise <= 1e-12 * np.abs(y).max():
        return ChangePoint(None, np.nan, rise, noise, method)
    onset = _hinge_onset(t, y, floor, top)
    return ChangePoint(None if np.isnan(onset) else round(onset), onset, rise, noise, method)
