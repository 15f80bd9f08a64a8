"""Logistic learning decomposition (LLD): a learning curve as a sum of logistic processes.

Hanson et al. (2023, figures 11/12) fit the accuracy curve of a dense-sample network by

    y(t) = c + sum_{i=1..N} A_i / (1 + exp(-(t - t_i) / w_i))

and read each term as one learning process: fast ones early, slow ones later. One logistic
explains ~94% of their curve's variance, two explain ~99%.

The model of record is lmfit's composition ``ConstantModel(prefix='c_') +
StepModel(form='logistic', prefix='l1_') + ...``: lmfit's logistic step is
``amplitude * (1 - 1/(1 + exp((t - center)/sigma)))``, the term above with ``sigma = w``.
Centres are kept in order by lmfit expressions, ``l{i+1}_center = l{i}_center + l{i+1}_delta``
with ``delta >= 0``. A falling curve (a loss) gets amplitudes ``<= 0``.

lmfit spends ~0.3 ms of Python per model evaluation and ~5 ms per ``Model.fit`` call, so the
fit runs on the same parametrisation with MINPACK (scipy ``leastsq``) and an analytic Jacobian,
bounds kept by lmfit's own sine transform, from a few starting points per N. The standard
errors, AIC and BIC of the best one are computed as lmfit computes them (``_finish``);
tests/test_lld.py checks them against lmfit's own fit of the composite model.

Public API: :func:`fit` (one N), :func:`select` (N = 1..K, chosen by BIC), :class:`LLDResult`,
:class:`Selection`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from typing import Any

import numpy as np
from lmfit import Parameters
from lmfit.lineshapes import step
from lmfit.models import ConstantModel, StepModel
from scipy.linalg import lapack, qr
from scipy.optimize import leastsq

from dsc.core.jsonsafe import jsonable

DIRECTIONS = ("auto", "rising", "falling")
# A component smaller than this fraction of the curve's range is indistinguishable from noise.
MIN_AMPLITUDE_FRACTION = 0.02
# Narrowest width, in sampling steps: a sharper rise falls between two samples and its width
# cannot be measured.
_WIDTH_FLOOR_STEPS = 0.25
# Centres may sit this fraction of the span outside the data: a process already under way at
# the first sample, or still rising at the last, is real but only partly seen.
_CENTRE_MARGIN = 0.1
# No single process rises by more than this many times the observed range.
_AMPLITUDE_CAP = 3.0
# A parameter within this relative distance of a bound is "at" the bound.
_AT_BOUND = 1e-2
_MAX_NFEV_SEARCH = 200  # per start: converged fits take 10-60 evaluations


@dataclasses.dataclass(frozen=True, eq=False)
class LLDResult:
    """One logistic decomposition of a curve.

    Attributes
    ----------
    n_components : int
        Number N of logistic components asked for.
    direction : str
        ``"rising"`` (amplitudes >= 0) or ``"falling"`` (amplitudes <= 0), resolved from
        ``"auto"``.
    success : bool
        False when no fit was made (flat curve, too few points) or the optimiser failed.
    message : str
        What happened, in words: the fit quality, degenerate components, or why it failed.
    r2 : float
        ``1 - SS_res / SS_tot`` over the finite points; NaN when no fit was made.
    aic, bic : float
        lmfit's Akaike and Bayesian information criteria (``n log(chi2/n) + penalty``, with
        3N + 1 free parameters); NaN when no fit was made.
    constant, constant_stderr : float
        The baseline ``c`` and its standard error (NaN when not estimated).
    components : list of dict
        One dict per component, sorted by centre, with keys ``amplitude``, ``center``,
        ``width`` and ``amplitude_stderr``, ``center_stderr``, ``width_stderr`` (NaN when not
        estimated). Units: those of ``y`` for amplitudes, of ``t`` for centres and widths.
    degenerate : tuple of str
        One reason per degenerate component (amplitude below 2% of the range, width at a
        bound, centre outside the data); empty when none.
    t, y : ndarray, shape (n,)
        The finite points used, sorted by ``t``.
    curve : ndarray, shape (n,)
        Fitted values on ``t``; NaN when no fit was made.
    component_curves : ndarray, shape (N, n)
        Each component's curve on ``t`` (constant excluded); shape (0, n) when no fit was made.
    """

    n_components: int
    direction: str
    success: bool
    message: str
    r2: float
    aic: float
    bic: float
    constant: float
    constant_stderr: float
    components: list[dict[str, float]]
    degenerate: tuple[str, ...]
    t: np.ndarray
    y: np.ndarray
    curve: np.ndarray
    component_curves: np.ndarray

    def evaluate(self, t_new: Any) -> np.ndarray:
        """Fitted curve at new points.

        Parameters
        ----------
        t_new : array_like, shape (m,)
            Points at which to evaluate, in the units of ``t``.

        Returns
        -------
        ndarray, shape (m,)
            ``c + sum_i A_i / (1 + exp(-(t - t_i)/w_i))``; all NaN when no fit was made.
        """
        x = np.asarray(t_new, dtype=float)
        if not self.components:
            return np.full(x.shape, np.nan)
        return self.constant + _component_curves(x, self.components).sum(axis=0)

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain JSON types: floats, lists, NaN and inf as None."""
        return jsonable(
            {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        )


@dataclasses.dataclass(frozen=True, eq=False)
class Selection:
    """Fits with N = 1..K components and the N chosen by BIC.

    Attributes
    ----------
    n : int
        The chosen number of components.
    best : LLDResult
        ``fits[n]``.
    fits : dict of int to LLDResult
        Every fit, keyed by N.
    reason : str
        Why ``n`` was chosen, in words.
    """

    n: int
    best: LLDResult
    fits: dict[int, LLDResult]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary: ``n``, ``reason``, ``best`` and every fit (keys as str)."""
        return {
            "n": self.n,
            "reason": self.reason,
            "best": self.best.to_dict(),
            "fits": {str(k): v.to_dict() for k, v in self.fits.items()},
        }


def fit(t: Any, y: Any, n_components: int, direction: str = "auto") -> LLDResult:
    """Fit a curve by a constant plus ``n_components`` logistic steps.

    Parameters
    ----------
    t : array_like, shape (n,)
        Sample times (e.g. epochs), in any order; non-finite points are dropped.
    y : array_like, shape (n,)
        Curve values (e.g. accuracy or loss); non-finite points are dropped.
    n_components : int
        Number N >= 1 of logistic components.
    direction : {"auto", "rising", "falling"}
        Sign of the amplitudes. ``"auto"`` takes the sign of the median of the last fifth of
        the points minus that of the first fifth (robust to noise at either end).

    Returns
    -------
    LLDResult
        ``success=False`` with a message, never an exception, when the curve is flat or has
        fewer than 3N + 2 finite points (3N + 1 parameters and one residual degree of freedom).

    Raises
    ------
    ValueError
        If ``t``/``y`` are not 1-D numeric arrays of one length, ``n_components < 1`` or
        ``direction`` is unknown.

    Examples
    --------
    >>> t = np.arange(60.0)
    >>> res = fit(t, 0.2 + 0.7 / (1 + np.exp(-(t - 25.0) / 3.0)), 1)
    >>> round(res.components[0]["center"], 3), round(res.r2, 6)
    (25.0, 1.0)
    """
    n_components = _check_count(n_components, "n_components")
    frame = _Frame.build(t, y, direction)
    thetas = _search(frame, n_components)
    return _result(frame, n_components, thetas.get(n_components))


def select(t: Any, y: Any, max_components: int = 4, direction: str = "auto") -> Selection:
    """Fit N = 1..max_components components and choose N by BIC.

    A fit competes only if it succeeded and none of its components is degenerate (amplitude
    below 2% of the curve's range, width at a bound, centre outside the data): an extra
    component that explains noise never beats the smaller fit. Among those, the lowest BIC
    wins. If none qualifies, the smallest successful N is chosen (or N = 1 if none succeeded).

    Parameters
    ----------
    t, y : array_like, shape (n,)
        As in :func:`fit`.
    max_components : int
        Largest N tried, >= 1.
    direction : {"auto", "rising", "falling"}
        As in :func:`fit`.

    Returns
    -------
    Selection

    Raises
    ------
    ValueError
        As in :func:`fit`, or ``max_components < 1``.
    """
    max_components = _check_count(max_components, "max_components")
    frame = _Frame.build(t, y, direction)
    thetas = _search(frame, max_components)
    fits = {n: _result(frame, n, thetas.get(n)) for n in range(1, max_components + 1)}
    n, reason = _choose(fits)
    return Selection(n=n, best=fits[n], fits=fits, reason=reason)


# --------------------------------------------------------------------------- validation


def _check_count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _as_1d(values: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a 1-D array of real numbers: {err}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def _resolve_direction(direction: Any, y: np.ndarray) -> str:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if direction != "auto":
        return direction
    k = max(1, y.size // 5)
    # Medians of the two ends rather than the end points: one noisy epoch must not flip it.
    trend = np.median(y[-k:]) - np.median(y[:k]) if y.size else 0.0
    return "falling" if trend < 0 else "rising"


@dataclasses.dataclass(frozen=True)
class _Frame:
    """The finite data, sorted by t, and the scales that set bounds and starts."""

    t: np.ndarray  # (n,)
    y: np.ndarray  # (n,)
    direction: str
    sign: float  # +1 rising, -1 falling: the search fits sign * y, always rising
    span: float  # t[-1] - t[0]
    step: float  # median spacing of distinct t
    yrange: float  # peak-to-peak of y

    @classmethod
    def build(cls, t: Any, y: Any, direction: str) -> _Frame:
        t_arr, y_arr = _as_1d(t, "t"), _as_1d(y, "y")
        if t_arr.shape != y_arr.shape:
            raise ValueError(f"t and y must have one length, got {t_arr.size} and {y_arr.size}")
        keep = np.isfinite(t_arr) & np.isfinite(y_arr)
        order = np.argsort(t_arr[keep], kind="stable")
        t_arr, y_arr = t_arr[keep][order], y_arr[keep][order]
        resolved = _resolve_direction(direction, y_arr)
        gaps = np.diff(np.unique(t_arr))
        return cls(
            t=t_arr,
            y=y_arr,
            direction=resolved,
            sign=1.0 if resolved == "rising" else -1.0,
            span=float(t_arr[-1] - t_arr[0]) if t_arr.size else 0.0,
            step=float(np.median(gaps)) if gaps.size else 0.0,
            yrange=float(np.ptp(y_arr)) if y_arr.size else 0.0,
        )

    def problem(self, n: int) -> str | None:
        """Why no N-component fit can be made, or None."""
        if self.t.size < 3 * n + 2:
            return (
                f"too few finite points: {self.t.size}, need at least {3 * n + 2} for "
                f"{n} component(s) (3N + 1 parameters and one residual degree of freedom)"
            )
        if self.span <= 0:
            return "t spans no time: every finite point has the same t"
        if self.yrange <= 1e-12 * max(1.0, float(np.max(np.abs(self.y)))):
            return "flat curve: y has zero variance, there is nothing to decompose"
        return None

    def bounds(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Bounds on the search vector [c, A_1..A_N, t_1, delta_2..delta_N, w_1..w_N]."""
        ys = self.sign * self.y
        lo_c, hi_c = ys.min() - self.yrange, ys.max() + self.yrange
        margin = _CENTRE_MARGIN * self.span
        w_lo, w_hi = _WIDTH_FLOOR_STEPS * self.step, self.span
        lower = np.r_[lo_c, np.zeros(n), self.t[0] - margin, np.zeros(n - 1), np.full(n, w_lo)]
        upper = np.r_[
            hi_c,
            np.full(n, _AMPLITUDE_CAP * self.yrange),
            self.t[-1] + margin,
            np.full(n - 1, self.span + 2 * margin),
            np.full(n, w_hi),
        ]
        return lower, upper


# --------------------------------------------------------------------------- fast search
# The search vector for N components is theta = [c, A_1..A_N, t_1, delta_2..delta_N,
# w_1..w_N] (3N + 1 values) on the rising curve sign * y: the lmfit parametrisation exactly.


def _unpack(theta: np.ndarray, n: int) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    centres = np.cumsum(theta[n + 1 : 2 * n + 1])  # t_1, t_1 + delta_2, ...
    return theta[0], theta[1 : n + 1], centres, theta[2 * n + 1 :]


def _pack(c: float, amps: Any, centres: Any, widths: Any) -> np.ndarray:
    """Search vector from per-component values given in any order (sorted here by centre)."""
    order = np.argsort(centres, kind="stable")
    amps, centres, widths = (np.asarray(v, dtype=float)[order] for v in (amps, centres, widths))
    return np.concatenate([[c], amps, centres[:1], np.diff(centres), widths])


def _sigmoids(t: np.ndarray, centres: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Logistic steps, shape (N, n); tanh form so that no exp overflows."""
    z = (t[None, :] - centres[:, None]) / widths[:, None]
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _progress(frame: _Frame) -> np.ndarray:
    """Monotone fraction of the rise completed at each t, shape (n,), from 0 to 1."""
    ys = frame.sign * frame.y
    k = min(5, ys.size - (1 - ys.size % 2))  # odd running-median window: noise, not the rise
    padded = np.pad(ys, k // 2, mode="edge")
    smooth = np.median(np.lib.stride_tricks.sliding_window_view(padded, k), axis=1)
    envelope = np.maximum.accumulate(smooth)
    rise = envelope[-1] - envelope[0]
    return (envelope - envelope[0]) / rise if rise > 0 else np.linspace(0.0, 1.0, ys.size)


def _time_at(frame: _Frame, progress: np.ndarray, level: float) -> float:
    return float(frame.t[np.argmax(progress >= level)])


def _starts(frame: _Frame, n: int, previous: np.ndarray | None) -> list[np.ndarray]:
    """A few starting vectors for N components: quantile-spread and grown from N - 1."""
    p = _progress(frame)
    ys = frame.sign * frame.y
    c0 = float(np.min(ys))
    # A logistic rises from 10% to 90% over 4.4 widths; N processes share the rise.
    rise = _time_at(frame, p, 0.9) - _time_at(frame, p, 0.1)
    w0 = max(rise / 4.4, frame.step) / n
    centres = [_time_at(frame, p, (i + 0.5) / n) for i in range(n)]
    amps = np.full(n, frame.yrange / n)
    if previous is None:
        return [_pack(c0, amps, centres, np.full(n, w)) for w in (w0, 3.0 * w0)]
    return [_pack(c0, amps, centres, np.full(n, w0))] + _grown(frame, previous, n - 1)


def _grown(frame: _Frame, previous: np.ndarray, m: int) -> list[np.ndarray]:
    """Starts for m + 1 components from the best m-component fit: split one, or add one."""
    c, amps, centres, widths = _unpack(previous, m)
    big = int(np.argmax(amps))
    # Split the largest process into a faster and a slower half around its centre.
    split = _pack(
        c,
        np.r_[np.delete(amps, big), amps[big] / 2, amps[big] / 2],
        np.r_[np.delete(centres, big), centres[big] - widths[big], centres[big] + widths[big]],
        np.r_[np.delete(widths, big), widths[big] / 2, widths[big] * 1.5],
    )
    # Add a small process where the fit misses most: the largest smoothed residual.
    resid = frame.sign * frame.y - (c + amps @ _sigmoids(frame.t, centres, widths))
    k = min(5, resid.size)
    smooth = np.convolve(resid, np.ones(k) / k, mode="same")
    where = frame.t[int(np.argmax(np.abs(smooth)))]
    added = _pack(
        c,
        np.r_[amps, 0.1 * frame.yrange],
        np.r_[centres, where],
        np.r_[widths, max(frame.step, np.median(widths))],
    )
    return [split, added]


class _Problem:
    """Least squares for N components on the rising curve ``sign * y``, in lmfit's box.

    The free variables ``u`` map into the bounds as lmfit's ``leastsq`` maps them (MINUIT's
    sine rule): ``theta = lower + (upper - lower) * (sin(u) + 1) / 2``, which lets a parameter
    settle exactly on a bound. :meth:`residual` and :meth:`jacobian` are MINPACK's callbacks,
    called ~40 times per solve: they share the sigmoids of the last point and write the
    Jacobian transposed (``col_deriv``, MINPACK's own layout) into one array.
    """

    __slots__ = (
        "n", "t", "ys", "lower", "upper", "width", "half", "_key", "_theta", "_centres", "_s"
    )

    def __init__(self, frame: _Frame, n: int) -> None:
        self.n = n
        self.t = frame.t
        self.ys = frame.sign * frame.y
        self.lower, self.upper = frame.bounds(n)
        self.width = self.upper - self.lower
        self.half = self.width / 2.0
        self._key = b""

    def theta(self, u: np.ndarray) -> np.ndarray:
        return self.lower + self.width * (np.sin(u) + 1.0) / 2.0

    def internal(self, theta: np.ndarray) -> np.ndarray:
        """The free variables of a point in the box (lmfit's ``setup_bounds``)."""
        return np.arcsin(np.clip(2.0 * (theta - self.lower) / self.width - 1.0, -1.0, 1.0))

    def _at(self, u: np.ndarray) -> None:
        key = u.tobytes()
        if key != self._key:
            n = self.n
            theta = self.theta(u)
            centres = theta[n + 1 : 2 * n + 1].cumsum()  # t_1, t_1 + delta_2, ...
            self._theta, self._centres = theta, centres
            self._s = _sigmoids(self.t, centres, theta[2 * n + 1 :])
            self._key = key

    def residual(self, u: np.ndarray) -> np.ndarray:
        self._at(u)
        return self._theta[0] + self._theta[1 : self.n + 1] @ self._s - self.ys

    def jacobian(self, u: np.ndarray) -> np.ndarray:
        """d residual / d u, transposed: shape (3N + 1, n_points)."""
        self._at(u)
        n, theta, s = self.n, self._theta, self._s
        amps, widths = theta[1 : n + 1, None], theta[2 * n + 1 :, None]
        grad = (self.width * np.cos(u) / 2.0)[:, None]  # d theta / d u
        jac = np.empty((3 * n + 1, self.t.size))
        jac[0] = grad[0]
        np.multiply(s, grad[1 : n + 1], out=jac[1 : n + 1])
        d_centre = -(amps * s * (1.0 - s) / widths)  # minus d/dt of each component
        # t_1 moves every centre; delta_k moves centres k..N: reverse cumulative sums.
        d_shift = d_centre[::-1].cumsum(axis=0)[::-1]
        np.multiply(d_shift, grad[n + 1 : 2 * n + 1], out=jac[n + 1 : 2 * n + 1])
        d_width = d_centre * (self.t - self._centres[:, None]) / widths
        np.multiply(d_width, grad[2 * n + 1 :], out=jac[2 * n + 1 :])
        return jac


def _solve(problem: _Problem, start: np.ndarray) -> tuple[float, np.ndarray]:
    """Least squares from one start; returns (cost, theta).

    MINPACK's Levenberg-Marquardt (scipy ``leastsq``) with the analytic Jacobian runs in
    C between our NumPy calls, ~10x faster per iteration than the bounded ``least_squares``.
    """
    # full_output silences leastsq's warning: an unconverged start is only a worse candidate.
    # ftol = xtol = 1e-6: chi-square to 1e-6 relative, well inside the parameters' errors.
    u, _, info, _, _ = leastsq(
        problem.residual,
        problem.internal(start),
        Dfun=problem.jacobian,
        col_deriv=True,
        full_output=True,
        ftol=1e-6,
        xtol=1e-6,
        maxfev=_MAX_NFEV_SEARCH,
    )
    return 0.5 * float(np.sum(info["fvec"] ** 2)), problem.theta(u)


def _search(frame: _Frame, n_max: int) -> dict[int, np.ndarray]:
    """Best search vector for each N = 1..n_max that can be fitted; N - 1 seeds N."""
    best: dict[int, np.ndarray] = {}
    for n in range(1, n_max + 1):
        if frame.problem(n) is not None:
            break
        problem = _Problem(frame, n)
        solutions = [_solve(problem, s) for s in _starts(frame, n, best.get(n - 1))]
        best[n] = min(solutions, key=lambda cs: cs[0])[1]
    return best


# --------------------------------------------------------------------------- final statistics
# The search optimum used to go through lmfit's Model.fit (leastsq, analytic Jacobian) for its
# standard errors, AIC and BIC. That Jacobian had the wrong sign (lmfit's Model residual is
# data - model), so Levenberg-Marquardt could not improve on the start and lmfit returned it,
# its statistics evaluated there, after ~5 ms of Python per N (four deep copies of the
# Parameters, error propagation through asteval): more than the whole search. _finish computes
# the same statistics directly, by lmfit's recipe, at the search optimum; tests/test_lld.py
# checks them against lmfit's own fit of the model of record.

_TINY = 1e-15  # lmfit's "tiny": internal values below it are set to 0


@dataclasses.dataclass(frozen=True)
class _Final:
    """The fit of one N on the rising curve ``sign * y``, with lmfit's statistics."""

    theta: np.ndarray  # (3N + 1,): [c, A_1..A_N, t_1, delta_2..delta_N, w_1..w_N]
    stderr: np.ndarray  # (3N + 1,): of c, A_i, centre t_i (not delta), w_i; NaN if not known
    chisqr: float
    aic: float
    bic: float


def _finish(frame: _Frame, n: int, theta: np.ndarray) -> _Final:
    """lmfit's (``Minimizer.leastsq``, ``create_uvars``) statistics of the fit ``theta``.

    - lmfit's start: each value clipped 1e-9 of its range inside the bounds, mapped to the free
      variable ``u`` and back (its sine transform);
    - ``chi2 = sum(residual**2)``; ``aic = n log(chi2 / n) + 2 nvarys`` and
      ``bic = n log(chi2 / n) + log(n) nvarys`` with ``nvarys = 3N + 1`` (lmfit's definitions);
    - ``covar = cov_x * outer(g, g) * redchi``, ``redchi = chi2 / (n - nvarys)``, where
      ``cov_x = (R^T R)^-1`` from the pivoted QR of the Jacobian in ``u`` (MINPACK's and
      scipy's ``leastsq``: none when R is singular) and ``g = d theta / d u`` (lmfit's
      ``_int2ext_cov_x``); standard errors ``sqrt(diag(covar))``;
    - centres ``t_k = t_1 + delta_2 + .. + delta_k`` (lmfit expressions) get the error
      propagated as the ``uncertainties`` package does: see :func:`_centre_stderr`.
    """
    problem = _Problem(frame, n)
    pad = 1e-9 * (problem.upper - problem.lower)  # lmfit's start strictly inside its bounds
    u = problem.internal(np.clip(theta, problem.lower + pad, problem.upper - pad))
    u[np.abs(u) < _TINY] = 0.0
    resid = problem.residual(u)
    ndata, nvarys = resid.size, u.size
    chisqr = float(resid @ resid)
    neg2_log_likelihood = ndata * math.log(max(chisqr, 1e-250 * ndata) / ndata)
    cov_u = _cov_x(problem.jacobian(u))
    if cov_u is None:
        stderr = np.full(nvarys, np.nan)
    else:
        grad = problem.half * np.cos(u)
        redchi = chisqr / max(1, ndata - nvarys)
        with np.errstate(invalid="ignore"):
            stderr = _centre_stderr(cov_u * np.outer(grad, grad) * redchi, n)
    return _Final(
        theta=problem.theta(u),
        stderr=stderr,
        chisqr=chisqr,
        aic=neg2_log_likelihood + 2 * nvarys,
        bic=neg2_log_likelihood + math.log(ndata) * nvarys,
    )


def _cov_x(jac_t: np.ndarray) -> np.ndarray | None:
    """``(J^T J)^-1`` as scipy's ``leastsq`` builds ``cov_x``, from ``J^T`` (params, points).

    Pivoted QR, ``J P = Q R``; the triangular inverse of R (LAPACK ``trtri``) fails, and the
    covariance is None, exactly when R has a zero on its diagonal.
    """
    r, perm = qr(jac_t.T, mode="r", pivoting=True)
    inv_r, info = lapack.dtrtri(r[: r.shape[1]])
    if info != 0 or not np.all(np.isfinite(inv_r)):
        return None
    inv_r[perm] = inv_r.copy()
    return inv_r @ inv_r.T


def _centre_stderr(covar: np.ndarray, n: int) -> np.ndarray:
    """Standard errors of c, A_i, t_i, w_i from the covariance of c, A_i, t_1, delta_i, w_i.

    The centres t_2..t_N are sums ``t_1 + delta_2 + .. + delta_k``. lmfit propagates their
    errors with ``uncertainties.correlated_values``: ``x = value + (V * std) (sqrt(lam) e)``,
    ``e ~ N(0, I)``, with ``lam, V`` the eigen-decomposition of the correlation matrix and
    negative ``lam`` set to 0 (equal to ``sqrt(a^T covar a)`` when covar is positive
    definite); when that fails, lmfit leaves those errors at 0.
    """
    stderr = np.sqrt(np.diag(covar))
    if n == 1:
        return stderr
    norm = np.where(stderr == 0, 1.0, stderr)
    try:
        lam, vec = np.linalg.eigh(covar / norm / norm[:, None])
    except (np.linalg.LinAlgError, ValueError):
        stderr[n + 2 : 2 * n + 1] = 0.0
        return stderr
    loadings = vec * stderr[:, None] * np.sqrt(np.maximum(lam, 0.0))  # (params, variables)
    centres = np.cumsum(loadings[n + 1 : 2 * n + 1], axis=0)[1:]  # rows of t_2..t_N
    stderr[n + 2 : 2 * n + 1] = np.sqrt(np.sum(centres * centres, axis=1))
    return stderr


# --------------------------------------------------------------------------- lmfit model
# The model of record in lmfit's terms: tests/test_lld.py fits it with lmfit itself and checks
# _finish against the result.


@functools.lru_cache(maxsize=16)
def _model(n: int):
    """The composite lmfit model c + sum of N logistic steps (built once per N)."""
    model = ConstantModel(prefix="c_")
    for i in range(1, n + 1):
        model = model + StepModel(form="logistic", prefix=f"l{i}_")
    return model


def _names(n: int) -> list[str]:
    """lmfit parameter names in search-vector order."""
    return (
        ["c_c"]
        + [f"l{i}_amplitude" for i in range(1, n + 1)]
        + ["l1_center"]
        + [f"l{i}_delta" for i in range(2, n + 1)]
        + [f"l{i}_sigma" for i in range(1, n + 1)]
    )


def _params(frame: _Frame, n: int, theta: np.ndarray) -> Parameters:
    """lmfit Parameters at theta; c and amplitudes flip sign for a falling curve."""
    lower, upper = frame.bounds(n)
    flip = np.zeros(3 * n + 1, dtype=bool)
    flip[: n + 1] = frame.sign < 0
    lower, upper = np.where(flip, -upper, lower), np.where(flip, -lower, upper)
    values = np.where(flip, -theta, theta)
    params = _model(n).make_params()
    for i in range(2, n + 1):
        params.add(f"l{i}_delta")
    for name, value, lo, hi in zip(_names(n), values, lower, upper):
        pad = 1e-9 * (hi - lo)  # lmfit's start strictly inside its bounds
        params[name].set(value=float(np.clip(value, lo + pad, hi - pad)), min=lo, max=hi)
    for i in range(2, n + 1):
        # Ordered centres: each starts where the previous one is, plus a gap >= 0.
        params[f"l{i}_center"].set(expr=f"l{i - 1}_center + l{i}_delta")
    return params


def _result(frame: _Frame, n: int, theta: np.ndarray | None) -> LLDResult:
    problem = frame.problem(n)
    if problem is not None or theta is None:
        return _failed(frame, n, problem or "no fit was made")
    final = _finish(frame, n, theta)
    if not np.all(np.isfinite(final.theta)) or not math.isfinite(final.chisqr):
        return _failed(frame, n, "the least-squares fit produced non-finite values")
    c, amps, centres, widths = _unpack(final.theta, n)
    stderr = final.stderr
    # lmfit's parameters are those of the curve itself: c and amplitudes flip for a falling one.
    components = sorted(
        (
            {
                "amplitude": float(frame.sign * amps[i]),
                "center": float(centres[i]),
                "width": float(widths[i]),
                "amplitude_stderr": float(stderr[1 + i]),
                "center_stderr": float(stderr[n + 1 + i]),
                "width_stderr": float(stderr[2 * n + 1 + i]),
            }
            for i in range(n)
        ),
        key=lambda comp: comp["center"],
    )
    constant = float(frame.sign * c)
    parts = _component_curves(frame.t, components)
    curve = constant + parts.sum(axis=0)
    r2 = 1.0 - np.sum((frame.y - curve) ** 2) / np.sum((frame.y - frame.y.mean()) ** 2)
    degenerate = _degenerate(frame, n, components)
    message = f"{n} logistic component(s), R^2 = {r2:.4f}"
    if degenerate:
        message += "; degenerate: " + "; ".join(degenerate)
    return LLDResult(
        n_components=n,
        direction=frame.direction,
        success=True,
        message=message,
        r2=float(r2),
        aic=float(final.aic),
        bic=float(final.bic),
        constant=constant,
        constant_stderr=float(stderr[0]),
        components=components,
        degenerate=tuple(degenerate),
        t=_frozen(frame.t),
        y=_frozen(frame.y),
        curve=_frozen(curve),
        component_curves=_frozen(parts),
    )


def _failed(frame: _Frame, n: int, message: str) -> LLDResult:
    return LLDResult(
        n_components=n,
        direction=frame.direction,
        success=False,
        message=message,
        r2=math.nan,
        aic=math.nan,
        bic=math.nan,
        constant=math.nan,
        constant_stderr=math.nan,
        components=[],
        degenerate=(),
        t=_frozen(frame.t),
        y=_frozen(frame.y),
        curve=_frozen(np.full(frame.t.shape, np.nan)),
        component_curves=_frozen(np.empty((0, frame.t.size))),
    )


def _component_curves(t: np.ndarray, components: list[dict[str, float]]) -> np.ndarray:
    """Each component's curve on t, shape (N, len(t)), by lmfit's own logistic step."""
    with np.errstate(over="ignore"):
        rows = [
            step(t, amplitude=c["amplitude"], center=c["center"], sigma=c["width"], form="logistic")
            for c in components
        ]
    return np.array(rows, dtype=float).reshape(len(components), t.size)


def _degenerate(frame: _Frame, n: int, components: list[dict[str, float]]) -> list[str]:
    """Reasons, one per degenerate component (1-based, in centre order)."""
    lower, upper = frame.bounds(n)
    w_lo, w_hi = lower[-1], upper[-1]
    floor = MIN_AMPLITUDE_FRACTION * frame.yrange
    reasons = []
    for k, comp in enumerate(components, start=1):
        a, ctr, w = abs(comp["amplitude"]), comp["center"], comp["width"]
        if a < floor:
            reasons.append(
                f"component {k}: amplitude {a:.3g} < {MIN_AMPLITUDE_FRACTION:.0%} of the range "
                f"{frame.yrange:.3g}"
            )
        elif w <= w_lo * (1 + _AT_BOUND):
            reasons.append(f"component {k}: width {w:.3g} at its lower bound (unresolved step)")
        elif w >= w_hi * (1 - _AT_BOUND):
            reasons.append(f"component {k}: width {w:.3g} at its upper bound (the whole span)")
        elif not frame.t[0] <= ctr <= frame.t[-1]:
            reasons.append(
                f"component {k}: centre {ctr:.3g} outside the data [{frame.t[0]:.3g}, "
                f"{frame.t[-1]:.3g}]"
            )
    return reasons


def _choose(fits: dict[int, LLDResult]) -> tuple[int, str]:
    ok = {n: r for n, r in fits.items() if r.success}
    clean = {n: r for n, r in ok.items() if not r.degenerate}
    if clean:
        n = min(clean, key=lambda k: (clean[k].bic, k))
        skipped = sorted(set(ok) - set(clean))
        note = f"; skipped N = {skipped} (degenerate components)" if skipped else ""
        return n, f"lowest BIC ({clean[n].bic:.2f}) among non-degenerate fits{note}"
    if ok:
        n = min(ok)
        return n, f"every fit has a degenerate component: the smallest, N = {n}"
    return 1, f"no fit succeeded: {fits[1].message}"


# --------------------------------------------------------------------------- small helpers


def _frozen(arr: np.ndarray) -> np.ndarray:
    out = np.array(arr, dtype=float)
    out.setflags(write=False)
    return out


