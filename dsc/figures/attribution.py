"""Which classes make each learning process: the overall curve's components, and the per-class
fitted curves coloured by the component each class is attributed to."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from dsc.figures import style
from dsc.figures.style import ACC, EPOCH, SERIES_PALETTE


def class_components(
    t: Any,
    y: Any,
    component_curves: Any,
    constant: float,
    centres: Sequence[float],
    widths: Sequence[float],
    class_curves: Mapping[str, tuple[Any, Any, Any]],
    component_of: Mapping[str, int | None],
    tolerance: float = 2.0,
    title: str = "Which classes make each learning process",
) -> Figure:
    """Top: the overall curve, its components and each component's window (centre +- tolerance
    widths). Bottom: each class's recall and fitted curve, in the colour of its component
    (grey: no component).

    Parameters
    ----------
    t, y : array_like, shape (n,); the overall curve
    component_curves : array_like, shape (N, n); each overall component on ``t``
    constant : the overall fit's constant
    centres, widths : N values each
    class_curves : class name -> (epochs (m,), recall (m,), fitted (m,))
    component_of : class name -> index of its overall component, or None
    """
    x, yy = style.vec(t, "t"), style.vec(y, "y")
    parts = style.matrix(np.asarray(component_curves, dtype=float).T, x.size, "component_curves").T
    if x.size == 0:
        return style.no_data(title)
    fig, axes = style.new_figure(2, 1, size=(7.2, 7.0), sharex=True)
    top, bottom = axes[0, 0], axes[1, 0]
    top.plot(x, yy, ".", color="0.3", ms=4, label="overall (acc/val)")
    for k, (part, c, w) in enumerate(zip(parts, centres, widths)):
        color: str | tuple[float, float, float] = SERIES_PALETTE[k % len(SERIES_PALETTE)]
        top.plot(x, constant + part, color=color, lw=1.6, label=f"process {k + 1}: centre {c:.1f}, width {w:.2g}")
        for ax in (top, bottom):
            ax.axvspan(c - tolerance * w, c + tolerance * w, color=color, alpha=0.12, lw=0)
    if not len(parts):
        top.text(0.5, 0.5, "no learning process (N = 0)", transform=top.transAxes, ha="center", color="0.4")
    top.set(ylabel=ACC, title=f"{title}\noverall components, windows of ±{tolerance:g} widths shaded")
    style.legend(top, loc="lower right")
    for name, (tc, rc, fc) in class_curves.items():
        comp = component_of.get(name)
        color = "0.55" if comp is None else SERIES_PALETTE[comp % len(SERIES_PALETTE)]
        where = "no component" if comp is None else f"process {comp + 1}"
        tc = style.vec(tc, name)
        bottom.plot(tc, style.vec(rc, name, tc.size), ".", color=color, ms=2.5, alpha=0.6)
        bottom.plot(tc, style.vec(fc, name, tc.size), color=color, lw=1.2, label=f"{name} → {where}")
    bottom.set(xlabel=EPOCH, ylabel="validation recall", title="per-class fits, coloured by attribution")
    style.legend(bottom, loc="lower right")
    return fig
