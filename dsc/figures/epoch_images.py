"""Small per-epoch pictures for the MLflow image grid: probe PCA, ESDs with their MP bulk, CKA.

Rendered each epoch during training, so cheaply: one Agg canvas is kept and cleared for every
picture, at a low resolution, with fixed margins (a layout engine would measure every tick
label of every draw), and each picture comes back as an RGB array for ``mlflow.log_image``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from dsc.figures import style
from dsc.figures.style import SERIES_PALETTE


class EpochImages:
    """One reusable canvas of ``size`` inches at ``dpi``; each method returns (H, W, 3) uint8."""

    def __init__(self, size: tuple[float, float] = (4.0, 3.2), dpi: int = 64) -> None:
        self.fig = Figure(figsize=size, dpi=dpi)
        self.canvas = FigureCanvasAgg(self.fig)

    def _render(self) -> np.ndarray:
        self.fig.subplots_adjust(left=0.14, right=0.96, bottom=0.16, top=0.86, wspace=0.35)
        self.canvas.draw()
        image = np.asarray(self.canvas.buffer_rgba())[..., :3].copy()
        self.fig.clear()
        return image

    def pca(self, coords: np.ndarray, labels: np.ndarray, classes: Sequence[str], title: str) -> np.ndarray:
        """Probe images on their first two principal components, coloured by class.

        ``coords`` (n, 2) the projections, ``labels`` (n,) class indices into ``classes``.
        """
        ax = self.fig.add_subplot()
        for c in np.unique(labels):
            mask = labels == c
            ax.scatter(coords[mask, 0], coords[mask, 1], s=6, color=style.class_color(int(c)),
                       marker=style.class_marker(int(c)), label=style.class_name(classes, int(c)))
        ax.set(xlabel="PC 1", ylabel="PC 2", title=title, xticks=[], yticks=[])
        if len(np.unique(labels)) <= 10:
            ax.legend(fontsize=6, markerscale=1.5, loc="best")
        return self._render()

    def esd(self, panels: Sequence[tuple[str, np.ndarray, np.ndarray | None, np.ndarray | None]],
            title: str) -> np.ndarray:
        """Side-by-side ESD histograms (log axes), each with its fitted Marchenko-Pastur density.

        ``panels``: (layer, eigenvalues (m,), MP grid (q,) or None, MP density (q,) or None).
        """
        axes = self.fig.subplots(1, max(len(panels), 1), squeeze=False)[0]
        for ax, (name, evals, mp_x, mp_y) in zip(axes, panels):
            ev = np.asarray(evals, dtype=float)
            ev = ev[np.isfinite(ev) & (ev > 0)]
            ax.set_title(name, fontsize=8)
            ax.tick_params(labelsize=6)
            if ev.size == 0:
                style.note_on(ax)
                continue
            bins = np.geomspace(ev.min(), ev.max(), 31) if ev.max() > ev.min() else 30
            ax.hist(ev, bins=bins, density=True, color="0.65")
            if mp_x is not None and mp_y is not None:
                keep = mp_y > 0
                ax.plot(mp_x[keep], mp_y[keep], color=SERIES_PALETTE[1], lw=1.2)
            ax.set(xscale="log", yscale="log", xlabel="λ")
            # Log axes' minor ticks cost most of this picture's drawing time (a frame per epoch).
            ax.xaxis.set_minor_locator(NullLocator())
            ax.yaxis.set_minor_locator(NullLocator())
        self.fig.suptitle(title, fontsize=9)
        return self._render()

    def cka(self, matrix: np.ndarray, layers: Sequence[str], title: str) -> np.ndarray:
        """Linear CKA between layers, ``matrix`` (L, L) in ``layers`` order, on a fixed 0-1 scale."""
        ax = self.fig.add_subplot()
        im = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(layers)), layers, rotation=90, fontsize=6)
        ax.set_yticks(range(len(layers)), layers, fontsize=6)
        ax.set_title(title, fontsize=9)
        self.fig.colorbar(im, ax=ax, shrink=0.8).ax.tick_params(labelsize=6)
        return self._render()
