"""Neural collapse over epochs: NC1 to NC4 per layer, and the out layer's spikes against C - 1."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from dsc.figures import style
from dsc.figures.style import EPOCH

PANELS = (
    ("nc1", "NC1: tr(Σ_W Σ_B⁺)/C", True),
    ("nc2_equinorm", "NC2: equinorm (std/mean)", True),
    ("nc2_equiangle", "NC2: equiangle (|cos + 1/(C−1)|)", True),
    ("nc3", "NC3: ‖W − M‖² (normalised)", True),
    ("nc4", "NC4: classifier ≠ nearest mean", False),
)


def collapse_over_epochs(
    epochs: Sequence[int],
    values: Mapping[str, Mapping[str, np.ndarray]],
    change_epoch: float | None = None,
    title: str = "Neural collapse over epochs",
) -> Figure:
    """One panel per NC figure; ``values`` maps layer -> key (`dsc.core.collapse.KEYS`) -> (E,)."""
    fig, axes = style.panel_grid(len(PANELS), 3, panel=(3.6, 3.0))
    for ax, (key, label, log) in zip(axes, PANELS):
        shown = False
        for i, (layer, by_key) in enumerate(values.items()):
            y = np.asarray(by_key[key], dtype=float)
            ok = np.isfinite(y) & ((y > 0) if log else True)
            if ok.any():
                ax.plot(np.asarray(epochs)[ok], y[ok], ".-", ms=3, lw=1.2, color=style.SERIES_PALETTE[i], label=layer)
                shown = True
        if shown and log:
            ax.set_yscale("log")
        if not shown:
            style.note_on(ax, "undefined (no weights, or NaN)")
        if change_epoch is not None:
            style.mark_change_point(ax, change_epoch)
        ax.set(xlabel=EPOCH, title=label)
        style.legend(ax)
    fig.suptitle(title)
    return fig


def spikes_against_classes(
    epochs: Sequence[int],
    spikes: Sequence[float] | np.ndarray,
    n_classes: int,
    title: str = "Spikes of the out layer's spectrum",
) -> Figure:
    """Spikes outside the Marchenko-Pastur bulk of ``out``'s ESD over epochs (E,), with C − 1 marked."""
    fig, axes = style.new_figure(size=(6.0, 3.4))
    ax = axes[0, 0]
    ax.step(epochs, spikes, where="mid", color=style.SERIES_PALETTE[0], label="spikes of out")
    ax.axhline(n_classes - 1, color="0.4", ls="--", lw=1, label=f"C − 1 = {n_classes - 1}")
    ax.set(xlabel=EPOCH, ylabel="eigenvalues above the MP edge", title=title)
    style.legend(ax)
    return fig
