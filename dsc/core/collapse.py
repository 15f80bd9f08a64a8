"""Neural collapse (Papyan, Han & Donoho 2020): how a layer's features collapse onto their class means.

With ``n`` features ``h_i`` (rows of ``features``), class labels ``y_i``, the global mean
``mu_G`` (of all n features), the class means ``mu_c``, ``Sigma_W = (1/n) sum_i (h_i -
mu_{y_i})(h_i - mu_{y_i})^T``, ``Sigma_B = (1/C) sum_c (mu_c - mu_G)(mu_c - mu_G)^T`` and ``M`` the
(C, d) matrix of rows ``mu_c - mu_G``:

- ``nc1`` = tr(Sigma_W Sigma_B^+) / C (within-class variability against the between-class spread);
- ``nc2_equinorm`` = std_c ||mu_c - mu_G|| / mean_c ||mu_c - mu_G|| (population std);
- ``nc2_equiangle`` = mean over ordered pairs c != c' of |cos(mu_c - mu_G, mu_c' - mu_G) + 1/(C-1)|;
- ``nc3`` = || W/||W||_F - M/||M||_F ||_F^2 (the classifier's rows against the centred means);
- ``nc4`` = the fraction of samples whose argmax of ``h W^T + b`` differs from the class of the
  nearest class mean.

Classes are the distinct labels in ascending order (they need not be 0..C-1); row c of ``weights``
and entry c of ``bias`` belong to the c-th smallest label. A value that is undefined is NaN: all
five for fewer than two classes or non-finite features, ``nc1`` when the class means coincide,
``nc2_*`` when a centred mean is zero, ``nc3`` and ``nc4`` without ``weights``.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist

KEYS = ("nc1", "nc2_equinorm", "nc2_equiangle", "nc3", "nc4")


def neural_collapse(
    features: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None, bias: np.ndarray | None = None
) -> dict[str, float]:
    """The five neural-collapse figures of one layer, as floats under `KEYS` (NaN where undefined).

    Parameters
    ----------
    features : (n, d) or (n, ...) (flattened to (n, d)) features, any float dtype
    labels : (n,) integer class labels, any values
    weights : (C, d) classifier weights, optional (``nc3``, ``nc4``)
    bias : (C,) classifier bias, zero if absent

    Raises
    ------
    ValueError
        Shapes that do not fit together (the message names them).

    Examples
    --------
    >>> means = np.array([[1.0, 0.0], [-0.5, 3 ** 0.5 / 2], [-0.5, -(3 ** 0.5) / 2]])  # a simplex ETF
    >>> nc = neural_collapse(np.repeat(means, 4, axis=0), np.repeat([3, 7, 9], 4), weights=means)
    >>> [round(nc[k], 9) + 0.0 for k in KEYS]
    [0.0, 0.0, 0.0, 0.0, 0.0]
    """
    h = np.asarray(features, dtype=np.float64)
    h = h.reshape(len(h), -1)
    y = np.asarray(labels).reshape(-1)
    if len(y) != len(h):
        raise ValueError(f"features has {len(h)} rows but labels has {len(y)} entries")
    classes, index = np.unique(y, return_inverse=True)
    C, d = len(classes), h.shape[1]
    if weights is not None and np.shape(weights) != (C, d):
        raise ValueError(f"weights has shape {np.shape(weights)}; expected (C, d) = ({C}, {d})")
    if bias is not None and np.shape(bias) != (C,):
        raise ValueError(f"bias has shape {np.shape(bias)}; expected (C,) = ({C},)")
    out = dict.fromkeys(KEYS, float("nan"))
    if C < 2 or not np.isfinite(h).all():
        return out
    one_hot = np.eye(C)[index]  # (n, C)
    mu = (one_hot.T @ h) / one_hot.sum(axis=0)[:, None]  # (C, d)
    M = mu - h.mean(axis=0)  # (C, d)
    out["nc1"] = _nc1(h - mu[index], M)
    norms = np.linalg.norm(M, axis=1)
    if norms.mean() > 0:
        out["nc2_equinorm"] = float(norms.std() / norms.mean())
    if (norms > 0).all():
        cos = (M / norms[:, None]) @ (M / norms[:, None]).T
        off = ~np.eye(C, dtype=bool)
        out["nc2_equiangle"] = float(np.abs(cos[off] + 1 / (C - 1)).mean())
    if weights is None:
        return out
    W = np.asarray(weights, dtype=np.float64)
    if np.linalg.norm(W) > 0 and np.linalg.norm(M) > 0:
        out["nc3"] = float(np.sum((W / np.linalg.norm(W) - M / np.linalg.norm(M)) ** 2))
    b = np.zeros(C) if bias is None else np.asarray(bias, dtype=np.float64)
    decided = np.argmax(h @ W.T + b, axis=1)
    nearest = np.argmin(cdist(h, mu, "sqeuclidean"), axis=1)
    out["nc4"] = float(np.mean(decided != nearest))
    return out


def _nc1(within: np.ndarray, M: np.ndarray) -> float:
    """tr(Sigma_W Sigma_B^+) / C from the (n, d) within-class deviations and the (C, d) centred means.

    Sigma_B = M^T M / C has rank at most C - 1: its pseudo-inverse is read from the thin SVD of
    M (singular values below ``max(C, d) * eps * s_max`` count as zero, NumPy's matrix-rank rule)
    instead of from the (d, d) matrix, whose rounding noise a d x d pseudo-inverse would invert.
    """
    C = len(M)
    _, s, vt = np.linalg.svd(M, full_matrices=False)  # s (r,), vt (r, d)
    if not s.size or s[0] == 0:
        return float("nan")
    keep = s > max(M.shape) * np.finfo(float).eps * s[0]
    proj = within @ vt[keep].T  # (n, r): the deviations along Sigma_B's eigenvectors
    spread = (proj**2).mean(axis=0)  # (r,) b_j^T Sigma_W b_j
    return float(np.sum(spread * C / s[keep] ** 2) / C)
