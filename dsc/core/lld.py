"""Logistic learning decomposition (LLD): a learning curve as a sum of logistic processes.

Hanson et al. (2023, figures 11/12) fit the accuracy curve of a dense-sample network by

    y(t) = c + sum_{i=1..N} A_i / (1 + exp(-(t - t_i) / w_i))

and read each term as one learning process: fast ones early, slow ones later. One logistic
explains ~94% of their curve's variance, two explain ~99%.

The model of record is lmfit's composition ``ConstantModel(prefix='c_') +
StepModel(form='logistic', prefix='l1_') + ...``: lmfit's logistic step is
``amplitude * (1 - 1/(1 + exp((t - center)/sigma)))``, the term above with ``sigma = w``.
A falling curve (a loss) gets amplitudes ``<= 0``.

Centres are kept in order by lmfit expressions, ``l{i+1}_center = l{i}_center + l{i+1}_delta``
with ``delta >= 0`` (`dsc.core.lld_model`).

Each N is fitted in two stages: the fast search (`dsc.core.lld_search`) tries a few starts
per N outside lmfit, where one ``Model.fit`` per start would cost more than the whole search;
lmfit's ``Model.fit`` (``leastsq`` with the model's analytic Jacobian) then fits the composite
model from the best of them, and its ``ModelResult`` gives the values, standard errors (those
of centres 2..N propagated through the expressions), AIC, BIC and R^2.

:func:`select` also weighs N = 0, the constant alone (lmfit's ``ConstantModel``, one free
parameter), by the same BIC: a curve without a learning process (flat at chance, noise only)
selects ``n == 0`` and a ``best`` without components.

Public API: :func:`fit` (one N), :func:`select` (N = 0..K, chosen by BIC), :class:`LLDResult`,
:class:`Selection`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import numpy as np
from lmfit.lineshapes import step
from lmfit.models import ConstantModel

from dsc.core import lld_model
from dsc.core.jsonsafe import jsonable
from dsc.core.lld_search import DIRECTIONS, MIN_AMPLITUDE_FRACTION, Frame, search

__all__ = ["DIRECTIONS", "MIN_AMPLITUDE_FRACTION", "LLDResult", "Selection", "fit", "select"]


@dataclasses.dataclass(frozen=True, eq=False)
class LLDResult:
    """One logistic decomposition of a curve.

    Attributes
    ----------
    n_components : int
        Number N of logistic components asked for; 0 for the constant alone (`select`'s
        baseline).
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
        3N + 1 free parameters), from its ``ModelResult``; NaN when no fit was made.
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
        if not self.success:
            return np.full(x.shape, np.nan)
        return self.constant + _component_curves(x, self.components).sum(axis=0)

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain JSON types: floats, lists, NaN and inf as None."""
        return jsonable({field.name: getattr(self, field.name) for field in dataclasses.fields(self)})


@dataclasses.dataclass(frozen=True, eq=False)
class Selection:
    """Fits with N = 0..K components and the N chosen by BIC.

    Attributes
    ----------
    n : int
        The chosen number of components; 0 when the constant alone wins (no learning process).
    best : LLDResult
        ``fits[n]``, or ``baseline`` when ``n == 0`` (its ``components`` are ``[]``).
    fits : dict of int to LLDResult
        Every logistic fit, keyed by N = 1..K.
    reason : str
        Why ``n`` was chosen, in words.
    baseline : LLDResult or None
        The N = 0 fit, the constant alone (``success=False`` for a curve of zero variance or
        under two points).
    """

    n: int
    best: LLDResult
    fits: dict[int, LLDResult]
    reason: str
    baseline: LLDResult | None = None

    @property
    def no_process(self) -> bool:
        """True when the constant alone was chosen: the curve has no learning process."""
        return self.n == 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary: ``n``, ``reason``, ``best``, the baseline and every fit (keys as str)."""
        return {
            "n": self.n,
            "reason": self.reason,
            "best": self.best.to_dict(),
            "baseline": None if self.baseline is None else self.baseline.to_dict(),
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
    frame = Frame.build(t, y, direction)
    thetas = search(frame, n_components)
    return _result(frame, n_components, thetas.get(n_components))


def select(t: Any, y: Any, max_components: int = 4, direction: str = "auto") -> Selection:
    """Fit N = 0..max_components components and choose N by BIC.

    A fit competes only if it succeeded and none of its components is degenerate (amplitude
    below 2% of the curve's range, width at a bound, centre outside the data): an extra
    component that explains noise never beats the smaller fit. Among those, the lowest BIC
    wins. If none qualifies, the smallest successful N is chosen (or N = 1 if none succeeded).
    The constant alone (N = 0) then replaces that choice when its BIC is no higher: the
    logistics do not pay for their three parameters each, and the curve has no learning
    process. A constant curve (zero variance) is N = 0 outright. Otherwise N = 0 is weighed
    only against a successful fit, so a curve too short for any logistic keeps the failed N = 1.

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
    frame = Frame.build(t, y, direction)
    thetas = search(frame, max_components)
    fits = {n: _result(frame, n, thetas.get(n)) for n in range(1, max_components + 1)}
    baseline = _constant_only(frame)
    n, reason = _choose(fits, baseline)
    return Selection(n=n, best=baseline if n == 0 else fits[n], fits=fits, reason=reason, baseline=baseline)


# --------------------------------------------------------------------------- validation


def _check_count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------- results


def _reported(n: int) -> list[str]:
    """Names of c, then of each of amplitude, center, sigma for components 1..N."""
    return ["c_c"] + [f"l{i}_{k}" for k in ("amplitude", "center", "sigma") for i in range(1, n + 1)]


def _result(frame: Frame, n: int, theta: np.ndarray | None) -> LLDResult:
    problem = frame.problem(n)
    if problem is not None or theta is None:
        return _failed(frame, n, problem or "no fit was made")
    fitted = lld_model.fit(frame, n, theta)
    params = fitted.params
    values = np.array([params[name].value for name in _reported(n)])
    if not fitted.success or not np.all(np.isfinite(values)) or not math.isfinite(fitted.chisqr):
        return _failed(frame, n, f"lmfit's fit failed: {fitted.message}")
    # None (no error bars: a singular covariance) becomes NaN.
    stderr = np.array([params[name].stderr for name in _reported(n)], dtype=float)
    keys = ("amplitude", "center", "width")
    rows = [[1 + j * n + i for j in range(len(keys))] for i in range(n)]
    components = sorted(
        (
            {k: float(values[r]) for k, r in zip(keys, row)}
            | {f"{k}_stderr": float(stderr[r]) for k, r in zip(keys, row)}
            for row in rows
        ),
        key=lambda comp: comp["center"],
    )
    constant = float(values[0])
    parts = _component_curves(frame.t, components)
    r2 = float(fitted.rsquared)
    degenerate = frame.degenerate(components)
    message = f"{n} logistic component(s), R^2 = {r2:.4f}"
    if degenerate:
        message += "; degenerate: " + "; ".join(degenerate)
    return LLDResult(
        n_components=n,
        direction=frame.direction,
        success=True,
        message=message,
        r2=r2,
        aic=float(fitted.aic),
        bic=float(fitted.bic),
        constant=constant,
        constant_stderr=float(stderr[0]),
        components=components,
        degenerate=tuple(degenerate),
        t=_frozen(frame.t),
        y=_frozen(frame.y),
        curve=_frozen(constant + parts.sum(axis=0)),
        component_curves=_frozen(parts),
    )


def _constant_only(frame: Frame) -> LLDResult:
    """The N = 0 fit: lmfit's ``ConstantModel`` (one free parameter) on the finite points."""
    problem = frame.problem(0)
    failed = _failed(frame, 0, problem or "")
    if problem is not None:
        return failed
    if frame.flat:  # exact: lmfit's R² would be 0/0 and its BIC log(0)
        c = float(np.mean(frame.y))
        return dataclasses.replace(
            failed,
            success=True,
            message="no learning process: the curve is constant",
            r2=1.0,
            aic=-math.inf,
            bic=-math.inf,
            constant=c,
            constant_stderr=0.0,
            curve=_frozen(np.full(frame.t.shape, c)),
        )
    model = ConstantModel(prefix="c_")
    fitted = model.fit(frame.y, model.make_params(c=float(np.mean(frame.y))), x=frame.t)
    c = fitted.params["c_c"]
    return dataclasses.replace(
        failed,
        success=True,
        message="no learning process: the constant alone",
        r2=float(fitted.rsquared),
        aic=float(fitted.aic),
        bic=float(fitted.bic),
        constant=float(c.value),
        constant_stderr=math.nan if c.stderr is None else float(c.stderr),
        curve=_frozen(np.full(frame.t.shape, c.value)),
    )


def _failed(frame: Frame, n: int, message: str) -> LLDResult:
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
            step(t, amplitude=c["amplitude"], center=c["center"], sigma=c["width"], form="logistic") for c in components
        ]
    return np.array(rows, dtype=float).reshape(len(components), t.size)


def _choose(fits: dict[int, LLDResult], baseline: LLDResult | None = None) -> tuple[int, str]:
    """(N, why) by the rules of `select`; ``baseline`` is the N = 0 fit, if made."""
    ok = {n: r for n, r in fits.items() if r.success}
    clean = {n: r for n, r in ok.items() if not r.degenerate}
    if clean:
        n = min(clean, key=lambda k: (clean[k].bic, k))
        skipped = sorted(set(ok) - set(clean))
        note = f"; skipped N = {skipped} (degenerate components)" if skipped else ""
        reason = f"lowest BIC ({clean[n].bic:.2f}) among non-degenerate fits{note}"
    elif ok:
        n = min(ok)
        reason = f"every fit has a degenerate component: the smallest, N = {n}"
    elif baseline is not None and baseline.success and baseline.bic == -math.inf:
        return 0, "no learning process: the curve is constant"
    else:
        return 1, f"no fit succeeded: {fits[1].message}"
    if baseline is not None and baseline.success and baseline.bic <= ok[n].bic:
        return 0, (
            f"no learning process: the constant alone has the lowest BIC ({baseline.bic:.2f}, "
            f"against {ok[n].bic:.2f} for N = {n})"
        )
    return n, reason


# --------------------------------------------------------------------------- small helpers


def _frozen(arr: np.ndarray) -> np.ndarray:
    out = np.array(arr, dtype=float)
    out.setflags(write=False)
    return out
