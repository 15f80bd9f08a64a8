"""The fast multi-start search behind the logistic learning decomposition (`dsc.core.lld`).

`search` fits ``c + sum_i A_i / (1 + exp(-(t - t_i)/w_i))`` for N = 1..K components from a
few starting points per N (quantile-spread, and grown from the best N - 1 fit), by MINPACK's
Levenberg-Marquardt (scipy ``leastsq``) with an analytic Jacobian: one lmfit ``Model.fit`` per
start would cost more than the whole search. Its optima start lmfit's final fit in
`dsc.core.lld`.

The search vector for N components is ``theta = [c, A_1..A_N, t_1, delta_2..delta_N,
w_1..w_N]`` (3N + 1 values) on the rising curve ``sign * y``: centres ``t_k = t_1 + delta_2 +
.. + delta_k`` with every ``delta >= 0`` stay in order, so the starts cannot swap components.
Bounds (`Frame.bounds`) are kept by lmfit's own sine transform of the free variables.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from scipy.ndimage import median_filter
from scipy.optimize import leastsq

DIRECTIONS = ("auto", "rising", "falling")
# A component smaller than this fraction of the curve's range is indistinguishable from noise.
MIN_AMPLITUDE_FRACTION = 0.02
# A parameter within this relative distance of a bound is "at" the bound.
_AT_BOUND = 1e-2
# Narrowest width, in sampling steps: a sharper rise falls between two samples and its width
# cannot be measured.
_WIDTH_FLOOR_STEPS = 0.25
# Centres may sit this fraction of the span outside the data: a process already under way at
# the first sample, or still rising at the last, is real but only partly seen.
_CENTRE_MARGIN = 0.1
# No single process rises by more than this many times the observed range.
_AMPLITUDE_CAP = 3.0
_MAX_NFEV_SEARCH = 200  # per start: converged fits take 10-60 evaluations
# The best start goes on to convergence, slow along the flat valley of a nearly degenerate
# component, so that lmfit's fit starts where it has little left to do.
_MAX_NFEV_POLISH = 2000


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
class Frame:
    """The finite data, sorted by t, and the scales that set bounds and starts."""

    t: np.ndarray  # (n,)
    y: np.ndarray  # (n,)
    direction: str
    sign: float  # +1 rising, -1 falling: the search fits sign * y, always rising
    span: float  # t[-1] - t[0]
    step: float  # median spacing of distinct t
    yrange: float  # peak-to-peak of y

    @classmethod
    def build(cls, t: Any, y: Any, direction: str) -> Frame:
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
            what = f"{n} component(s)" if n else "the constant alone"
            return (
                f"too few finite points: {self.t.size}, need at least {3 * n + 2} for "
                f"{what} (3N + 1 parameters and one residual degree of freedom)"
            )
        if self.span <= 0:
            return "t spans no time: every finite point has the same t"
        if n > 0 and self.flat:
            return "flat curve: y has zero variance, there is nothing to decompose"
        return None

    @property
    def flat(self) -> bool:
        """Whether y has zero variance (to rounding): the constant alone reproduces it."""
        return self.yrange <= 1e-12 * max(1.0, float(np.max(np.abs(self.y))))

    def degenerate(self, components: list[dict[str, float]]) -> list[str]:
        """Reasons, one per degenerate component (1-based, in the order given).

        ``components`` are dicts with ``amplitude``, ``center`` and ``width`` (see
        `dsc.core.lld.LLDResult`); degenerate means an amplitude below MIN_AMPLITUDE_FRACTION
        of the range, a width at a bound, or a centre outside the data.
        """
        lower, upper = self.bounds(len(components))
        w_lo, w_hi = lower[-1], upper[-1]
        floor = MIN_AMPLITUDE_FRACTION * self.yrange
        reasons = []
        for k, comp in enumerate(components, start=1):
            a, ctr, w = abs(comp["amplitude"]), comp["center"], comp["width"]
            if a < floor:
                reasons.append(
                    f"component {k}: amplitude {a:.3g} < {MIN_AMPLITUDE_FRACTION:.0%} of the range {self.yrange:.3g}"
                )
            elif w <= w_lo * (1 + _AT_BOUND):
                reasons.append(f"component {k}: width {w:.3g} at its lower bound (unresolved step)")
            elif w >= w_hi * (1 - _AT_BOUND):
                reasons.append(f"component {k}: width {w:.3g} at its upper bound (the whole span)")
            elif not self.t[0] <= ctr <= self.t[-1]:
                reasons.append(f"component {k}: centre {ctr:.3g} outside the data [{self.t[0]:.3g}, {self.t[-1]:.3g}]")
        return reasons

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


def unpack(theta: np.ndarray, n: int) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """(c, amplitudes (N,), centres (N,), widths (N,)) of a search vector."""
    centres = np.cumsum(theta[n + 1 : 2 * n + 1])  # t_1, t_1 + delta_2, ...
    return theta[0], theta[1 : n + 1], centres, theta[2 * n + 1 :]


def _pack(c: float, amps: Any, centres: Any, widths: Any) -> np.ndarray:
    """Search vector from per-component values given in any order (sorted here by centre)."""
    order = np.argsort(centres, kind="stable")
    amps, centres, widths = (np.asarray(v, dtype=float)[order] for v in (amps, centres, widths))
    return np.concatenate([[c], amps, centres[:1], np.diff(centres), widths])


def sigmoids(t: np.ndarray, centres: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Logistic steps, shape (N, n); tanh form so that no exp overflows."""
    z = (t[None, :] - centres[:, None]) / widths[:, None]
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def derivatives(t: np.ndarray, s: np.ndarray, amps: np.ndarray, centres: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """d model / d theta, the search vector [c, A_1..A_N, t_1, delta_2..delta_N, w_1..w_N].

    ``s`` holds the components' `sigmoids` on ``t``, shape (N, n); amplitudes, centres and
    widths are those of theta (shape (N,) each). Returns shape (3N + 1, n).
    """
    n = amps.size
    jac = np.empty((3 * n + 1, t.size))
    jac[0] = 1.0
    jac[1 : n + 1] = s
    d_centre = -(amps[:, None] * s * (1.0 - s) / widths[:, None])  # minus d/dt of each term
    # t_1 moves every centre; delta_k moves centres k..N: reverse cumulative sums.
    jac[n + 1 : 2 * n + 1] = d_centre[::-1].cumsum(axis=0)[::-1]
    jac[2 * n + 1 :] = d_centre * (t - centres[:, None]) / widths[:, None]
    return jac


def _progress(frame: Frame) -> np.ndarray:
    """Monotone fraction of the rise completed at each t, shape (n,), from 0 to 1."""
    ys = frame.sign * frame.y
    k = min(5, ys.size - (1 - ys.size % 2))  # odd running-median window: noise, not the rise
    envelope = np.maximum.accumulate(median_filter(ys, size=k, mode="nearest"))
    rise = envelope[-1] - envelope[0]
    return (envelope - envelope[0]) / rise if rise > 0 else np.linspace(0.0, 1.0, ys.size)


def _time_at(frame: Frame, progress: np.ndarray, level: float) -> float:
    return float(frame.t[np.argmax(progress >= level)])


def _starts(frame: Frame, n: int, previous: np.ndarray | None) -> list[np.ndarray]:
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
    return [_pack(c0, amps, centres, np.full(n, w0)), *_grown(frame, previous, n - 1)]


def _grown(frame: Frame, previous: np.ndarray, m: int) -> list[np.ndarray]:
    """Starts for m + 1 components from the best m-component fit: split one, or add one."""
    c, amps, centres, widths = unpack(previous, m)
    big = int(np.argmax(amps))
    # Split the largest process into a faster and a slower half around its centre.
    split = _pack(
        c,
        np.r_[np.delete(amps, big), amps[big] / 2, amps[big] / 2],
        np.r_[np.delete(centres, big), centres[big] - widths[big], centres[big] + widths[big]],
        np.r_[np.delete(widths, big), widths[big] / 2, widths[big] * 1.5],
    )
    # Add a small process where the fit misses most: the largest smoothed residual.
    resid = frame.sign * frame.y - (c + amps @ sigmoids(frame.t, centres, widths))
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


class Problem:
    """Least squares for N components on the rising curve ``sign * y``, in lmfit's box.

    The free variables ``u`` map into the bounds as lmfit's ``leastsq`` maps them (MINUIT's
    sine rule): ``theta = lower + (upper - lower) * (sin(u) + 1) / 2``, which lets a parameter
    settle exactly on a bound. :meth:`residual` and :meth:`jacobian` are MINPACK's callbacks,
    called ~40 times per solve: they share the sigmoids of the last point and return the
    Jacobian transposed (``col_deriv``, MINPACK's own layout).
    """

    __slots__ = ("_centres", "_key", "_s", "_theta", "lower", "n", "t", "upper", "width", "ys")

    def __init__(self, frame: Frame, n: int) -> None:
        self.n = n
        self.t = frame.t
        self.ys = frame.sign * frame.y
        self.lower, self.upper = frame.bounds(n)
        self.width = self.upper - self.lower
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
            self._s = sigmoids(self.t, centres, theta[2 * n + 1 :])
            self._key = key

    def residual(self, u: np.ndarray) -> np.ndarray:
        self._at(u)
        return self._theta[0] + self._theta[1 : self.n + 1] @ self._s - self.ys

    def jacobian(self, u: np.ndarray) -> np.ndarray:
        """d residual / d u, transposed: shape (3N + 1, n_points)."""
        self._at(u)
        n, theta = self.n, self._theta
        jac = derivatives(self.t, self._s, theta[1 : n + 1], self._centres, theta[2 * n + 1 :])
        jac *= (self.width * np.cos(u) / 2.0)[:, None]  # d theta / d u
        return jac


def _solve(problem: Problem, start: np.ndarray, maxfev: int) -> tuple[float, np.ndarray]:
    """Least squares from one start; returns (cost, theta).

    MINPACK's Levenberg-Marquardt (scipy ``leastsq``) with the analytic Jacobian runs in
    C between our NumPy calls, several times faster per iteration than the bounded
    ``least_squares``.
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
        maxfev=maxfev,
    )
    return 0.5 * float(np.sum(info["fvec"] ** 2)), problem.theta(u)


def search(frame: Frame, n_max: int) -> dict[int, np.ndarray]:
    """Best search vector (3N + 1,) for each N = 1..n_max that can be fitted; N - 1 seeds N."""
    best: dict[int, np.ndarray] = {}
    for n in range(1, n_max + 1):
        if frame.problem(n) is not None:
            break
        problem = Problem(frame, n)
        starts = _starts(frame, n, best.get(n - 1))
        solutions = [_solve(problem, s, _MAX_NFEV_SEARCH) for s in starts]
        best[n] = _solve(problem, min(solutions, key=lambda cs: cs[0])[1], _MAX_NFEV_POLISH)[1]
    return best
