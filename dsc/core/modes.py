"""Hierarchical modes of trained weight matrices (Li & Huang 2023, in the SVD reading).

Li & Huang write a layer as a sum of modes, W = sum_mu xi_mu lambda_mu xi'_mu^T, and find that
the accuracy explained by the leading modes follows a piecewise power law. For a network trained
the ordinary way the matching modes are the singular triplets of W = U S V^T: keep k of them,
measure the error as a function of k, and fit two power-law segments to
``err(k) = error(k) - error(full)``.

Convolution kernels, shape (out, in, kh, kw), are read as the matrix (out, in * kh * kw): each
row is one output channel's whole filter, the matrix the convolution applies to every
unfolded input patch (im2col), so its modes are modes of the layer's linear map.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

MODE_CHOICES = ("leading", "random")


class ModeDecomposition:
    """The SVD of one weight matrix, computed once; `modes` picks the k modes to keep.

    Parameters
    ----------
    weight : array, shape (m, n) or (out, in, kh, kw)
        A linear layer's weight, or a convolution kernel (read as (out, in * kh * kw)).

    Attributes
    ----------
    u_ : array, shape (m, r); s_ : array, shape (r,), descending; vt_ : array, shape (r, n)
        Thin SVD in float64, r = min(m, n) modes.
    """

    def __init__(self, weight: np.ndarray) -> None:
        weight = np.asarray(weight)
        if weight.ndim not in (2, 4):
            raise ValueError(f"weight must be 2-D (out, in) or 4-D (out, in, kh, kw), got shape {weight.shape}")
        self.shape = weight.shape
        matrix = weight.reshape(weight.shape[0], -1).astype(np.float64)
        self.u_, self.s_, self.vt_ = np.linalg.svd(matrix, full_matrices=False)

    @property
    def n_modes(self) -> int:
        """min(m, n): the largest valid k."""
        return len(self.s_)

    def modes(self, k: int, modes: str = "leading", rng=None) -> np.ndarray:
        """Indices (k,) of the modes kept: the k largest, or k drawn without replacement."""
        if not isinstance(k, (int, np.integer)) or not 0 <= k <= self.n_modes:
            raise ValueError(f"k must be an int in [0, {self.n_modes}] for weight {self.shape}, got {k!r}")
        if modes == "leading":
            return np.arange(k)
        if modes == "random":
            return np.sort(np.random.default_rng(rng).choice(self.n_modes, size=k, replace=False))
        raise ValueError(f"unknown modes {modes!r}; use one of {MODE_CHOICES}")


def k_grid(rank: int, n: int = 20) -> np.ndarray:
    """Roughly log-spaced distinct ints from 1 to rank, both included.

    Parameters
    ----------
    rank : int >= 1
    n : int >= 2
        Number of points; all of 1..rank when rank <= n.

    Returns
    -------
    int array, shape (min(n, rank),), strictly increasing, first 1, last rank.
    """
    if not isinstance(rank, (int, np.integer)) or rank < 1:
        raise ValueError(f"rank must be an int >= 1, got {rank!r}")
    if not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n must be an int >= 2, got {n!r}")
    # Rounding a geomspace merges its small values; re-aiming each step at rank from the last
    # kept value spends those points at the low end instead and still ends exactly at rank.
    grid = [1]
    for left in range(min(n, rank) - 1, 0, -1):
        step = (rank / grid[-1]) ** (1 / left)
        grid.append(min(rank - left + 1, max(grid[-1] + 1, round(grid[-1] * step))))
    return np.array(grid)


@dataclass(frozen=True)
class PowerLawFit:
    """Two power laws joined continuously: log err = intercept + slope_1 log k below the break.

    Attributes
    ----------
    breakpoint : float
        k at the join (in k units; NaN on failure).
    slope_1, slope_2 : float
        Exponents below and above the breakpoint (err ~ k^slope).
    intercept : float
        Natural log of the first segment's err at k = 1.
    r2 : float
        Coefficient of determination in log-log space.
    single_slope, single_r2 : float
        The one-segment power law, for comparison.
    n_points, n_dropped : int
        Points used, and points dropped (err <= 0, k <= 0 or non-finite).
    success : bool
    message : str
    """

    breakpoint: float
    slope_1: float
    slope_2: float
    intercept: float
    r2: float
    single_slope: float
    single_r2: float
    n_points: int
    n_dropped: int
    success: bool
    message: str


def _hinge_lstsq(x: np.ndarray, y: np.ndarray, xb: float) -> tuple[np.ndarray, float]:
    """Coefficients (a, s1, s2 - s1) and RSS of y ~ a + s1 x + (s2 - s1) max(0, x - xb)."""
    design = np.column_stack([np.ones_like(x), x, np.maximum(0.0, x - xb)])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return coef, float(np.sum((design @ coef - y) ** 2))


def fit_two_segment_power_law(k: np.ndarray, err: np.ndarray, min_points: int = 5) -> PowerLawFit:
    """Fit log err vs log k with two straight segments joined at a breakpoint.

    The breakpoint is scanned over the interior data points and 20 steps between each pair,
    keeping at least 2 points on each side; for each candidate the remaining model is linear
    and solved by least squares, and the candidate with the smallest residual wins.

    Parameters
    ----------
    k : array, shape (N,)
        Numbers of modes kept.
    err : array, shape (N,)
        ``error(k) - error(full)``; non-positive and non-finite points cannot be logged and
        are dropped (counted in ``n_dropped``).
    min_points : int, default 5
        Fewer usable points give ``success=False`` (4 points fit the 4 parameters exactly).

    Returns
    -------
    PowerLawFit
    """
    k, err = np.asarray(k, dtype=np.float64), np.asarray(err, dtype=np.float64)
    if k.shape != err.shape or k.ndim != 1:
        raise ValueError(f"k and err must be 1-D of one length, got {k.shape} and {err.shape}")
    ok = np.isfinite(k) & np.isfinite(err) & (k > 0) & (err > 0)
    order = np.argsort(k[ok])
    x, y = np.log(k[ok][order]), np.log(err[ok][order])
    n, dropped = len(x), int((~ok).sum())
    nan = float("nan")
    if n < min_points or np.unique(x).size < 4:
        msg = f"{n} usable points (dropped {dropped}), need {min_points} with 4 distinct k"
        return PowerLawFit(nan, nan, nan, nan, nan, nan, nan, n, dropped, False, msg)
    single = np.polyfit(x, y, 1)
    sst = float(np.sum((y - y.mean()) ** 2))
    single_r2 = 1 - float(np.sum((np.polyval(single, x) - y) ** 2)) / sst if sst > 0 else nan
    # Candidates between the 2nd and the 2nd-to-last point leave >= 2 points per segment.
    cands = np.unique(np.concatenate([np.linspace(a, b, 21) for a, b in itertools.pairwise(x[1:-1])]))
    fits = [_hinge_lstsq(x, y, xb) for xb in cands]
    best = int(np.argmin([rss for _, rss in fits]))
    (a, s1, ds), rss = fits[best]
    r2 = 1 - rss / sst if sst > 0 else nan
    msg = f"fit {n} points (dropped {dropped})"
    return PowerLawFit(
        float(np.exp(cands[best])),
        float(s1),
        float(s1 + ds),
        float(a),
        r2,
        float(single[0]),
        single_r2,
        n,
        dropped,
        True,
        msg,
    )
