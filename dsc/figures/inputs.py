"""What the network looks at: pixel variance maps and each class's most activating inputs (Figs 15, 16)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from dsc.figures import style


def variance_maps(
    maps: Any,
    class_names: Sequence[str],
    shared_scale: bool = True,
    cmap: str = "magma",
    title: str = "Pixel-wise variance across the exemplars of each class",
) -> Figure:
    """Heat map of pixel-wise variance per class, with a colour bar (Figs 15, 16).

    Parameters
    ----------
    maps : array_like, shape (C, H, W)
        Variance of each pixel across a class's exemplars (intensity², intensity in [0, 1]).
    class_names : sequence of str, length C
    shared_scale : bool
        One colour scale and bar for all classes (comparable) or one per class.
    """
    m = np.asarray(maps, dtype=float)
    if m.ndim != 3:
        raise ValueError(f"maps must have shape (C, H, W), got {m.shape}")
    if m.shape[0] == 0 or m[0].size == 0:
        return style.no_data(title)
    fig, axes = style.panel_grid(m.shape[0], 5, panel=(2.8, 2.9))
    finite = m[np.isfinite(m)]
    lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    for c, ax in enumerate(axes):
        vmin, vmax = (lo, hi) if shared_scale else (np.nanmin(m[c]), np.nanmax(m[c]))
        image = ax.imshow(m[c], cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set_title(style.class_name(class_names, c), color=style.class_color(c))
        ax.set_xticks([])
        ax.set_yticks([])
        if not shared_scale:
            fig.colorbar(image, ax=ax, shrink=0.8, label="variance (intensity²)")
    if shared_scale:
        fig.colorbar(image, ax=axes, shrink=0.8, label="variance (intensity²)")
    fig.suptitle(title)
    return fig


def top_inputs(
    images: Any,
    class_names: Sequence[str],
    title: str = "Inputs that most activate each class's leading feature",
) -> Figure:
    """A grid, one row per class, of the k inputs that most activate its leading feature.

    Parameters
    ----------
    images : array_like, shape (C, k, H, W) or (C, k, H, W, 3)
        Grey (or RGB) images, intensities in [0, 1], strongest first.
    class_names : sequence of str, length C
    """
    im = np.asarray(images, dtype=float)
    if im.ndim not in (4, 5):
        raise ValueError(f"images must have shape (C, k, H, W) or (C, k, H, W, 3), got {im.shape}")
    if im.shape[0] == 0 or im.shape[1] == 0:
        return style.no_data(title)
    n_cls, k = im.shape[:2]
    fig, axes = style.new_figure(n_cls, k, size=(1.5 * k + 0.8, 1.6 * n_cls + 0.5))
    for c in range(n_cls):
        for j in range(k):
            ax = axes[c, j]
            ax.imshow(np.clip(np.nan_to_num(im[c, j]), 0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set(color=style.class_color(c), linewidth=2)
        axes[c, 0].set_ylabel(style.class_name(class_names, c), color=style.class_color(c))
    fig.suptitle(title)
    return fig
