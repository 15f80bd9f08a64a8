"""The logistic learning decomposition's model of record, in lmfit's terms, and its fit.

``ConstantModel(prefix='c_') + StepModel(form='logistic', prefix='l1_') + ...``, with the
centres kept in order by lmfit expressions, ``l{i}_center = l{i-1}_center + l{i}_delta``,
``delta >= 0``: the parametrisation of the search (`dsc.core.lld.search`), so that its optimum
starts lmfit's ``Model.fit`` at a point that lmfit only has to polish.
"""

from __future__ import annotations

import functools

import numpy as np
from lmfit import Parameters
from lmfit.model import Model, ModelResult
from lmfit.models import ConstantModel, StepModel

from dsc.core.lld.search import Frame, derivatives, sigmoids, unpack

# Relative tolerance on chi-square and on the parameters: the search's, far inside the errors.
TOL = 1e-6
# Started at the search's optimum, a fit converges in a few evaluations; this caps one that
# does not (lmfit then reports it unsuccessful).
MAX_NFEV = 200


@functools.lru_cache(maxsize=16)
def model(n: int) -> Model:
    """The composite lmfit model c + sum of N logistic steps (built once per N)."""
    composite = ConstantModel(prefix="c_")
    for i in range(1, n + 1):
        composite = composite + StepModel(form="logistic", prefix=f"l{i}_")
    return composite


def free_names(n: int) -> list[str]:
    """Names of the free parameters in search-vector order (c, A_i, t_1, delta_i, w_i)."""
    return (
        ["c_c"]
        + [f"l{i}_amplitude" for i in range(1, n + 1)]
        + ["l1_center"]
        + [f"l{i}_delta" for i in range(2, n + 1)]
        + [f"l{i}_sigma" for i in range(1, n + 1)]
    )


def params(frame: Frame, n: int, theta: np.ndarray) -> Parameters:
    """lmfit Parameters at the search vector theta (3N + 1,), in the search's bounds.

    The free ones in search-vector order, then the centres 2..N by expression. c and the
    amplitudes flip sign for a falling curve (lmfit fits the curve itself). Values start 1e-9
    of their range inside the bounds: on a bound, lmfit's sine transform has no slope and
    gives no error bar.
    """
    lower, upper = frame.bounds(n)
    flip = np.r_[np.full(n + 1, frame.sign < 0), np.zeros(2 * n, dtype=bool)]
    lower, upper = np.where(flip, -upper, lower), np.where(flip, -lower, upper)
    values = np.where(flip, -theta, theta)
    out = Parameters()
    for name, value, lo, hi in zip(free_names(n), values, lower, upper):
        pad = 1e-9 * (hi - lo)
        out.add(name, value=float(np.clip(value, lo + pad, hi - pad)), min=lo, max=hi)
    for i in range(2, n + 1):
        out.add(f"l{i}_center", expr=f"l{i - 1}_center + l{i}_delta")
    return out


def jacobian(pars: Parameters, data: np.ndarray, weights: None, x: np.ndarray) -> np.ndarray:
    """lmfit's ``Dfun``: d (data - model) / d free parameters, shape (3N + 1, len(x))."""
    n = len(pars) // 4  # 3N + 1 free parameters, then N - 1 centres by expression
    theta = np.array([p.value for p in pars.values()][: 3 * n + 1])
    _, amps, centres, widths = unpack(theta, n)
    return -derivatives(x, sigmoids(x, centres, widths), amps, centres, widths)


def fit(frame: Frame, n: int, theta: np.ndarray) -> ModelResult:
    """lmfit's ``Model.fit`` (``leastsq``, analytic Jacobian) of N components from theta."""
    fit_kws = {"Dfun": jacobian, "col_deriv": True, "ftol": TOL, "xtol": TOL}
    start = params(frame, n, theta)
    return model(n).fit(frame.y, start, x=frame.t, max_nfev=MAX_NFEV, fit_kws=fit_kws)
