"""Similarity of layers: successive pairs over epochs (Fig 17) and every pair at one epoch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from dsc.figures import style
from dsc.figures.style import EPOCH


def layer_similarity(
    epochs: Any,
    series: Mapping[str, Any],
    ylabel: str = "correlation",
    epoch_cp: float | None = None,
    title: str = "Similarity of successive layers over epochs",
) -> Figure:
    """Similarity (correlation or CKA) of layer pairs over epochs, near to far pairs (Fig 17).

    Parameters
    ----------
    epochs : array_like, shape (E,)
    series : dict of pair name to array_like, shape (E,)
        In layer order (e.g. ``"conv1-conv2"``, ``"conv2-conv3"``, ...): colours follow it.
    ylabel : str
    epoch_cp : float, optional
        The change point, marked with a vertical line.
    """
    x = style.vec(epochs, "epochs")
    if not series or x.size == 0:
        return style.no_data(title)
    fig, axes = style.new_figure(size=(6.8, 4.0))
    ax = axes[0, 0]
    for (name, y), color in zip(series.items(), style.ordered_colors(len(series))):
        ax.plot(x, style.vec(y, name, x.size), color=color, label=name)
    if epoch_cp is not None:
        style.mark_change_point(ax, epoch_cp)
    ax.set(xlabel=EPOCH, ylabel=ylabel, title=title)
    style.legend(ax)
    return fig


def cka_heatmap(
    matrix: Any,
    layer_names: Sequence[str],
    title: str = "Linear CKA between layers",
    vmin: float = 0.0,
    vmax: float = 1.0,
) -> Figure:
    """Heat map of a layer-by-layer similarity matrix, values written in the cells up to 12 layers.

    Parameters
    ----------
    matrix : array_like, shape (L, L)
    layer_names : sequence of str, length L
    """
    m = np.asarray(matrix, dtype=float)
    if m.size == 0:
        return style.no_data(title)
    n = m.shape[0]
    fig, axes = style.new_figure(size=(1.0 + 0.55 * n + 1.2, 0.8 + 0.55 * n))
    ax = axes[0, 0]
    image = ax.imshow(m, cmap="viridis", vmin=vmin, vmax=vmax)
    ax.set_xticks(range(n), layer_names, rotation=45, ha="right")
    ax.set_yticks(range(n), layer_names)
    if n <= 12:
        for (i, j), v in np.ndenumerate(m):
            if np.isfinite(v):
                ax.text(
                    j,
                    i,
                    f"{v:.2f}",
                    ha="center",
                    va="center",
                    fontsize="x-small",
                    color="white" if v < (vmin + vmax) / 2 else "black",
                )
    fig.colorbar(image, ax=ax, label="similarity")
    ax.set_title(title)
    return fig
