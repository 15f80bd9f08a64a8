"""Runs grouped by a swept parameter: mean curves with bands, and quantities against the param."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from dsc.figures import style


def group_curves(
    groups: Sequence[Mapping], ylabel: str, title: str = "Mean learning curve per group, 95% band"
) -> Figure:
    """The mean curve of each group with its band.

    Parameters
    ----------
    groups : one mapping per group: ``label`` (str), ``n`` (runs), and ``t``, ``mean``,
        ``low``, ``high``, arrays of shape (m,) (``low``/``high`` NaN: no band).
    ylabel : the metric's name.
    """
    if not any(np.size(g["t"]) for g in groups):
        return style.no_data(title)
    fig, axes = style.new_figure(size=(6.4, 4.2))
    ax = axes[0, 0]
    for colour, g in zip(style.ordered_colors(len(groups)), groups):
        t = np.asarray(g["t"], dtype=float)
        ax.plot(t, g["mean"], color=colour, label=f"{g['label']} (n={g['n']})")
        low, high = np.asarray(g["low"], dtype=float), np.asarray(g["high"], dtype=float)
        if np.isfinite(low).any():
            ax.fill_between(t, low, high, color=colour, alpha=0.2, linewidth=0)
    ax.set(xlabel=style.EPOCH, ylabel=ylabel, title=title)
    style.legend(ax)
    return fig


def against_param(
    param: str, panels: Sequence[Mapping], positions: Sequence[float], tick_labels: Sequence[str], title: str = ""
) -> Figure:
    """Per-run values and group means with 95% intervals against a param, one panel per quantity.

    Parameters
    ----------
    param : the grouping param (the x axis).
    panels : one mapping per panel: ``ylabel``, ``x`` and ``y`` (per run, shape (r,)),
        ``mean``, ``low``, ``high`` (per group, shape (g,); NaN: no interval), and an
        optional ``note`` (the trend test, or why there is none).
    positions : shape (g,), each group's x position (its numeric value, or its rank).
    tick_labels : shape (g,), each group's label.
    """
    fig, axes = style.panel_grid(len(panels), ncols=len(panels), panel=(4.2, 3.6))
    gx = np.asarray(positions, dtype=float)
    for ax, panel in zip(axes, panels):
        y = np.asarray(panel["y"], dtype=float)
        ax.scatter(panel["x"], y, s=14, color=style.SERIES_PALETTE[2], alpha=0.6, label="runs")
        mean = np.asarray(panel["mean"], dtype=float)
        low, high = np.asarray(panel["low"], dtype=float), np.asarray(panel["high"], dtype=float)
        err = np.vstack([mean - low, high - mean])
        ax.errorbar(
            gx,
            mean,
            yerr=np.where(np.isfinite(err), err, 0),
            color="k",
            marker="o",
            capsize=3,
            label="group mean, 95% interval",
        )
        ax.set_xticks(gx, list(tick_labels))
        ax.set(xlabel=param, ylabel=panel["ylabel"])
        if panel.get("note"):
            ax.set_title(panel["note"], fontsize=8)
        if not np.isfinite(y).any():
            style.note_on(ax, "no run has a value")
    style.legend(axes[0])
    if title:
        fig.suptitle(title)
    return fig
