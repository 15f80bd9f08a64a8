"""Runs grouped by a swept parameter: per-group statistics, mean curves and trend tests.

The runs sharing the values of the grouping params are replicates (seeds). Each group gets
the number of runs with a finite value, the mean, the sample standard deviation (ddof = 1)
and a t-based 95% interval of the mean, ``mean +- t(0.975, n - 1) * sd / sqrt(n)``; a group
of one run has no interval (NaN bounds, with a note saying so). A trend of a quantity against
a numeric param is Spearman's rho over the runs (not the group means), with its two-sided
p-value, from :func:`scipy.stats.spearmanr`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from dsc.core import timeline

LEVEL = 0.95  # the intervals' confidence
ONE_RUN = "one run: no interval"
_FIELDS = ("center", "width")


@dataclass(frozen=True)
class Summary:
    """One quantity over one group's runs.

    ``n`` counts the runs with a finite value; ``low``/``high`` are the t-based 95% interval
    of the mean (NaN, with ``note`` saying why, for fewer than two values).
    """

    n: int
    mean: float
    sd: float
    low: float
    high: float
    note: str = ""


@dataclass(frozen=True)
class Trend:
    """Spearman's rho of a quantity against a param over runs, and its two-sided p-value.

    ``rho`` and ``p`` are NaN when no test was made, and ``note`` says why.
    """

    rho: float
    p: float
    n: int
    note: str = ""


def summarise(values: Sequence[float] | np.ndarray) -> Summary:
    """Mean, sd (ddof 1) and t-based 95% interval of the finite ``values``, shape (n,)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan, "no run has a value")
    mean = float(x.mean())
    if x.size == 1:
        return Summary(1, mean, math.nan, math.nan, math.nan, ONE_RUN)
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + LEVEL / 2, x.size - 1)) * sd / math.sqrt(x.size)
    return Summary(int(x.size), mean, sd, mean - half, mean + half)


def as_number(text: str) -> float | None:
    """A param's text as a number, or None (``"3"`` -> 3.0, ``"adam"`` -> None)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def group(params: Sequence[Mapping[str, str]], by: Sequence[str]) -> dict[tuple[str, ...], list[int]]:
    """Run indices by their values of the ``by`` params, groups in numeric-then-text order.

    A run without one of the params is in the group with value ``""`` for it.

    >>> group([{"k": "10"}, {"k": "2"}, {"k": "10"}], ["k"])
    {('2',): [1], ('10',): [0, 2]}
    """
    out: dict[tuple[str, ...], list[int]] = {}
    for i, p in enumerate(params):
        out.setdefault(tuple(p.get(name, "") for name in by), []).append(i)

    def order(key: tuple[str, ...]):
        return tuple((0, as_number(v), "") if as_number(v) is not None else (1, 0.0, v) for v in key)

    return {key: out[key] for key in sorted(out, key=order)}


def trend(x: Sequence[str], y: Sequence[float] | np.ndarray, param: str) -> Trend:
    """Spearman's rho of ``y`` (n,) against the param values ``x`` (n,) as numbers.

    No test (NaN, and a note) for a non-numeric param, fewer than three runs with a value,
    or a param or quantity that does not vary.
    """
    numbers = [as_number(v) for v in x]
    if any(v is None for v in numbers):
        bad = next(v for v, num in zip(x, numbers) if num is None)
        return Trend(math.nan, math.nan, 0, f"param {param!r} is not numeric ({bad!r}): no trend test")
    xs, ys = np.array(numbers, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(ys)
    xs, ys = xs[ok], ys[ok]
    if xs.size < 3:
        return Trend(math.nan, math.nan, int(xs.size), f"{xs.size} run(s) with a value: no trend test")
    if np.ptp(xs) == 0 or np.ptp(ys) == 0:
        what = f"param {param!r}" if np.ptp(xs) == 0 else "the quantity"
        return Trend(
            math.nan,
            math.nan,
            int(xs.size),
            f"{what} does not vary over the {xs.size} runs with a value: no trend test",
        )
    res = stats.spearmanr(xs, ys)
    return Trend(float(res.statistic), float(res.pvalue), int(xs.size))


def run_quantities(fit: Mapping, t: np.ndarray, y: np.ndarray, max_components: int) -> dict[str, float]:
    """The grouped quantities of one run, NaN where a run has none.

    Parameters
    ----------
    fit : a :func:`dsc.core.lld.batch.fit_curve` result.
    t, y : shape (n,), the run's metric by epoch.
    max_components : K, the components the fit tried.

    Returns
    -------
    ``n_components`` (the selected N, 0 for no process), ``r2_1``, ``r2_2``,
    ``center_<k>`` and ``width_<k>`` (k = 1..K, components by centre), ``change_point``
    (the end of the latent phase, :func:`dsc.core.timeline.change_point`; NaN for a curve
    that never rises) and ``final`` (the metric's last finite value).
    """
    out: dict[str, float] = {"n_components": float(fit["n"])}
    for n in (1, 2):
        out[f"r2_{n}"] = float(fit["fits"][n - 1]["r2"]) if n <= len(fit["fits"]) else math.nan
    best = fit["fits"][fit["n"] - 1] if fit["n"] else None
    comps = best["components"] if best is not None and best["success"] else []
    if best is not None and not best["success"]:
        out["n_components"] = math.nan
    for k in range(1, max_components + 1):
        for name in _FIELDS:
            out[f"{name}_{k}"] = float(comps[k - 1][name]) if k <= len(comps) else math.nan
    t, y = np.asarray(t, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(y)
    cp = timeline.change_point(y[ok], t[ok].astype(int)) if ok.sum() else None
    out["change_point"] = math.nan if cp is None or cp.epoch is None else float(cp.onset)
    out["final"] = float(y[ok][-1]) if ok.any() else math.nan
    return out


def first_class(centers: Mapping[str, float]) -> str:
    """The class whose main rise is earliest (``centers``: class -> centre), or "" for none."""
    finite = {name: c for name, c in centers.items() if math.isfinite(c)}
    return min(finite, key=finite.__getitem__) if finite else ""


def mean_curve(curves: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """The mean of several curves on their common epochs, with a t-based 95% band.

    Parameters
    ----------
    curves : ``(t, y)`` pairs, each two arrays of shape (n_i,).

    Returns
    -------
    ``t`` (m,) the epochs every curve has, and ``mean``, ``low``, ``high`` (m,) there
    (``low``/``high`` NaN for a single curve).
    """
    common = None
    for t, y in curves:
        have = set(np.asarray(t)[np.isfinite(y)].tolist())
        common = have if common is None else common & have
    epochs = np.array(sorted(common or ()), dtype=float)
    stack = np.array(
        [np.interp(epochs, np.asarray(t, dtype=float), np.asarray(y, dtype=float)) for t, y in curves]
    ).reshape(len(curves), epochs.size)
    mean = stack.mean(axis=0) if len(curves) else np.full(epochs.size, np.nan)
    if len(curves) < 2:
        return {"t": epochs, "mean": mean, "low": np.full_like(mean, np.nan), "high": np.full_like(mean, np.nan)}
    half = stats.t.ppf(0.5 + LEVEL / 2, len(curves) - 1) * stack.std(axis=0, ddof=1) / math.sqrt(len(curves))
    return {"t": epochs, "mean": mean, "low": mean - half, "high": mean + half}
