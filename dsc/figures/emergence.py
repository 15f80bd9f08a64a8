"""When each class is learned: its recall against the behavioural level, and the layer x class
grid of representational emergence epochs with each class's lead over behaviour."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from dsc.figures import style
from dsc.figures.style import EPOCH


def recall_emergence(
    curves: Mapping[str, tuple[Any, Any]],
    classes: Sequence[str],
    levels: Mapping[str, float],
    epochs: Mapping[str, int | None],
    chance: float,
    title: str = "Behavioural emergence of each class",
) -> Figure:
    """Each class's validation recall, its halfway level dashed and its emergence epoch dotted.

    Parameters
    ----------
    curves : class name -> (epochs (n,), recall (n,))
    classes : every class name (colour by position)
    levels : class name -> the level its recall must stay above
    epochs : class name -> emergence epoch or None
    chance : 1 / C
    """
    if not any(len(np.asarray(curves[c][0])) for c in curves):
        return style.no_data(title)
    fig, axes = style.new_figure(size=(7.2, 4.2))
    ax = axes[0, 0]
    for j, name in enumerate(classes):
        if name not in curves:
            continue
        color, epoch = style.class_color(j), epochs.get(name)
        when = "never" if epoch is None else f"epoch {epoch}"
        ax.plot(
            style.vec(curves[name][0], "epochs"),
            style.vec(curves[name][1], "recall"),
            color=color,
            lw=1.3,
            label=f"{name} ({when})",
        )
        if np.isfinite(levels.get(name, np.nan)):
            ax.axhline(levels[name], color=color, ls="--", lw=0.8, alpha=0.7)
        if epoch is not None:
            ax.axvline(epoch, color=color, ls=":", lw=1.3)
    style.chance_line(ax, chance)
    ax.set(xlabel=EPOCH, ylabel="validation recall (fraction of the class correct)", title=title)
    style.legend(ax, loc="lower right")
    return fig


def emergence_grid(
    layers: Sequence[str],
    classes: Sequence[str],
    repr_epochs: Any,
    behaviour: Any,
    title: str = "Emergence by representation (probe) and by behaviour",
) -> Figure:
    """Left: the layer x class grid of emergence epochs, behaviour as the last row. Right: each
    class's lead of representation over behaviour (behaviour epoch minus layer epoch).

    Parameters
    ----------
    layers : L layer names, input to output
    classes : C class names
    repr_epochs : array_like, shape (L, C); NaN where a class never emerges in a layer
    behaviour : array_like, shape (C,); NaN where a class is never learned
    """
    rep = np.asarray(repr_epochs, dtype=float).reshape(len(layers), len(classes))
    beh = style.vec(behaviour, "behaviour", len(classes), per="class")
    if rep.size == 0:
        return style.no_data(title)
    fig, axes = style.new_figure(1, 2, size=(4.0 + 1.1 * len(classes) * 2, 1.2 + 0.45 * (len(layers) + 1)))
    grid = np.vstack([rep, beh[None, :]])
    rows = [*layers, "behaviour"]
    lead = beh[None, :] - rep
    panels = (
        (axes[0, 0], grid, rows, colormaps["viridis"], None, "emergence epoch", "{:.0f}"),
        (axes[0, 1], lead, list(layers), colormaps["RdBu"], _centred(lead), "lead (epochs)", "{:+.0f}"),
    )
    for ax, values, names, cmap, norm, label, fmt in panels:
        shown = np.ma.masked_invalid(values)
        image = ax.imshow(shown, cmap=cmap, norm=norm, aspect="auto")
        fig.colorbar(image, ax=ax, label=label, shrink=0.85)
        for (i, j), v in np.ndenumerate(values):
            ax.text(
                j,
                i,
                "–" if not np.isfinite(v) else fmt.format(v),
                ha="center",
                va="center",
                fontsize="small",
                color=_ink(image, v),
            )
        ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
        ax.set_yticks(range(len(names)), names)
    axes[0, 0].set_title("epoch each class emerges (– never)")
    axes[0, 1].set_title("representation's lead over behaviour")
    fig.suptitle(title)
    return fig


def _ink(image, value: float) -> str:
    """Text colour readable on the cell's colour: white on dark cells, grey on empty ones."""
    if not np.isfinite(value):
        return "0.5"
    r, g, b, _ = image.cmap(image.norm(value))
    return "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "0.1"


def _centred(values: np.ndarray) -> TwoSlopeNorm | None:
    """A diverging norm centred on 0 spanning the finite values; None when there are none."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return None
    span = max(1.0, float(np.abs(finite).max()))
    return TwoSlopeNorm(0.0, -span, span)
