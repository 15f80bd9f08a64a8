"""Eigenvalue spectra of weight matrices: power-law tails, Marchenko-Pastur bulk and phases.

The empirical spectral density (ESD) follows WeightWatcher's convention: the eigenvalues of
``W^T W`` with no ``1/N`` factor (lambda = s**2 for each singular value s of W), ``min(N, M)``
of them for an N x M matrix. A Conv2d weight of shape (out, in, kh, kw) is read as kh*kw
matrices of shape out x in, one per kernel position, whose eigenvalues are pooled.

`layer_spectrum` condenses one layer into the figures tracked per epoch: the power-law exponent
``alpha`` of the ESD's tail (Clauset, Shalizi & Newman 2009, as WeightWatcher fits it), the
Marchenko-Pastur (MP) bulk edge and the spikes beyond it, and one of Martin & Mahoney's phases
of training (JMLR 2021, "Implicit self-regularization in deep neural networks"), listed in
`PHASES`.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from dsc.core import lapack
from dsc.core.mp import fit_mp, mp_density, mp_ks_distance

# fit_mp and mp_density live in dsc.core.mp and are part of this module's interface too.
__all__ = [
    "PHASES",
    "esd",
    "fit_mp",
    "fit_power_law",
    "layer_spectrum",
    "mp_density",
    "spectrum_of_esd",
]

PHASES = (
    "random-like",
    "bleeding-out",
    "bulk+spikes",
    "bulk-decay",
    "heavy-tailed",
    "rank-collapse",
)

# Fewest eigenvalues a power-law tail may hold; below it alpha is reported as NaN. Clauset et
# al. warn that tails of a handful of points give meaningless exponents; WeightWatcher skips
# layers with fewer than 8 eigenvalues.
MIN_TAIL = 10

# Eigenvalues at or below this fraction of lambda_max count as numerically zero (singular values
# below ~3.2e-3 * s_max): they are left out of the power-law fit and counted for rank collapse.
# The float32 ESD (see `esd`) computes exact zeros as |lambda| <~ 5e-7 * lambda_max (measured
# on rank-deficient matrices up to 4096 x 4096), so 1e-5 leaves a 20x margin.
NULL_RTOL = 1e-5

# Phase thresholds (see `layer_spectrum` for how they combine).
RANK_COLLAPSE_FRACTION = 0.25  # share of numerically zero eigenvalues meaning rank collapse
FEW_SPIKES_FRACTION = 0.05  # at most this share of eigenvalues (and at least 1) are "a few"
FAR_SPIKE_RATIO = 1.5  # lambda_max >= this * lambda_plus: a spike far from the bulk
MP_KS_MIN = 0.05  # MP matches the bulk if its KS distance <= max(this, 1.36 / sqrt(n_bulk))
HEAVY_ALPHA_MAX = 6.0  # alpha at or below this (with a good fit) is heavy-tailed
PL_KS_MAX = 0.1  # a power-law fit is good if its KS distance is at most this
TW_SIGMAS = 4.0  # spikes lie this many Tracy-Widom scales beyond lambda_plus

# Upper bound on the elements of one block of the vectorised xmin scan (8 MB per temporary).
_SCAN_BLOCK = 1 << 20
# Rows per block of that scan.
_SCAN_ROWS = 128
# Largest Gram matrix (side) whose slices go to one batched eigensolver call; bigger ones are
# solved one by one with LAPACK ?syevr, faster per matrix.
_BATCH_MAX = 64
# Largest |W| left unscaled before the float32 cast (see `_as_slices`).
_SAFE_MIN, _SAFE_MAX = 2.0**-40, 2.0**40


def esd(W: np.ndarray) -> np.ndarray:
    """Eigenvalues of ``W^T W`` (squared singular values), pooled over conv kernel positions.

    Parameters
    ----------
    W : array, shape (N, M) or (out, in, kh, kw)
        A dense weight matrix, or a Conv2d weight read as kh*kw matrices of shape out x in.

    Returns
    -------
    evals : float64 array, shape (min(N, M),) or (kh * kw * min(out, in),)
        Eigenvalues in ascending order, clipped at 0.

    Notes
    -----
    Computed in float32 whatever W's dtype (trained weights are float32 anyway): the Gram
    matrix of the smaller side, ``W W^T`` or ``W^T W`` (BLAS ``ssyrk``), then LAPACK
    ``ssyevr`` for the eigenvalues only (tridiagonal reduction ``ssytrd``, most of the time,
    then ``ssterf``); for stacks of small conv slices, one batched ``numpy.linalg.eigvalsh``.
    float32 halves the cost of the reduction and of the Gram matrix against float64, and the
    fits lose nothing: the power-law tail holds the largest eigenvalues, which come out within
    ~6e-6 relative (measured), and alpha moved by at most 1.3e-4 against a float64 ESD on 40
    random heavy-tailed and Gaussian matrices. Errors are absolute, though, at most ~1e-5 *
    lambda_max (measured on dense Gaussian bulks; ~1e-6 on heavy-tailed ones), so small
    eigenvalues lose relative precision; a true 0 comes out as |lambda| <~ 5e-7 * lambda_max
    (then clipped at 0), hence NULL_RTOL = 1e-5 for "numerically zero". W is first scaled by a
    power of two (exactly) when its largest entry lies outside [2**-40, 2**40], so that the
    float32 Gram matrix can neither overflow nor underflow.

    Examples
    --------
    >>> esd(np.diag([3.0, 1.0]))
    array([1., 9.])
    """
    return _slice_evals(*_as_slices(W))


def fit_power_law(evals: np.ndarray, min_tail: int = MIN_TAIL) -> tuple[float, float, float]:
    """Continuous power-law fit of the ESD's upper tail, xmin chosen by the KS distance.

    For each candidate xmin among the eigenvalues, the maximum-likelihood exponent of the
    tail ``lambda >= xmin`` (n points) is ``alpha = 1 + n / sum(ln(lambda_i / xmin))``; the
    xmin kept is the one whose fitted CDF ``1 - (lambda / xmin)**(1 - alpha)`` lies closest,
    in Kolmogorov-Smirnov distance, to the empirical CDF ``0, 1/n, ..., (n-1)/n`` of the tail.
    This is WeightWatcher's default fit (its ``WWFit``), with tails shorter than ``min_tail``
    left out and numerically zero eigenvalues (<= NULL_RTOL * lambda_max) dropped.

    Parameters
    ----------
    evals : array, shape (n,)
        Eigenvalues, in any order.
    min_tail : int
        Fewest points a tail may hold.

    Returns
    -------
    alpha, xmin, ks_distance : float
        NaN all three when fewer than ``min_tail`` eigenvalues are non-zero or no tail admits a
        finite exponent (all equal).
    """
    if min_tail < 2:
        raise ValueError(f"min_tail must be at least 2, got {min_tail}")
    x = np.sort(np.asarray(evals, dtype=np.float64).ravel())
    if x.size == 0 or not x[-1] > 0:
        return np.nan, np.nan, np.nan
    x = x[x > NULL_RTOL * x[-1]]
    n = x.size
    if n < min_tail:
        return np.nan, np.nan, np.nan

    logx = np.log(x)
    tail_sum = np.cumsum(logx[::-1])[::-1]  # sum of logx[i:] for each i
    n_cand = n - min_tail + 1  # candidates i leave at least min_tail points
    idx = np.arange(n_cand)
    tail_n = (n - idx).astype(np.float64)
    denom = tail_sum[:n_cand] - tail_n * logx[:n_cand]
    with np.errstate(divide="ignore"):
        alphas = 1.0 + tail_n / denom
    ok = denom > 0  # a tail of equal values has no finite exponent
    slope = 1.0 - np.where(ok, alphas, 2.0)  # placeholder exponent keeps masked rows finite
    ks = np.full(n_cand, np.inf)

    # The KS distance of every candidate at once, by blocks of rows to bound memory. Row i of
    # `windows` is logx[i:] padded with +inf: past the tail's end the fitted CDF is exactly 1
    # and the clipped empirical one too, so padding adds nothing to the maximum.
    windows = sliding_window_view(np.concatenate([logx, np.full(n, np.inf)]), n)
    offsets = np.arange(n, dtype=np.float64)
    start = 0
    while start < n_cand:
        width = n - start  # longest tail in this block
        # Short blocks keep the unused triangle (rows whose tail ends early) small.
        stop = min(n_cand, start + max(1, min(_SCAN_ROWS, _SCAN_BLOCK // width)))
        rows = slice(start, stop)
        z = windows[rows, :width] - logx[rows, None]  # (B, width): ln(lambda_j / xmin)
        z *= slope[rows, None]
        np.expm1(z, out=z)  # -(fitted CDF) = (lambda_j / xmin)**(1 - alpha) - 1
        z += np.minimum(offsets[:width] / tail_n[rows, None], 1.0)  # + empirical CDF
        np.abs(z, out=z)
        ks[rows] = np.where(ok[rows], z.max(axis=1), np.inf)
        start = stop

    if not np.isfinite(ks).any():
        return np.nan, np.nan, np.nan
    best = int(np.argmin(ks))  # ties go to the smallest xmin, as in WeightWatcher
    return float(alphas[best]), float(x[best]), float(ks[best])


def layer_spectrum(W: np.ndarray) -> dict[str, float | int | str]:
    """Spectral summary of one weight matrix: power-law tail, MP bulk, spikes and phase.

    Parameters
    ----------
    W : array, shape (N, M) or (out, in, kh, kw)
        A dense weight or a Conv2d weight (kernel positions pooled, see `esd`).

    Returns
    -------
    dict with exactly these keys
        alpha : float
            Power-law exponent of the ESD tail (`fit_power_law`); NaN when under MIN_TAIL
            non-zero eigenvalues exist.
        xmin, ks_distance : float
            Start of the fitted tail and the fit's KS distance; NaN with alpha.
        lambda_max : float
            Largest eigenvalue (spectral norm squared).
        stable_rank : float
            ``sum(lambda) / lambda_max``; NaN for a zero matrix.
        log_norm : float
            ``log10(sum(lambda)) = log10(||W||_F ** 2)``; NaN for a zero matrix.
        lambda_plus : float
            Upper edge of the fitted MP bulk (`fit_mp`, per-slice shape for conv weights).
        num_spikes : int
            Eigenvalues above ``lambda_plus + TW_SIGMAS * s_TW`` (and above NULL_RTOL *
            lambda_max), where
            ``s_TW = sigma2 * (sqrt(N) + sqrt(M)) * (1/sqrt(N) + 1/sqrt(M))**(1/3)`` is the
            Tracy-Widom scale of the largest eigenvalue of a Wishart matrix (Johnstone 2001);
            TW_SIGMAS = 4 lies past the 99.9% quantile (~3.3) of the TW1 law, so a pure noise
            matrix almost never shows a spike.
        phase : str
            One of `PHASES`, the first rule that holds, in this order:

            1. ``rank-collapse``: lambda_max = 0, or at least RANK_COLLAPSE_FRACTION (25%) of
               the eigenvalues are <= NULL_RTOL (1e-5) * lambda_max.
            2. ``random-like``: no spikes, and the bulk (eigenvalues up to the spike threshold)
               matches the fitted MP law: KS distance <= max(MP_KS_MIN, 1.36 / sqrt(n_bulk)),
               i.e. <= 0.05 for large layers, looser for tiny ones.
            3. ``heavy-tailed``: at least MIN_TAIL (10) spikes, so the tail is more than a
               handful of outliers, and it fits a power law well: alpha <= HEAVY_ALPHA_MAX (6)
               with ks_distance <= PL_KS_MAX (0.1). Alpha in 2-4 is Martin & Mahoney's
               moderately, below 2 their very heavy-tailed class; both count here.
            4. ``bulk+spikes``: MP-like bulk as in 2, 1 <= num_spikes <= max(1,
               FEW_SPIKES_FRACTION (5%) of the eigenvalues), and lambda_max >=
               FAR_SPIKE_RATIO (1.5) * lambda_plus: clear spikes far beyond the edge.
            5. ``bleeding-out``: as 4, but lambda_max < 1.5 * lambda_plus: a few eigenvalues
               just past the edge.
            6. ``bulk-decay``: everything else: the bulk is no longer MP-like or many
               eigenvalues lie past its edge, without a good power law of alpha <= 6 (alpha
               > 6, a poor fit, or too few eigenvalues to fit).

    Raises
    ------
    ValueError
        If W is not 2-D or 4-D, is empty, or holds NaN or inf.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> layer_spectrum(rng.standard_normal((1000, 500)))["phase"]
    'random-like'
    """
    slices, exp = _as_slices(W)
    return spectrum_of_esd(_slice_evals(slices, exp), *slices.shape[1:])


def spectrum_of_esd(evals: np.ndarray, n: int, m: int) -> dict[str, float | int | str]:
    """`layer_spectrum` from eigenvalues already computed, to decompose each layer only once.

    Parameters
    ----------
    evals : array, shape (k * min(n, m),)
        The layer's ESD, as `esd` returns it (any order).
    n, m : int
        Shape of one matrix: the weight's, or a conv weight's (out, in) per kernel position.

    Returns
    -------
    dict
        The keys of `layer_spectrum`.
    """
    if n < 1 or m < 1:
        raise ValueError(f"matrix shape must be positive, got {n} x {m}")
    evals = np.sort(np.asarray(evals, dtype=np.float64).ravel())
    if evals.size == 0 or not np.isfinite(evals).all():
        raise ValueError(
            f"evals must be a non-empty array of finite eigenvalues, got {evals.size} values "
            f"of which {np.count_nonzero(~np.isfinite(evals))} non-finite"
        )
    evals = np.clip(evals, 0.0, None)
    total = float(evals.sum())
    lam_max = float(evals[-1])
    alpha, xmin, ks = fit_power_law(evals)

    sigma2, _, lam_plus = fit_mp(evals, n, m)
    # A numerically zero eigenvalue is never a spike, even over a collapsed (zero) bulk.
    threshold = max(lam_plus + _tw_margin(sigma2, n, m), NULL_RTOL * lam_max)
    num_spikes = int(np.count_nonzero(evals > threshold))

    if lam_max > 0:
        stable_rank, log_norm = total / lam_max, float(np.log10(total))
    else:
        stable_rank, log_norm = np.nan, np.nan
    phase = _phase(evals, sigma2, n, m, threshold, num_spikes, lam_plus, alpha, ks)
    return {
        "alpha": alpha,
        "xmin": xmin,
        "ks_distance": ks,
        "lambda_max": lam_max,
        "stable_rank": float(stable_rank),
        "log_norm": float(log_norm),
        "lambda_plus": float(lam_plus),
        "num_spikes": num_spikes,
        "phase": phase,
    }


def _phase(evals, sigma2, n, m, threshold, num_spikes, lam_plus, alpha, ks) -> str:
    """Martin & Mahoney phase from the precomputed fits (rules in `layer_spectrum`)."""
    lam_max = evals[-1]
    if lam_max <= 0 or np.mean(evals <= NULL_RTOL * lam_max) >= RANK_COLLAPSE_FRACTION:
        return "rank-collapse"
    bulk = evals[evals <= threshold]
    mp_like = (
        bulk.size > 0
        and sigma2 > 0
        and (mp_ks_distance(bulk, sigma2, n, m) <= max(MP_KS_MIN, 1.36 / np.sqrt(bulk.size)))
    )
    if mp_like and num_spikes == 0:
        return "random-like"
    # NaN alpha compares False, so tiny layers never count as heavy-tailed.
    if num_spikes >= MIN_TAIL and alpha <= HEAVY_ALPHA_MAX and ks <= PL_KS_MAX:
        return "heavy-tailed"
    if mp_like and num_spikes <= max(1.0, FEW_SPIKES_FRACTION * evals.size):
        return "bulk+spikes" if lam_max >= FAR_SPIKE_RATIO * lam_plus else "bleeding-out"
    return "bulk-decay"


def _as_slices(W: np.ndarray) -> tuple[np.ndarray, int]:
    """Validate W; return it as a float32 stack of matrices, shape (k, n, m), and a scale.

    The scale is a power of two 2**e (e = 0 unless W's largest entry lies outside
    [2**-40, 2**40]) such that ``W = 2**e * slices``: dividing by it is exact, and it keeps the
    float32 Gram matrix clear of overflow and underflow whatever W's magnitude.
    """
    W = np.asarray(W)
    if W.ndim not in (2, 4):
        raise ValueError(f"W must be a 2-D weight (N, M) or a 4-D conv weight (out, in, kh, kw), got shape {W.shape}")
    if W.size == 0:
        raise ValueError(f"W is empty (shape {W.shape})")
    if not np.issubdtype(W.dtype, np.number) or np.iscomplexobj(W):
        raise ValueError(f"W must hold real numbers, got dtype {W.dtype}")
    amax = float(np.max(np.abs(W)))  # NaN or inf anywhere makes this non-finite
    if not np.isfinite(amax):
        raise ValueError(
            f"W of shape {W.shape} holds {np.count_nonzero(~np.isfinite(W))} non-finite values "
            "(NaN or inf); a diverged layer has no spectrum"
        )
    exp = 0
    if amax > 0 and not _SAFE_MIN <= amax <= _SAFE_MAX:
        exp = int(np.frexp(amax)[1])
        W = np.ldexp(W.astype(np.float64, copy=False), -exp)
    W = W.astype(np.float32, copy=False)
    if W.ndim == 2:
        return W[None], exp
    out, inp, kh, kw = W.shape
    return np.ascontiguousarray(W.transpose(2, 3, 0, 1)).reshape(kh * kw, out, inp), exp


def _slice_evals(slices: np.ndarray, exp: int = 0) -> np.ndarray:
    """Pooled, sorted float64 eigenvalues of ``(2**exp * slices)^T (2**exp * slices)``.

    ``slices`` is a validated float32 stack, shape (k, n, m). The Gram matrix of the smaller
    side (BLAS ssyrk) then a symmetric eigensolver (LAPACK ssyevr) costs less than an SVD
    of W, and float32 less again (see `esd` for the precision this leaves; the speed against
    WeightWatcher is ``bench/spectra.py`` on the benchmark page, docs/benchmarks.md).
    """
    k, n, m = slices.shape
    a = slices if n <= m else slices.transpose(0, 2, 1)  # (k, small, big): Gram a a^T
    if k == 1 or a.shape[1] > _BATCH_MAX:
        parts = []
        for s in a:
            # ssyrk fills the upper triangle of a Fortran-ordered a a^T, without the copies
            # (of a, and of the triangle) that ``s @ s.T`` costs; both calls release the GIL,
            # so the layers of a snapshot are solved side by side (dsc.core.lapack).
            parts.append(lapack.eigvalsh_upper(lapack.gram_upper(s)))
        evals = np.concatenate(parts)
    else:  # many small slices (conv kernels): one batched call beats a Python loop
        evals = np.linalg.eigvalsh(a @ a.transpose(0, 2, 1)).ravel()
    evals = np.clip(evals.astype(np.float64), 0.0, None)
    if exp:
        evals = np.ldexp(evals, 2 * exp)
    return np.sort(evals)


def _tw_margin(sigma2: float, n: int, m: int) -> float:
    """TW_SIGMAS Tracy-Widom scales of the largest Wishart eigenvalue (Johnstone 2001)."""
    big, small = max(n, m), min(n, m)
    scale = sigma2 * (np.sqrt(big) + np.sqrt(small)) * (big**-0.5 + small**-0.5) ** (1 / 3)
    return TW_SIGMAS * float(scale)
