"""The order the data predicts: input-output modes (Saxe, McClelland & Ganguli 2013, 2019).

In a deep linear network trained from small weights, each singular mode of the input-output
correlation ``Sigma_yx = U S V^T`` is learned as one sigmoid, at a time that scales as ``1/s_k``:
stronger modes first. Here ``Sigma_yx`` is the correlation of the centred one-hot targets with
the centred pixels, shape (C, d); its rank is at most C - 1.

Rules of record:

- a class's predicted time is the mean of ``1/s_k`` over the modes, weighted by the share of
  the class's target strength each mode carries: ``w_ck = (U_ck s_k)^2 / sum_j (U_cj s_j)^2``
  (`predicted_times`);
- the second predictor, one-vs-rest linear separability in pixel space, is the cross-validated
  mean log-likelihood of a logistic regression of "class c or not" on whitened leading pixel
  PCs, averaged over the two sides so that the small side counts as much (`separability`);
  a more separable class is predicted earlier;
- the network's own mode strengths are ``a_k(t) = u_k^T Sigma_hat(t) v_k``, ``Sigma_hat(t)`` the
  correlation of its centred outputs with the centred pixels (`network_strengths`); each
  ``a_k(t)`` is fitted by one logistic whose centre is ``t_k`` (`mode_times`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from dsc.core import lld

MIN_RANKED = 3  # a Spearman correlation of fewer points says nothing


@dataclass(frozen=True)
class Modes:
    """The SVD of an input-output correlation: ``Sigma_yx = u @ diag(strengths) @ v.T``.

    Attributes
    ----------
    strengths : (r,) singular values s_k, descending, the numerically zero ones dropped
    u : (C, r) each output's (class's) loading on each mode
    v : (d, r) each mode's input (pixel) direction
    """

    strengths: np.ndarray
    u: np.ndarray
    v: np.ndarray


def _centred(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    a = a.reshape(len(a), -1)
    return a - a.mean(axis=0)


def _flat(x: np.ndarray) -> np.ndarray:
    """(n, d) rows of ``x`` (n, ...), float32 kept (a training split of images is hundreds of MB in float64)."""
    x = np.asarray(x)
    return x.reshape(len(x), -1) if x.dtype in (np.float32, np.float64) else x.reshape(len(x), -1).astype(np.float64)


def _cross(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(C, d) ``y^T x / n`` of centred ``y`` (n, C) and ``x`` (n, d): with ``y`` centred, ``x`` need not be."""
    return (y.astype(x.dtype).T @ x).astype(np.float64) / len(x)


def io_modes(x: np.ndarray, targets: np.ndarray) -> Modes:
    """Modes of the correlation of centred ``targets`` (n, C) with centred inputs ``x`` (n, d) or (n, ...)."""
    x, y = _flat(x), _centred(targets)
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"x has {len(x)} rows and targets {len(y)}; give one row per sample, at least 2")
    u, s, vt = np.linalg.svd(_cross(y, x), full_matrices=False)
    # NumPy's matrix-rank rule at the precision of the product (float32 images: ~1e-7)
    keep = s > max(y.shape[1], x.shape[1]) * np.finfo(x.dtype).eps * max(s[0], np.finfo(float).tiny)
    return Modes(s[keep], u[:, keep], vt[keep].T)


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, C) one-hot rows of integer ``labels`` (n,) in 0..C-1."""
    return np.eye(n_classes)[np.asarray(labels, dtype=np.int64)]


def predicted_times(modes: Modes) -> np.ndarray:
    """(C,) each class's predicted learning time, in units of 1/s: ``sum_k w_ck / s_k`` (module rule)."""
    carried = (modes.u * modes.strengths) ** 2  # (C, r)
    total = carried.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (carried / total) @ (1 / modes.strengths)


def separability(
    x: np.ndarray, labels: np.ndarray, n_classes: int, n_components: int = 32, folds: int = 5, seed: int = 0
) -> np.ndarray:
    """(C,) one-vs-rest linear separability of each class in pixel space (higher: more separable).

    ``x`` (n, d) or (n, ...) pixels, ``labels`` (n,) in 0..C-1. NaN for a class with fewer than
    ``folds`` images on either side.
    """
    x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    k = min(n_components, len(x) - 1, x.shape[1])
    # two power iterations, as the probes of dsc.core.emergence: the leading PCs of a few
    # thousand images are separated well enough, at a quarter of scikit-learn's default cost
    z = PCA(k, whiten=True, svd_solver="randomized", iterated_power=2, random_state=seed).fit_transform(x)
    out = np.full(n_classes, np.nan)
    for c in range(n_classes):
        y = np.asarray(labels) == c
        if min(y.sum(), (~y).sum()) < folds:
            continue
        cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
        p = cross_val_predict(LogisticRegression(max_iter=500), z, y, cv=cv, method="predict_proba")[:, 1]
        p = np.clip(p, 1e-12, 1 - 1e-12)
        out[c] = 0.5 * (np.log(p[y]).mean() + np.log(1 - p[~y]).mean())
    return out


def network_strengths(outputs: np.ndarray, x: np.ndarray, modes: Modes) -> np.ndarray:
    """(E, r) ``a_k(t) = u_k^T Sigma_hat(t) v_k`` from outputs (E, n, C) on inputs ``x`` (n, d) or (n, ...)."""
    x = _flat(x)
    xv = x @ modes.v.astype(x.dtype)
    xv = (xv - xv.mean(axis=0)).astype(np.float64)  # (n, r): the centred inputs along each mode
    out = np.asarray(outputs, dtype=np.float64)
    out = out - out.mean(axis=1, keepdims=True)
    sigma_uv = np.einsum("enc,nr->ecr", out, xv) / xv.shape[0]  # (E, C, r): Sigma_hat(t) v_k
    return np.einsum("ecr,cr->er", sigma_uv, modes.u)


def mode_times(epochs: np.ndarray, strengths: np.ndarray) -> np.ndarray:
    """(r,) the centre of one rising logistic fitted to each column of ``strengths`` (E, r) over ``epochs`` (E,).

    NaN where the fit fails or its centre lies outside the epochs.
    """
    t = np.asarray(epochs, dtype=np.float64)
    return np.array([logistic_centre(t, a, "rising") for a in np.asarray(strengths).T])


def logistic_centre(t: np.ndarray, y: np.ndarray, direction: str = "auto") -> float:
    """The centre of one logistic fitted to ``y`` (n,) over ``t`` (n,) (`dsc.core.lld.fit`); NaN if it fails
    or lands outside ``t``'s range."""
    t, y = np.asarray(t, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(t) & np.isfinite(y)
    if keep.sum() < 5 or np.ptp(y[keep]) == 0:
        return float("nan")
    res = lld.fit(t[keep], y[keep], 1, direction)
    centre = res.components[0]["center"] if res.success and res.components else float("nan")
    return float(centre) if t[keep].min() <= centre <= t[keep].max() else float("nan")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho of two (m,) arrays over the pairs where both are finite; NaN with fewer than
    `MIN_RANKED` pairs or a constant side."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < MIN_RANKED or np.ptp(a[keep]) == 0 or np.ptp(b[keep]) == 0:
        return float("nan")
    return float(spearmanr(a[keep], b[keep]).statistic)
