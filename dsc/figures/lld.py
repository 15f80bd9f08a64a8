"""Logistic learning decomposition (Figs 11, 12): one run's fit, and fits across runs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from dsc.figures import style
from dsc.figures.style import ACC, EPOCH, SERIES_PALETTE


def _lld_on_ax(ax: Axes, t, y, curve, component_curves, constant, title: str, r2=None) -> None:
    tt = style.vec(t, "t")
    ax.set_title(title if r2 is None or not np.isfinite(r2) else f"{title} (R² = {r2:.3f})")
    if tt.size == 0:
        style.note_on(ax)
        return
    ax.plot(tt, style.vec(y, "y", tt.size, per="t"), "o", ms=3, color="0.55", label="data")
    fitted = style.vec(curve, "curve", tt.size, per="t")
    ax.plot(tt, fitted, color="0.05", lw=1.6, label="sum of logistics")
    comps = np.asarray(component_curves, dtype=float).reshape(-1, tt.size)
    for i, comp in enumerate(comps):
        ax.plot(tt, comp + constant, color=SERIES_PALETTE[i % len(SERIES_PALETTE)], ls="--", label=f"component {i + 1}")
    style.legend(ax, loc="lower right")


def lld_fit(
    t: Any,
    y: Any,
    curve: Any,
    component_curves: Any,
    constant: float,
    title: str = "Logistic learning decomposition",
    r2: float | None = None,
    ylabel: str = ACC,
) -> Figure:
    """A learning curve, its fitted sum of logistics and each component (Figs 11, 12).

    Parameters
    ----------
    t, y, curve : array_like, shape (T,)
        Epochs, the data and the fitted curve.
    component_curves : array_like, shape (N, T)
        Each logistic component; drawn offset by ``constant``.
    constant : float
        The fitted baseline.
    r2 : float, optional
        Shown in the title.
    """
    fig, axes = style.new_figure(size=(6.4, 4.0))
    _lld_on_ax(axes[0, 0], t, y, curve, component_curves, constant, title, r2)
    axes[0, 0].set(xlabel=EPOCH, ylabel=ylabel)
    return fig


def lld_overlay(
    runs: Sequence[Mapping[str, Any]],
    ncols: int = 3,
    ylabel: str = ACC,
    title: str = "Logistic learning decomposition of each run",
) -> Figure:
    """Small multiples of `lld_fit`, one per run, shared y axis.

    Parameters
    ----------
    runs : sequence of dict
        Keys ``label``, ``t``, ``y``, ``curve``, ``component_curves``, ``constant`` and
        optionally ``r2`` (see `lld_fit`).
    """
    if len(runs) == 0:
        return style.no_data(title)
    fig, axes = style.panel_grid(len(runs), ncols, panel=(4.0, 3.2), sharey=True)
    for ax, run in zip(axes, runs):
        _lld_on_ax(
            ax,
            run["t"],
            run["y"],
            run["curve"],
            run["component_curves"],
            run["constant"],
            str(run["label"]),
            run.get("r2"),
        )
    fig.supxlabel(EPOCH)
    fig.supylabel(ylabel)
    fig.suptitle(title)
    return fig


def _numeric(values: Any) -> np.ndarray | None:
    """``values`` as floats when every one reads as a number (MLflow params are strings)."""
    try:
        return np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError):
        return None


def lld_centers_widths(
    centers: Any,
    widths: Any,
    colour_values: Any,
    colour_label: str,
    title: str = "Logistic components across runs",
) -> Figure:
    """Centre against width of each logistic component, coloured by a run parameter.

    Numeric ``colour_values`` get a colour bar, others a legend with one entry per value.

    Parameters
    ----------
    centers, widths : array_like, shape (n,)
        One entry per component (epochs).
    colour_values : array_like, shape (n,)
        The parameter of each component's run.
    colour_label : str
        The parameter's name.
    """
    cx, wy = style.vec(centers, "centers"), style.vec(widths, "widths")
    values = np.asarray(colour_values, dtype=object).ravel()
    if not cx.size == wy.size == values.size:
        raise ValueError(f"centers, widths and colour_values differ in length: {cx.size}, {wy.size}, {values.size}")
    keep = np.isfinite(cx) & np.isfinite(wy)
    if not keep.any():
        return style.no_data(title)
    fig, axes = style.new_figure(size=(6.0, 4.2))
    ax = axes[0, 0]
    numeric = _numeric(values)
    if numeric is not None:
        finite = numeric[keep & np.isfinite(numeric)]
        decades = finite.size and finite.min() > 0 and finite.max() >= 100 * finite.min()
        sc = ax.scatter(cx[keep], wy[keep], c=numeric[keep], cmap="viridis", s=30, norm="log" if decades else None)
        fig.colorbar(sc, ax=ax, label=colour_label)
    else:
        for i, v in enumerate(dict.fromkeys(values[keep])):
            sel = keep & (values == v)
            color = SERIES_PALETTE[i % len(SERIES_PALETTE)]
            ax.scatter(cx[sel], wy[sel], color=color, s=30, label=str(v))
        ax.legend(title=colour_label, fontsize="small")
    ax.set(xlabel="logistic centre (epoch)", ylabel="logistic width (epochs)", title=title)
    return fig


def lld_variance_explained(
    run_labels: Sequence[str],
    r2_1: Any,
    r2_2: Any,
    title: str = "Variance explained by one and by two logistics",
) -> Figure:
    """Grouped bars of R² for one and two logistic components, one group per run.

    Parameters
    ----------
    run_labels : sequence of str, length n
    r2_1, r2_2 : array_like, shape (n,)
        R² of the one- and two-component fits; NaN bars are left empty.
    """
    n = len(run_labels)
    if n == 0:
        return style.no_data(title)
    fig, axes = style.new_figure(size=(max(4.8, 1.0 + 0.9 * n), 4.0))
    ax = axes[0, 0]
    x = np.arange(n)
    for shift, r2, label, color in (
        (-0.2, r2_1, "1 logistic", SERIES_PALETTE[0]),
        (0.2, r2_2, "2 logistics", SERIES_PALETTE[1]),
    ):
        heights = style.vec(r2, label, n, per="run")
        bars = ax.bar(x + shift, np.nan_to_num(heights), width=0.4, color=color, label=label)
        ax.bar_label(bars, ["" if np.isnan(h) else f"{h:.3f}" for h in heights], fontsize="x-small")
    finite = np.concatenate([style.vec(r2_1, "r2_1"), style.vec(r2_2, "r2_2")])
    finite = finite[np.isfinite(finite)]
    low = max(0.0, math.floor((finite.min() - 0.02) * 10) / 10) if finite.size else 0.0
    ax.set_ylim(min(low, 0.9), 1.02)
    ax.set_xticks(x, run_labels, rotation=30 if n > 4 else 0, ha="right" if n > 4 else "center")
    ax.set(ylabel="R² (share of variance explained)", title=title)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=2)
    return fig
