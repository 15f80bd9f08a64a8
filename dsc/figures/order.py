"""What predicted the order: predicted against observed class order, and the network's mode strengths."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from dsc.figures import style
from dsc.figures.style import EPOCH, SERIES_PALETTE


def predicted_vs_observed(
    classes: Sequence[str],
    observed: Sequence[float] | np.ndarray,
    predictors: Mapping[str, tuple[Sequence[float] | np.ndarray, float]],
    title: str = "Predicted against observed class order",
) -> Figure:
    """One panel per predictor: its value per class (x) against the class's observed emergence epoch (y).

    Parameters
    ----------
    classes : C names
    observed : (C,) behavioural emergence epochs (NaN: never emerged)
    predictors : axis label -> ((C,) predicted values, Spearman's rho with ``observed``)
    """
    fig, axes = style.panel_grid(len(predictors), len(predictors), panel=(4.0, 3.4))
    y = np.asarray(observed, dtype=float)
    for ax, (label, (values, rho)) in zip(axes, predictors.items()):
        x = np.asarray(values, dtype=float)
        for c, name in enumerate(classes):
            ax.plot(x[c], y[c], style.class_marker(c), color=style.class_color(c), ms=7, label=name)
        if not np.isfinite(x + y).any():
            style.note_on(ax, "no class with both values")
        ax.set(xlabel=label, ylabel=f"observed emergence ({EPOCH})", title=f"Spearman ρ = {rho:.2f}")
    style.legend(axes[0])
    fig.suptitle(title)
    return fig


def mode_strengths(
    epochs: Sequence[int],
    strengths: np.ndarray,
    s: Sequence[float] | np.ndarray,
    times: Sequence[float] | np.ndarray,
    title: str = "The network's strength along each input-output mode",
) -> Figure:
    """Left: a_k(t) (E, r) over epochs, each mode's data strength s_k dashed and its fitted centre dotted.
    Right: the centres t_k against 1/s_k."""
    fig, axes = style.new_figure(1, 2, size=(10.0, 3.8))
    left, right = axes[0, 0], axes[0, 1]
    a = np.asarray(strengths, dtype=float)
    for k in range(a.shape[1] if a.ndim == 2 else 0):
        color = SERIES_PALETTE[k % len(SERIES_PALETTE)]
        left.plot(epochs, a[:, k], color=color, lw=1.5, label=f"mode {k + 1} (s = {s[k]:.3g})")
        left.axhline(s[k], color=color, ls="--", lw=0.8)
        if np.isfinite(times[k]):
            left.axvline(times[k], color=color, ls=":", lw=1.0)
    left.set(xlabel=EPOCH, ylabel="a_k(t) = u_k^T Σ̂(t) v_k", title=title)
    style.legend(left)
    inv = 1 / np.asarray(s, dtype=float)
    t = np.asarray(times, dtype=float)
    for k in range(len(t)):
        right.plot(inv[k], t[k], "o", color=SERIES_PALETTE[k % len(SERIES_PALETTE)], ms=7)
        right.annotate(f" {k + 1}", (inv[k], t[k]), fontsize=8)
    if not np.isfinite(t).any():
        style.note_on(right, "no mode's logistic fit succeeded")
    right.set(xlabel="1 / s_k (data)", ylabel=f"t_k, centre of a_k's rise ({EPOCH})", title="Saxe: t_k ∝ 1/s_k")
    return fig
