"""How many learning processes the classes predict: two predictors of N from per-class fits.

The hypothesis: a network's aggregate learning curve has as many logistic processes as there
are groups of classes learned at distinguishable times. Each class's curve is decomposed on
its own (:func:`dsc.core.lld.batch.fit_curve`); its **main rise** is the chosen fit's
largest-amplitude component whose centre lies inside the data (as in
:func:`dsc.core.attribution.main_rise`). From these, two predictors of the aggregate N:

- :func:`class_clusters`: the classes' main rises grouped in time. Two classes are in one
  group when their centres lie within ``factor`` times the larger of their two widths
  (single linkage: a chain of such pairs is one group). ``CLUSTER_FACTOR`` = 2 widths, the
  span over which a logistic rises from 12% to 88% of its amplitude, the same window that
  :mod:`dsc.core.attribution` uses to assign a class to an aggregate process.
- :func:`n_from_classes`: the N that :func:`dsc.core.lld.select` (BIC) chooses for the
  class-weighted sum of the per-class *fitted* curves, sampled on the run's epochs with
  Gaussian noise of a given standard deviation (the job passes the run's own residual noise,
  scaled to the sum's range: the same signal-to-noise ratio as the run's curve). BIC on one
  noisy curve now and then pays for a spurious small component, so the noise is drawn
  ``NOISE_DRAWS`` times from fixed seeds and the N chosen most often is the answer
  (reproducible; ties go to the smaller N).

:func:`agreement` scores either predictor against the observed N over many runs: the share of
runs where they are equal and Spearman's rho with its p-value.

Everything here takes and returns plain NumPy arrays and dicts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from dsc.core import lld

CLUSTER_FACTOR = 2.0  # widths: see the module docstring
NOISE_DRAWS = 5  # noisy copies of the summed curve, drawn from seeds 0..NOISE_DRAWS-1

__all__ = [
    "CLUSTER_FACTOR",
    "NOISE_DRAWS",
    "Agreement",
    "agreement",
    "class_clusters",
    "main_rise",
    "n_from_classes",
    "summed_curve",
]


def main_rise(fit: Mapping[str, Any]) -> dict[str, float] | None:
    """The largest-amplitude component of a fit's chosen N, or None.

    Parameters
    ----------
    fit : a :func:`dsc.core.lld.batch.fit_curve` result.

    Returns
    -------
    The component dict (``amplitude``, ``center``, ``width``, ...) or None where the fit chose
    N = 0, failed, or puts that component's centre outside the fitted epochs.
    """
    if not fit["n"]:
        return None
    best = fit["fits"][fit["n"] - 1]
    if not best["success"] or not best["components"]:
        return None
    rise = max(best["components"], key=lambda c: abs(c["amplitude"]))
    t = np.asarray(fit["curve"]["t"], dtype=float)
    return dict(rise) if t.size and t[0] <= rise["center"] <= t[-1] else None


def class_clusters(rises: Mapping[str, Mapping[str, float] | None], factor: float = CLUSTER_FACTOR) -> list[list[str]]:
    """Group classes whose main rises lie close in time.

    Parameters
    ----------
    rises : class name -> its main rise (``center`` and ``width``, in epochs), or None for a
        class with no rise (left out of every group).
    factor : two classes are linked when ``|c_i - c_j| <= factor * max(w_i, w_j)``.

    Returns
    -------
    The groups (single linkage over the links), each a list of class names ordered by centre,
    the groups ordered by their earliest centre. Its length is ``lld/class_clusters``.

    Examples
    --------
    >>> rises = {"a": {"center": 5, "width": 1}, "b": {"center": 6, "width": 1},
    ...          "c": {"center": 20, "width": 2}}
    >>> class_clusters(rises)
    [['a', 'b'], ['c']]
    """
    if not factor > 0:
        raise ValueError(f"factor must be > 0, got {factor!r}")
    named = sorted(
        ((r["center"], name, r["width"]) for name, r in rises.items() if r is not None and math.isfinite(r["center"])),
        key=lambda x: (x[0], x[1]),
    )
    parent = list(range(len(named)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, (ci, _, wi) in enumerate(named):
        for j in range(i + 1, len(named)):
            cj, _, wj = named[j]
            if abs(cj - ci) <= factor * max(abs(wi), abs(wj)):
                parent[root(j)] = root(i)
    groups: dict[int, list[str]] = {}
    for i, (_, name, _) in enumerate(named):
        groups.setdefault(root(i), []).append(name)
    return list(groups.values())


def summed_curve(
    t: np.ndarray,
    components: Mapping[str, Sequence[Mapping[str, float]]],
    constants: Mapping[str, float],
    weights: Mapping[str, float],
) -> np.ndarray:
    """The class-weighted sum of per-class fitted curves at epochs ``t``.

    Parameters
    ----------
    t : shape (n,), epochs.
    components : class name -> its chosen fit's components (``amplitude``, ``center``, ``width``).
    constants : class name -> its chosen fit's constant.
    weights : class name -> weight (normalised here to sum to 1).

    Returns
    -------
    ndarray, shape (n,).
    """
    t = np.asarray(t, dtype=float)
    total = sum(float(weights[c]) for c in components)
    if not components or total <= 0:
        raise ValueError(f"need at least one class and positive weights, got {dict(weights)}")
    out = np.zeros(t.shape)
    for name, comps in components.items():
        curve = np.full(t.shape, float(constants[name]))
        for c in comps:
            curve += c["amplitude"] / (1.0 + np.exp(-(t - c["center"]) / c["width"]))
        out += float(weights[name]) / total * curve
    return out


def n_from_classes(t: np.ndarray, summed: np.ndarray, noise_sd: float, max_components: int = 3) -> int:
    """The BIC-chosen N of ``summed`` (n,) on epochs ``t`` (n,) with Gaussian noise of ``noise_sd``.

    The most common N over ``NOISE_DRAWS`` noisy copies (seeds 0, 1, ...; ties to the smaller
    N); a ``noise_sd`` of 0 fits the sum as it is.
    """
    if not (noise_sd >= 0 and math.isfinite(noise_sd)):
        raise ValueError(f"noise_sd must be a finite number >= 0, got {noise_sd!r}")
    y = np.asarray(summed, dtype=float)
    if not noise_sd:
        return lld.select(t, y, max_components).n
    chosen = [
        lld.select(t, y + np.random.default_rng(seed).normal(0.0, noise_sd, y.shape), max_components).n
        for seed in range(NOISE_DRAWS)
    ]
    return max(sorted(set(chosen)), key=chosen.count)


@dataclass(frozen=True)
class Agreement:
    """A predictor of N against the observed N over runs.

    Attributes
    ----------
    n : runs with both values.
    share_equal : share of those runs where the predictor equals the observed N (NaN for none).
    rho, p : Spearman's rho and its two-sided p-value (NaN, with ``note``, where no test is
        possible: fewer than three runs, or either side constant).
    note : why there is no rho, or "".
    """

    n: int
    share_equal: float
    rho: float
    p: float
    note: str = ""


def agreement(predicted: Sequence[float], observed: Sequence[float]) -> Agreement:
    """Score ``predicted`` (runs,) against ``observed`` (runs,); NaN entries are left out.

    >>> a = agreement([1, 2, 3, 3], [1, 2, 3, 2])
    >>> a.share_equal, round(a.rho, 3)
    (0.75, 0.816)
    """
    x, y = np.asarray(predicted, dtype=float), np.asarray(observed, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    share = float(np.mean(x == y)) if x.size else math.nan
    if x.size < 3:
        return Agreement(int(x.size), share, math.nan, math.nan, f"{x.size} run(s): no rank test")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        side = "the predictor" if np.ptp(x) == 0 else "the observed N"
        return Agreement(int(x.size), share, math.nan, math.nan, f"{side} is constant: no rank test")
    res = stats.spearmanr(x, y)
    return Agreement(int(x.size), share, float(res.statistic), float(res.pvalue))
