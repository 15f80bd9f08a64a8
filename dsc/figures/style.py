"""What every figure shares: palettes, axis labels, figure and panel builders, input checks, output.

Figures are built on `matplotlib.figure.Figure` directly, never through pyplot, so nothing leaks
into pyplot's figure registry and importing a figure module selects no backend. A class keeps
one colour in every figure (`class_color`: tab10, with a new marker each time the ten colours
cycle); other series (splits, layers, PCs, components) take colours from other palettes so that
they are never read as classes. Non-finite values are skipped, and empty inputs give a figure
that says "no data" instead of raising.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure


def _palette(name: str) -> tuple[tuple[float, float, float], ...]:
    """The colours of one of matplotlib's qualitative colormaps, a tuple of RGB triples."""
    cmap = colormaps[name]
    assert isinstance(cmap, ListedColormap)
    return cast("tuple[tuple[float, float, float], ...]", cmap.colors)  # typed as any array-like


CLASS_PALETTE = _palette("tab10")  # one colour per class, in every figure
SERIES_PALETTE = _palette("Dark2")  # splits, components, categories that are not classes
PHASE_PALETTE = _palette("Set2")  # spectral phases
MARKERS = ("o", "s", "^", "D", "v", "P", "X")  # next marker each time the class colours cycle
SPLIT_STYLES = {"train": (SERIES_PALETTE[0], "-"), "val": (SERIES_PALETTE[1], "--")}

EPOCH = "epoch"
ACC = "accuracy (fraction correct)"
METRIC_LABELS = {"acc": ACC, "loss": "cross-entropy loss (nats)"}
METRIC_TITLES = {"acc": "Accuracy", "loss": "Loss"}


# --- colours ---------------------------------------------------------------------------------


def class_color(label: int) -> tuple[float, float, float]:
    """RGB colour of class ``label`` (tab10, cycling)."""
    return CLASS_PALETTE[int(label) % len(CLASS_PALETTE)]


def class_marker(label: int) -> str:
    """Scatter marker of class ``label``: changes each time the ten colours cycle."""
    return MARKERS[(int(label) // len(CLASS_PALETTE)) % len(MARKERS)]


def ordered_colors(n: int) -> list:
    """``n`` colours along viridis, for series with an order (layers near to far, PC 1..k)."""
    return [colormaps["viridis"](x) for x in np.linspace(0.0, 0.85, n)]


def class_name(class_names: Sequence[str], label: int) -> str:
    """The name of class ``label``, or ``"class <label>"`` beyond ``class_names``."""
    return str(class_names[label]) if 0 <= label < len(class_names) else f"class {label}"


# --- figures and panels ----------------------------------------------------------------------


def new_figure(nrows: int = 1, ncols: int = 1, size=None, **kw) -> tuple[Figure, np.ndarray]:
    """A constrained-layout figure and its axes, shape (nrows, ncols)."""
    fig = Figure(figsize=size or (4.8 * ncols, 3.6 * nrows), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kw)


def panel_grid(n: int, ncols: int, panel=(3.4, 3.0), **kw) -> tuple[Figure, list[Axes]]:
    """``n`` panels on a grid ``ncols`` wide; the unused cells removed."""
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = new_figure(nrows, ncols, size=(panel[0] * ncols, panel[1] * nrows), **kw)
    for ax in axes.flat[n:]:
        ax.remove()
    return fig, list(axes.flat[:n])


def no_data(title: str, note: str = "no data") -> Figure:
    """A one-panel figure that says ``note``."""
    fig, axes = new_figure()
    note_on(axes[0, 0], note)
    axes[0, 0].set_title(title)
    return fig


def note_on(ax: Axes, note: str = "no data") -> None:
    """Write ``note`` in the middle of an empty panel."""
    ax.text(0.5, 0.5, note, transform=ax.transAxes, ha="center", va="center", color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def legend(ax: Axes, **kw) -> None:
    """A small legend, when the panel has labelled artists."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", **kw)


def mark_change_point(ax: Axes, epoch: float) -> None:
    """Mark the change point found in a run's curves as a dashed vertical line at ``epoch``.

    Parameters
    ----------
    ax : Axes
        A panel whose x axis is the epoch.
    epoch : float
        Where the line goes; the legend label quotes it.
    """
    ax.axvline(epoch, color="0.15", ls="--", lw=1.2, label=f"change point (epoch {epoch:g})")


def chance_line(ax: Axes, chance: float | None) -> None:
    """Chance accuracy as a dotted horizontal line (nothing when None)."""
    if chance is not None:
        ax.axhline(chance, color="0.5", ls=":", lw=1, label=f"chance ({chance:.2f})")


def edges(x: np.ndarray) -> np.ndarray:
    """Cell edges around sorted centres ``x`` (n,) -> (n + 1,), for pcolormesh."""
    if x.size == 1:
        return np.array([x[0] - 0.5, x[0] + 0.5])
    mid = (x[1:] + x[:-1]) / 2
    return np.concatenate([[2 * x[0] - mid[0]], mid, [2 * x[-1] - mid[-1]]])


# --- input checks ----------------------------------------------------------------------------


def vec(values: Any, name: str, n: int | None = None, per: str = "epoch") -> np.ndarray:
    """``values`` as a float vector, checked to have ``n`` entries (one per ``per``) if given."""
    arr = np.asarray(values, dtype=float).ravel()
    if n is not None and arr.size != n:
        raise ValueError(f"{name} has {arr.size} values but there are {n}; pass one per {per}")
    return arr


def matrix(values: Any, n: int, name: str) -> np.ndarray:
    """``values`` as a float matrix (n, k); (n, 0) when empty."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return np.zeros((n, 0))
    arr = arr[:, None] if arr.ndim == 1 else arr
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ValueError(f"{name} must have shape (E, k) with E = {n} epochs, got {arr.shape}")
    return arr


# --- output ----------------------------------------------------------------------------------


def save(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG at ``path`` (folders made as needed) and close it.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    _close(fig)
    return path


def to_png(fig: Figure, dpi: int = 110) -> bytes:
    """The figure encoded as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    return buf.getvalue()


def to_base64_png(fig: Figure, dpi: int = 110) -> str:
    """The figure as base64-encoded PNG text, for ``<img src="data:image/png;base64,...">``."""
    return base64.b64encode(to_png(fig, dpi)).decode("ascii")


def _close(fig: Figure) -> None:
    """Release the figure's artists, and pyplot's hold on it if pyplot made it."""
    if fig.canvas.manager is not None:
        from matplotlib import pyplot  # only reached for figures pyplot already manages

        pyplot.close(fig)
    fig.clear()
