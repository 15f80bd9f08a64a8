"""Hierarchical modes: a metric against the singular modes kept, and the two-segment power law."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from dsc.figures import style
from dsc.figures.style import ACC, SERIES_PALETTE


def modes_curves(
    k: Any,
    series: Mapping[str, Any],
    ylabel: str = ACC,
    logx: bool = True,
    title: str = "Keeping only the k leading singular modes",
    chance: float | None = None,
) -> Figure:
    """A metric against the number k of singular modes kept, one line per series.

    Series named ``"<group>/<kind>"`` share the group's colour; a kind containing "random" is
    dashed (random modes kept instead of the leading ones).

    Parameters
    ----------
    k : array_like, shape (m,)
    series : dict of str to array_like, shape (m,)
        e.g. ``{"conv1/leading": ..., "conv1/random": ..., "all/leading": ...}``.
    """
    kk = style.vec(k, "k")
    if not series or kk.size == 0:
        return style.no_data(title)
    groups = list(dict.fromkeys(name.rpartition("/")[0] or name for name in series))
    fig, axes = style.new_figure(size=(6.8, 4.0))
    ax = axes[0, 0]
    for name, y in series.items():
        color = SERIES_PALETTE[groups.index(name.rpartition("/")[0] or name) % len(SERIES_PALETTE)]
        ls = "--" if "random" in name.rpartition("/")[2] else "-"
        ax.plot(kk, style.vec(y, name, kk.size, per="k"), color=color, ls=ls, marker=".", label=name)
    style.chance_line(ax, chance)
    if logx:
        ax.set_xscale("log")
    ax.set(xlabel="singular modes kept, k", ylabel=ylabel, title=title)
    style.legend(ax)
    return fig


def _two_segment(k: np.ndarray, b: float, s1: float, s2: float, c: float) -> np.ndarray:
    """err(k) with ln err = c + s1 ln k for k <= b, continuous with slope s2 beyond."""
    lk, lb = np.log(k), np.log(b)
    return np.exp(c + s1 * np.minimum(lk, lb) + s2 * np.maximum(lk - lb, 0.0))


def _field(fit: Any, name: str) -> float:
    value = fit[name] if isinstance(fit, Mapping) else getattr(fit, name)
    return float("nan") if value is None else float(value)


def power_law_fit(
    k: Any,
    err: Any,
    fit: Any,
    ylabel: str = "error (1 − accuracy)",
    title: str = "Two-segment power law of error against modes kept",
) -> Figure:
    """Log-log error against k with the fitted two-segment power law and its breakpoint.

    Parameters
    ----------
    k, err : array_like, shape (m,)
        Points with k <= 0, err <= 0 or non-finite values are skipped.
    fit : dict or `dsc.core.modes.PowerLawFit`
        With ``breakpoint``, ``slope_1``, ``slope_2`` and ``intercept`` (natural log of err at
        k = 1 on the first segment).
    """
    kk, ee = style.vec(k, "k"), style.vec(err, "err")
    keep = np.isfinite(kk) & np.isfinite(ee) & (kk > 0) & (ee > 0)
    kk, ee = kk[keep], ee[keep]
    if kk.size == 0:
        return style.no_data(title)
    b, s1, s2, c = (_field(fit, n) for n in ("breakpoint", "slope_1", "slope_2", "intercept"))
    fig, axes = style.new_figure(size=(5.8, 4.2))
    ax = axes[0, 0]
    ax.plot(kk, ee, "o", color="0.3", ms=4, label="measured")
    if np.isfinite([b, s1, s2, c]).all() and b > 0:
        inside = [b] if kk.min() < b < kk.max() else []
        grid = np.union1d(np.geomspace(kk.min(), kk.max(), 200), inside)
        ax.plot(
            grid, _two_segment(grid, b, s1, s2, c), color=SERIES_PALETTE[1], label=f"fit: slope {s1:.2f} then {s2:.2f}"
        )
        ax.axvline(b, color="0.15", ls="--", lw=1, label=f"breakpoint k = {b:.3g}")
    else:
        ax.text(0.02, 0.04, "no fit", transform=ax.transAxes, color="0.3")
    ax.set(xscale="log", yscale="log", xlabel="singular modes kept, k", ylabel=ylabel, title=title)
    style.legend(ax)
    return fig
