"""An animated GIF of the 2-D PCA plane over epochs, drawn by blitting.

Re-rendering the whole figure for every frame (layout, ticks, legend) costs most of a GIF's
time. Here the figure is `dsc.figures.pca.pca_scatter` (so the GIF looks like the still
figures), laid out and drawn once without the moving parts; each frame restores that
background, draws only the points and the title, and pastes the legend back on top. The
frames go to Pillow as palette images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from dsc.figures import pca


def pca_gif(
    projections: Any,
    labels: Any,
    class_names: Sequence[str],
    epochs: Any,
    path: str | Path,
    fps: float = 4.0,
    accuracy: Any = None,
    dpi: int = 80,
) -> Path:
    """Write an animated GIF of the 2-D PCA, one frame per epoch, axes fixed across frames.

    Parameters
    ----------
    projections : array_like, shape (E, n, 2)
        Sign-aligned PC 1/2 scores (``PCATimeline.projections``).
    labels : int array_like, shape (n,)
    class_names : sequence of str
    epochs : array_like, shape (E,)
    path : the ``.gif`` to write
    accuracy : array_like, shape (E,), optional
        Shown in each frame's title.

    Returns
    -------
    Path
        ``path``.
    """
    proj = np.asarray(projections, dtype=float)
    lab = np.asarray(labels).ravel()
    x = np.asarray(epochs, dtype=float).ravel()
    if proj.ndim != 3 or proj.shape[1:] != (lab.size, 2) or proj.shape[0] != x.size or x.size == 0:
        raise ValueError(
            f"projections must have shape (E, n, 2) with E = {x.size} >= 1 epochs and "
            f"n = {lab.size} labels, got {proj.shape}"
        )
    acc = None if accuracy is None else np.asarray(accuracy, dtype=float).ravel()
    fig = pca.pca_scatter(proj[0], lab, class_names)
    fig.set_dpi(dpi)
    ax = fig.axes[0]
    xlim, ylim = pca.limits(proj)
    ax.set(xlim=xlim, ylim=ylim)
    scatters = list(ax.collections)  # one per class, in np.unique(labels) order
    classes = np.unique(lab)
    legend = ax.get_legend()
    assert legend is not None  # pca_scatter's legend: one entry per class
    moving = [*scatters, ax.title]
    for artist in (*moving, legend):
        artist.set_animated(True)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # lays out once (with the first title), without the animated artists
    fig.set_layout_engine("none")
    background = canvas.copy_from_bbox(fig.bbox)
    ax.draw_artist(legend)  # drawn once, pasted over the points of every frame
    legend_pixels = canvas.copy_from_bbox(legend.get_window_extent())
    frames = []
    for e in range(x.size):
        canvas.restore_region(background)
        for c, scatter in zip(classes, scatters):
            p = proj[e][lab == c]
            scatter.set_offsets(p[np.isfinite(p).all(axis=1)])
        suffix = "" if acc is None else f", accuracy {acc[e]:.2f}"
        ax.title.set_text(f"PCA of the hidden representation, epoch {x[e]:g}{suffix}")
        for artist in moving:
            ax.draw_artist(artist)
        canvas.restore_region(legend_pixels)
        rgba = Image.frombuffer("RGBA", canvas.get_width_height(), bytes(canvas.buffer_rgba()))
        frames.append(rgba.convert("RGB").quantize(colors=64, method=Image.Quantize.FASTOCTREE))
    fig.clear()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    return path
