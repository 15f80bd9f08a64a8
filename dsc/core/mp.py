"""The Marchenko-Pastur (MP) law of the eigenvalues of ``W^T W``, with no ``1/N`` factor.

For W of shape N x M (N >= M) with iid entries of variance sigma2, the M eigenvalues of
``W^T W`` fill ``[lambda_-, lambda_+] = sigma2 * (sqrt(N) -+ sqrt(M))**2``: the bulk that
`dsc.core.spectra` compares a layer's spectrum with. Density (`mp_density`), distribution
function (`mp_cdf`), a fit of sigma2 by the median (`fit_mp`), and the Kolmogorov-Smirnov
distance of a bulk from the fitted law (`mp_ks_distance`, by ``scipy.stats.kstest``).
"""

from __future__ import annotations

import numpy as np

# Quadrature nodes of the standard MP cumulative distribution.
_MP_GRID = 4096


def mp_density(x: np.ndarray, ratio: float, sigma2: float, n: int) -> np.ndarray:
    """Marchenko-Pastur density of the eigenvalues of ``W^T W`` (no 1/N factor).

    For W of shape N x M (N >= M) with iid entries of variance sigma2, the M eigenvalues of
    ``W^T W`` fill ``[lambda_-, lambda_+] = sigma2 * (sqrt(N) -+ sqrt(M))**2`` with density
    ``sqrt((lambda_+ - x)(x - lambda_-)) / (2 pi sigma2 M x)``, which integrates to 1. To
    overlay it on a histogram of an ESD with spikes, scale it by the share of eigenvalues in
    the bulk.

    Parameters
    ----------
    x : array, any shape
        Eigenvalues at which to evaluate.
    ratio : float
        Aspect ratio Q = N / M >= 1.
    sigma2 : float
        Entry variance (> 0).
    n : int
        The larger dimension N.

    Returns
    -------
    density : array, shape of ``x``
        0 outside the bulk.
    """
    if not ratio >= 1:
        raise ValueError(f"ratio must be N / M >= 1, got {ratio}")
    if not sigma2 > 0 or not n > 0:
        raise ValueError(f"sigma2 and n must be positive, got sigma2={sigma2}, n={n}")
    x = np.asarray(x, dtype=np.float64)
    lo, hi = _edges(ratio, sigma2, n)
    inside = (x > lo) & (x < hi) & (x > 0)
    width = np.sqrt(np.clip((hi - x) * (x - lo), 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        dens = width / (2.0 * np.pi * sigma2 * (n / ratio) * x)
    return np.where(inside, dens, 0.0)


def mp_cdf(x: np.ndarray, ratio: float, sigma2: float, n: int) -> np.ndarray:
    """Marchenko-Pastur distribution function of the eigenvalues of ``W^T W``.

    Parameters
    ----------
    x : array, any shape
        Eigenvalues at which to evaluate.
    ratio, sigma2, n : float, float, int
        As in `mp_density`: Q = N / M >= 1, the entry variance, the larger dimension N.

    Returns
    -------
    cdf : array, shape of ``x``
        0 below the bulk, 1 above it.
    """
    grid_u, grid_cdf = _standard_cdf(1.0 / ratio)
    return np.interp(np.asarray(x, dtype=np.float64) / (sigma2 * n), grid_u, grid_cdf)


def fit_mp(evals: np.ndarray, n: int, m: int) -> tuple[float, float, float]:
    """Fit a Marchenko-Pastur bulk to an ESD by matching its median.

    The median is insensitive to a few spikes and to a heavy upper tail, where the mean (the
    Frobenius norm) is not: ``sigma2 = median(evals) / (N * u_half)`` with ``u_half`` the median
    of the standard MP law of ratio M / N.

    Parameters
    ----------
    evals : array, shape (k * min(n, m),)
        Eigenvalues of ``W^T W``, pooled over k slices of shape n x m.
    n, m : int
        Shape of one matrix (either order).

    Returns
    -------
    sigma2, lambda_minus, lambda_plus : float
        Fitted entry variance and bulk edges; all 0 when the median eigenvalue is 0.
    """
    if n < 1 or m < 1:
        raise ValueError(f"matrix shape must be positive, got {n} x {m}")
    evals = np.asarray(evals, dtype=np.float64).ravel()
    if evals.size == 0:
        raise ValueError("evals is empty")
    big, small = max(n, m), min(n, m)
    grid_u, grid_cdf = _standard_cdf(small / big)
    u_half = float(np.interp(0.5, grid_cdf, grid_u))
    sigma2 = max(0.0, float(np.median(evals))) / (big * u_half)  # rounding can dip below 0
    lo, hi = _edges(big / small, sigma2, big) if sigma2 > 0 else (0.0, 0.0)
    return sigma2, lo, hi


def mp_ks_distance(bulk: np.ndarray, sigma2: float, n: int, m: int) -> float:
    """Two-sided Kolmogorov-Smirnov distance of eigenvalues from the fitted MP law.

    Parameters
    ----------
    bulk : array, shape (k,)
        Eigenvalues of ``W^T W`` (any order), e.g. those below the spike threshold.
    sigma2 : float
        Entry variance of the MP law (> 0), as `fit_mp` returns it.
    n, m : int
        Shape of one matrix (either order).

    Returns
    -------
    float
        ``sup |F_k - mp_cdf|`` over the empirical distribution function F_k of ``bulk``.
    """
    big, small = max(n, m), min(n, m)
    # Only the statistic is used: the asymptotic p-value is the cheapest to compute with it.
    from scipy import stats  # imported here: training loads this module and never tests a fit

    test = stats.kstest(bulk, mp_cdf, args=(big / small, sigma2, big), method="asymp")
    return float(test.statistic)


def _edges(ratio: float, sigma2: float, n: int) -> tuple[float, float]:
    """Bulk edges sigma2 * n * (1 -+ 1/sqrt(ratio))**2 of the MP law of ``W^T W``."""
    root = 1.0 / np.sqrt(ratio)
    return sigma2 * n * (1.0 - root) ** 2, sigma2 * n * (1.0 + root) ** 2


def _standard_cdf(y: float) -> tuple[np.ndarray, np.ndarray]:
    """CDF of the MP law with unit variance and ratio y = M / N <= 1, in units lambda / N.

    Returns the grid ``u`` (shape (G + 1,)) and the CDF on it. The substitution
    ``u = a + (b - a)(1 - cos t) / 2`` removes the square-root edges (and the 1/sqrt(u) pole
    at y = 1), so a midpoint rule in t converges fast.
    """
    a, b = (1.0 - np.sqrt(y)) ** 2, (1.0 + np.sqrt(y)) ** 2
    t_edges = np.linspace(0.0, np.pi, _MP_GRID + 1)
    t_mid = 0.5 * (t_edges[1:] + t_edges[:-1])
    u_mid = a + (b - a) * (1.0 - np.cos(t_mid)) / 2.0
    mass = ((b - a) ** 2 / 4.0) * np.sin(t_mid) ** 2 / (2.0 * np.pi * y * u_mid)
    cdf = np.concatenate([[0.0], np.cumsum(mass)])
    cdf /= cdf[-1]  # the quadrature error, not a missing mass
    return a + (b - a) * (1.0 - np.cos(t_edges)) / 2.0, cdf
