"""Learning curves: accuracy and loss by epoch, and the end of the latent phase."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from dsc.figures import style
from dsc.figures.style import (
    ACC,
    EPOCH,
    METRIC_LABELS,
    METRIC_TITLES,
    SERIES_PALETTE,
    SPLIT_STYLES,
)


def learning_curves(
    epochs: Any,
    metrics: Mapping[str, Any],
    chance: float | None = None,
    title: str = "Learning curves",
) -> Figure:
    """One panel per metric kind (accuracy, then loss, then others), train and val overlaid.

    Parameters
    ----------
    epochs : array_like, shape (E,)
    metrics : dict of str to array_like, shape (E,)
        Keys ``"<kind>/<split>"``, e.g. ``"acc/train"``, ``"acc/val"``, ``"loss/val"``.
    chance : float, optional
        Chance accuracy, drawn as a dotted line on the accuracy panel.
    """
    x = style.vec(epochs, "epochs")
    kinds: dict[str, list[tuple[str, np.ndarray]]] = {}
    for key in sorted(metrics, key=lambda k: ({"acc": 0, "loss": 1}.get(k.split("/")[0], 2), k)):
        kind, _, split = key.partition("/")
        kinds.setdefault(kind, []).append((split or kind, style.vec(metrics[key], key, x.size)))
    if not kinds or x.size == 0:
        return style.no_data(title)
    fig, axes = style.new_figure(1, len(kinds), sharex=True)
    for ax, (kind, series) in zip(axes.flat, kinds.items()):
        for j, (split, y) in enumerate(series):
            color, ls = SPLIT_STYLES.get(split, (SERIES_PALETTE[(j + 2) % 8], "-."))
            ax.plot(x, y, color=color, ls=ls, label=split)
        if kind == "acc":
            style.chance_line(ax, chance)
        ax.set(xlabel=EPOCH, ylabel=METRIC_LABELS.get(kind, kind), title=METRIC_TITLES.get(kind, kind))
        style.legend(ax)
    fig.suptitle(title)
    return fig


def change_point(
    epochs: Any,
    acc: Any,
    epoch_cp: float | None,
    ylabel: str = ACC,
    title: str = "End of the latent phase",
    chance: float | None = None,
) -> Figure:
    """The learning curve with the latent phase shaded and the change point marked.

    Parameters
    ----------
    epochs, acc : array_like, shape (E,)
    epoch_cp : float or None
        Last epoch of the latent phase; None when the curve never rises.
    """
    x = style.vec(epochs, "epochs")
    y = style.vec(acc, "acc", x.size)
    if x.size == 0:
        return style.no_data(title)
    fig, axes = style.new_figure(size=(6.4, 3.8))
    ax = axes[0, 0]
    ax.plot(x, y, color=SPLIT_STYLES["val"][0], marker=".", label="learning curve")
    style.chance_line(ax, chance)
    if epoch_cp is None or not np.isfinite(epoch_cp):
        ax.text(0.02, 0.95, "no change point", transform=ax.transAxes, va="top", color="0.3")
    else:
        ax.axvspan(np.nanmin(x), epoch_cp, color="0.9", zorder=0, label="latent phase")
        style.mark_change_point(ax, epoch_cp)
        ax.annotate(
            f"epoch {epoch_cp:g}",
            (epoch_cp, 0.5),
            xycoords=("data", "axes fraction"),
            xytext=(4, 0),
            textcoords="offset points",
            rotation=90,
            va="center",
        )
    ax.set(xlabel=EPOCH, ylabel=ylabel, title=title)
    style.legend(ax, loc="lower right")
    return fig
