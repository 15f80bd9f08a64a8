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
with ``delta >= 0`` (`dsc.core.lld.model`).

Each N is fitted in two stages: the fast search (`dsc.core.lld.search`) tries a few starts
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
from lmfit.models import ConstantModel

from dsc.core.lld import model as lld_model
from dsc.core.lld.results import LLDResult, Selection, component_curves
from dsc.core.lld.search import DIRECTIONS, MIN_AMPLITUDE_FRACTION, Frame, search

__all__ = ["DIRECTIONS", "MIN_AMPLITUDE_FRACTION", "LLDResult", "Selection", "fit", "select"]


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
    parts = component_curves(frame.t, components)
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
