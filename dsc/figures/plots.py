"""Every figure of the project: functions take NumPy arrays and return a matplotlib Figure.

Figures are built on `matplotlib.figure.Figure` directly, never through pyplot, so nothing leaks
into pyplot's figure registry and importing this module selects no backend. A class keeps one
colour in every figure (`class_color`: tab10, with a new marker each time the ten colours
cycle); other series (splits, layers, PCs, components) take colours from other palettes so that
they are never read as classes. Non-finite values are skipped, and empty inputs give a figure
that says "no data" instead of raising.
"""
from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.animation import PillowWriter
from matplotlib.axes import Axes
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

__all__ = [
    "CLASS_PALETTE", "class_color", "class_marker", "learning_curves", "per_class_accuracy",
    "change_point", "pca_scatter", "pca_scatter_grid", "pca_animation", "pca_timeline",
    "emergence", "variance_maps", "top_inputs", "layer_similarity", "cka_heatmap",
    "spectra_over_epochs", "phase_heatmap", "esd_histogram", "esd_grid", "modes_curves",
    "power_law_fit", "lld_fit", "lld_overlay", "lld_centers_widths", "lld_variance_explained",
    "save", "to_base64_png",
]

CLASS_PALETTE = colormaps["tab10"].colors  # one colour per class, in every figure
SERIES_PALETTE = colormaps["Dark2"].colors  # splits, components, categories that are not classes
PHASE_PALETTE = colormaps["Set2"].colors  # spectral phases
MARKERS = ("o", "s", "^", "D", "v", "P", "X")  # next marker each time the class colours cycle
SPLIT_STYLES = {"train": (SERIES_PALETTE[0], "-"), "val": (SERIES_PALETTE[1], "--")}

EPOCH = "epoch"
ACC = "accuracy (fraction correct)"
METRIC_LABELS = {"acc": ACC, "loss": "cross-entropy loss (nats)"}
METRIC_TITLES = {"acc": "Accuracy", "loss": "Loss"}


# --- helpers ---------------------------------------------------------------------------------

def class_color(label: int) -> tuple[float, float, float]:
    """RGB colour of class ``label`` (tab10, cycling)."""
    return CLASS_PALETTE[int(label) % len(CLASS_PALETTE)]


def class_marker(label: int) -> str:
    """Scatter marker of class ``label``: changes each time the ten colours cycle."""
    return MARKERS[(int(label) // len(CLASS_PALETTE)) % len(MARKERS)]


def _ordered_colors(n: int) -> list:
    """``n`` colours along viridis, for series with an order (layers near to far, PC 1..k)."""
    return [colormaps["viridis"](x) for x in np.linspace(0.0, 0.85, n)]


def _figure(nrows: int = 1, ncols: int = 1, size=None, **kw) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=size or (4.8 * ncols, 3.6 * nrows), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kw)


def _grid(n: int, ncols: int, panel=(3.4, 3.0), **kw) -> tuple[Figure, list[Axes]]:
    """``n`` panels on a grid ``ncols`` wide; the unused cells removed."""
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = _figure(nrows, ncols, size=(panel[0] * ncols, panel[1] * nrows), **kw)
    for ax in axes.flat[n:]:
        ax.remove()
    return fig, list(axes.flat[:n])


def _no_data(title: str, note: str = "no data") -> Figure:
    fig, axes = _figure()
    _note(axes[0, 0], note)
    axes[0, 0].set_title(title)
    return fig


def _note(ax: Axes, note: str = "no data") -> None:
    ax.text(0.5, 0.5, note, transform=ax.transAxes, ha="center", va="center", color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _vec(values: Any, name: str, n: int | None = None, per: str = "epoch") -> np.ndarray:
    """``values`` as a float vector, checked to have ``n`` entries (one per ``per``) if given."""
    arr = np.asarray(values, dtype=float).ravel()
    if n is not None and arr.size != n:
        raise ValueError(f"{name} has {arr.size} values but there are {n}; pass one per {per}")
    return arr


def _matrix(values: Any, n: int, name: str) -> np.ndarray:
    """``values`` as a float matrix (n, k); (n, 0) when empty."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return np.zeros((n, 0))
    arr = arr[:, None] if arr.ndim == 1 else arr
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ValueError(f"{name} must have shape (E, k) with E = {n} epochs, got {arr.shape}")
    return arr


def _name(class_names: Sequence[str], label: int) -> str:
    return str(class_names[label]) if 0 <= label < len(class_names) else f"class {label}"


def _legend(ax: Axes, **kw) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", **kw)


def _mark_change_point(ax: Axes, epoch: float) -> None:
    ax.axvline(epoch, color="0.15", ls="--", lw=1.2, label=f"change point (epoch {epoch:g})")


def _edges(x: np.ndarray) -> np.ndarray:
    """Cell edges around sorted centres ``x`` (n,) -> (n + 1,), for pcolormesh."""
    if x.size == 1:
        return np.array([x[0] - 0.5, x[0] + 0.5])
    mid = (x[1:] + x[:-1]) / 2
    return np.concatenate([[2 * x[0] - mid[0]], mid, [2 * x[-1] - mid[-1]]])


# --- learning curves -------------------------------------------------------------------------

def learning_curves(
    epochs: Any, metrics: Mapping[str, Any], chance: float | None = None,
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
    x = _vec(epochs, "epochs")
    kinds: dict[str, list[tuple[str, np.ndarray]]] = {}
    for key in sorted(metrics, key=lambda k: ({"acc": 0, "loss": 1}.get(k.split("/")[0], 2), k)):
        kind, _, split = key.partition("/")
        kinds.setdefault(kind, []).append((split or kind, _vec(metrics[key], key, x.size)))
    if not kinds or x.size == 0:
        return _no_data(title)
    fig, axes = _figure(1, len(kinds), sharex=True)
    for ax, (kind, series) in zip(axes.flat, kinds.items()):
        for j, (split, y) in enumerate(series):
            color, ls = SPLIT_STYLES.get(split, (SERIES_PALETTE[(j + 2) % 8], "-."))
            ax.plot(x, y, color=color, ls=ls, label=split)
        if kind == "acc" and chance is not None:
            ax.axhline(chance, color="0.5", ls=":", lw=1, label=f"chance ({chance:.2f})")
        ax.set(xlabel=EPOCH, ylabel=METRIC_LABELS.get(kind, kind),
               title=METRIC_TITLES.get(kind, kind))
        _legend(ax)
    fig.suptitle(title)
    return fig


def per_class_accuracy(
    epochs: Any, per_class: Mapping[str, Any], chance: float | None = None,
    title: str = "Validation accuracy per class",
) -> Figure:
    """Accuracy of each class over epochs; the i-th key takes class colour i.

    Parameters
    ----------
    epochs : array_like, shape (E,)
    per_class : dict of class name to array_like, shape (E,)
        In class order.
    chance : float, optional
    """
    x = _vec(epochs, "epochs")
    if not per_class or x.size == 0:
        return _no_data(title)
    fig, axes = _figure(size=(6.4, 3.8))
    ax = axes[0, 0]
    for i, (name, y) in enumerate(per_class.items()):
        ax.plot(x, _vec(y, name, x.size), color=class_color(i), label=name)
    if chance is not None:
        ax.axhline(chance, color="0.5", ls=":", lw=1, label=f"chance ({chance:.2f})")
    ax.set(xlabel=EPOCH, ylabel=ACC, title=title)
    _legend(ax, loc="lower right")
    return fig


def change_point(
    epochs: Any, acc: Any, epoch_cp: float | None, ylabel: str = ACC,
    title: str = "End of the latent phase", chance: float | None = None,
) -> Figure:
    """The learning curve with the latent phase shaded and the change point marked.

    Parameters
    ----------
    epochs, acc : array_like, shape (E,)
    epoch_cp : float or None
        Last epoch of the latent phase; None when the curve never rises.
    """
    x = _vec(epochs, "epochs")
    y = _vec(acc, "acc", x.size)
    if x.size == 0:
        return _no_data(title)
    fig, axes = _figure(size=(6.4, 3.8))
    ax = axes[0, 0]
    ax.plot(x, y, color=SPLIT_STYLES["val"][0], marker=".", label="learning curve")
    if chance is not None:
        ax.axhline(chance, color="0.5", ls=":", lw=1, label=f"chance ({chance:.2f})")
    if epoch_cp is None or not np.isfinite(epoch_cp):
        ax.text(0.02, 0.95, "no change point", transform=ax.transAxes, va="top", color="0.3")
    else:
        ax.axvspan(np.nanmin(x), epoch_cp, color="0.9", zorder=0, label="latent phase")
        _mark_change_point(ax, epoch_cp)
        ax.annotate(f"epoch {epoch_cp:g}", (epoch_cp, 0.5), xycoords=("data", "axes fraction"),
                    xytext=(4, 0), textcoords="offset points", rotation=90, va="center")
    ax.set(xlabel=EPOCH, ylabel=ylabel, title=title)
    _legend(ax, loc="lower right")
    return fig


# --- PCA of the hidden representation (Figs 9, 10, 13, 14) -----------------------------------

def _scatter_classes(ax: Axes, points: np.ndarray, labels: np.ndarray, class_names) -> dict:
    """One scatter per class (finite points only); returns class label -> PathCollection."""
    finite = np.isfinite(points).all(axis=1)
    out = {}
    for c in np.unique(labels).astype(int):
        pts = points[(labels == c) & finite]
        out[c] = ax.scatter(pts[:, 0], pts[:, 1], s=9, alpha=0.7, color=class_color(c),
                            marker=class_marker(c), linewidths=0, label=_name(class_names, c))
    return out


def _pc_labels(ax: Axes, variance_ratio=None) -> None:
    for i, set_label in enumerate((ax.set_xlabel, ax.set_ylabel)):
        share = "" if variance_ratio is None else f", {100 * variance_ratio[i]:.0f}% of variance"
        set_label(f"PC {i + 1} score (activation units{share})")


def _limits(proj: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]]:
    """Axis limits holding every finite point of ``proj`` (..., 2), with a 5% margin."""
    pts = proj.reshape(-1, 2)
    pts = pts[np.isfinite(pts).all(axis=1)]
    if pts.size == 0:
        return (-1.0, 1.0), (-1.0, 1.0)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    pad = np.where(hi > lo, 0.05 * (hi - lo), 1.0)
    return (lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1])


def _projections(projections: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    proj = np.asarray(projections, dtype=float)
    lab = np.asarray(labels).ravel()
    if proj.ndim != 3 or proj.shape[2] != 2 or proj.shape[1] != lab.size:
        raise ValueError(f"projections must have shape (E, n, 2) with n = {lab.size} labels, "
                         f"got {proj.shape}; use PCATimeline.projections")
    return proj, lab


def _frame_title(epoch: float, accuracy: np.ndarray | None, e: int) -> str:
    acc = "" if accuracy is None else f", accuracy {accuracy[e]:.2f}"
    return f"epoch {epoch:g}{acc}"


def pca_scatter(
    points: Any, labels: Any, class_names: Sequence[str],
    title: str = "PCA of the hidden representation", variance_ratio: Any = None,
) -> Figure:
    """2-D PCA scatter of the probe set, one colour per class (Figs 9, 10).

    Parameters
    ----------
    points : array_like, shape (n, 2)
        Scores on PC 1 and PC 2.
    labels : int array_like, shape (n,)
        Class of each point, indexing ``class_names``.
    class_names : sequence of str, length C
    variance_ratio : array_like, shape (2,), optional
        Share of variance of PC 1 and PC 2, shown in the axis labels.
    """
    pts = np.asarray(points, dtype=float)
    pts = pts.reshape(0, 2) if pts.size == 0 else pts
    lab = np.asarray(labels).ravel()
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must have shape (n, 2), got {pts.shape}")
    if lab.size != pts.shape[0]:
        raise ValueError(f"{pts.shape[0]} points but {lab.size} labels; pass one label per point")
    if pts.shape[0] == 0:
        return _no_data(title)
    fig, axes = _figure(size=(5.4, 4.4))
    ax = axes[0, 0]
    _scatter_classes(ax, pts, lab, class_names)
    _pc_labels(ax, variance_ratio)
    ax.set_title(title)
    ax.legend(fontsize="small", markerscale=1.8)
    return fig


def pca_scatter_grid(
    projections: Any, labels: Any, class_names: Sequence[str], epochs: Any,
    max_panels: int = 12, accuracy: Any = None, ncols: int = 4,
    title: str = "PCA of the hidden representation over epochs",
) -> Figure:
    """Small multiples of the 2-D PCA at up to ``max_panels`` evenly spaced epochs, shared axes.

    Parameters
    ----------
    projections : array_like, shape (E, n, 2)
    labels : int array_like, shape (n,)
    class_names : sequence of str
    epochs : array_like, shape (E,)
    accuracy : array_like, shape (E,), optional
        Shown in each panel's title.
    """
    proj, lab = _projections(projections, labels)
    x = _vec(epochs, "epochs")
    if proj.shape[0] != x.size:
        raise ValueError(f"projections has {proj.shape[0]} epochs but epochs has {x.size}")
    acc = None if accuracy is None else _vec(accuracy, "accuracy", x.size)
    if x.size == 0 or lab.size == 0:
        return _no_data(title)
    picks = np.unique(np.linspace(0, x.size - 1, min(x.size, max_panels)).round().astype(int))
    fig, axes = _grid(picks.size, ncols, sharex=True, sharey=True)
    xlim, ylim = _limits(proj)
    for ax, e in zip(axes, picks):
        _scatter_classes(ax, proj[e], lab, class_names)
        ax.set(xlim=xlim, ylim=ylim, title=_frame_title(x[e], acc, e))
    fig.supxlabel("PC 1 score (activation units)")
    fig.supylabel("PC 2 score (activation units)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", markerscale=1.8)
    fig.suptitle(title)
    return fig


def pca_animation(
    projections: Any, labels: Any, class_names: Sequence[str], epochs: Any, path: str | Path,
    fps: float = 4.0, accuracy: Any = None, dpi: int = 80,
) -> Path:
    """Write an animated GIF of the 2-D PCA, one frame per epoch, axes fixed across frames.

    Parameters
    ----------
    projections : array_like, shape (E, n, 2)
    labels : int array_like, shape (n,)
    class_names : sequence of str
    epochs : array_like, shape (E,)
    path : path of the ``.gif`` to write
    accuracy : array_like, shape (E,), optional

    Returns
    -------
    Path
        ``path``; a single "no data" frame when E = 0.
    """
    proj, lab = _projections(projections, labels)
    x = _vec(epochs, "epochs")
    if proj.shape[0] != x.size:
        raise ValueError(f"projections has {proj.shape[0]} epochs but epochs has {x.size}")
    acc = None if accuracy is None else _vec(accuracy, "accuracy", x.size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = _figure(size=(5.6, 4.6))
    ax = axes[0, 0]
    writer = PillowWriter(fps=fps)
    with writer.saving(fig, str(path), dpi):
        if x.size == 0:
            _note(ax)
            writer.grab_frame()
            return path
        scatters = _scatter_classes(ax, proj[0], lab, class_names)
        xlim, ylim = _limits(proj)
        ax.set(xlim=xlim, ylim=ylim)
        _pc_labels(ax)
        ax.legend(fontsize="small", markerscale=1.8, loc="upper right")
        for e in range(x.size):
            for c, scatter in scatters.items():
                pts = proj[e][lab == c]
                scatter.set_offsets(pts[np.isfinite(pts).all(axis=1)])
            ax.set_title(f"PCA of the hidden representation, {_frame_title(x[e], acc, e)}")
            writer.grab_frame()
    return path


def pca_timeline(
    epochs: Any, explained_variance: Any, accuracy: Any = None, ratio: bool = False,
    title: str = "PCA timeline of the last hidden layer",
) -> Figure:
    """Variance along each leading PC over epochs, accuracy on a twin axis (Fig 13).

    Parameters
    ----------
    epochs : array_like, shape (E,)
    explained_variance : array_like, shape (E, k)
        Variance along PC 1..k at each epoch (or its share of the total when ``ratio``).
    accuracy : array_like, shape (E,), optional
    ratio : bool
        Whether ``explained_variance`` holds shares of the total variance.
    """
    x = _vec(epochs, "epochs")
    var = _matrix(explained_variance, x.size, "explained_variance")
    if x.size == 0 or var.shape[1] == 0:
        return _no_data(title)
    fig, axes = _figure(size=(6.8, 4.0))
    ax = axes[0, 0]
    for i, color in enumerate(_ordered_colors(var.shape[1])):
        ax.plot(x, var[:, i], color=color, label=f"PC {i + 1}")
    ylabel = "share of total variance" if ratio else "variance along PC (activation units²)"
    ax.set(xlabel=EPOCH, ylabel=ylabel, title=title)
    handles, names = ax.get_legend_handles_labels()
    if accuracy is not None:
        twin = ax.twinx()
        twin.plot(x, _vec(accuracy, "accuracy", x.size), color="0.1", ls="--", label="accuracy")
        twin.set_ylabel(ACC)
        handles += twin.get_legend_handles_labels()[0]
        names += ["accuracy"]
    ax.legend(handles, names, fontsize="small", ncols=2, loc="upper left")
    return fig


def emergence(
    epochs: Any, scores: Any, class_names: Sequence[str], emergence_epochs: Mapping[int, Any],
    threshold: float, classes: Any = None, title: str = "Emergence of each class",
) -> Figure:
    """Each class's separation score over epochs, its emergence epoch marked (Fig 14).

    Parameters
    ----------
    epochs : array_like, shape (E,)
    scores : array_like, shape (E, C)
        Separation score of each class (e.g. ``Emergence.scores``, mean silhouette).
    class_names : sequence of str
    emergence_epochs : dict of class label to int or None
    threshold : float
        Score above which a class counts as separated.
    classes : int array_like, shape (C,), optional
        Class label of each column of ``scores``; default 0..C-1.
    """
    x = _vec(epochs, "epochs")
    s = _matrix(scores, x.size, "scores")
    labels = np.arange(s.shape[1]) if classes is None else np.asarray(classes, dtype=int)
    if x.size == 0 or s.shape[1] == 0:
        return _no_data(title)
    fig, axes = _figure(size=(6.8, 4.0))
    ax = axes[0, 0]
    for j, c in enumerate(labels):
        epoch = emergence_epochs.get(int(c))
        when = "never" if epoch is None else f"epoch {epoch}"
        ax.plot(x, s[:, j], color=class_color(c), label=f"{_name(class_names, c)} ({when})")
        if epoch is not None:
            ax.axvline(epoch, color=class_color(c), ls=":", lw=1.3)
    ax.axhline(threshold, color="0.4", ls="--", lw=1, label=f"threshold ({threshold:g})")
    emerged = sorted((e, int(c)) for c, e in emergence_epochs.items() if e is not None)
    order = " → ".join(_name(class_names, c) for _, c in emerged) or "none emerged"
    ax.set(xlabel=EPOCH, ylabel="separation score (mean silhouette)",
           title=f"{title}\norder: {order}")
    _legend(ax, loc="upper left")
    return fig


# --- inputs, features and layers (Figs 15, 16, 17) -------------------------------------------

def variance_maps(
    maps: Any, class_names: Sequence[str], shared_scale: bool = True, cmap: str = "magma",
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
        return _no_data(title)
    fig, axes = _grid(m.shape[0], 5, panel=(2.8, 2.9))
    finite = m[np.isfinite(m)]
    lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    for c, ax in enumerate(axes):
        vmin, vmax = (lo, hi) if shared_scale else (np.nanmin(m[c]), np.nanmax(m[c]))
        image = ax.imshow(m[c], cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set_title(_name(class_names, c), color=class_color(c))
        ax.set_xticks([])
        ax.set_yticks([])
        if not shared_scale:
            fig.colorbar(image, ax=ax, shrink=0.8, label="variance (intensity²)")
    if shared_scale:
        fig.colorbar(image, ax=axes, shrink=0.8, label="variance (intensity²)")
    fig.suptitle(title)
    return fig


def top_inputs(
    images: Any, class_names: Sequence[str],
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
        return _no_data(title)
    n_cls, k = im.shape[:2]
    fig, axes = _figure(n_cls, k, size=(1.5 * k + 0.8, 1.6 * n_cls + 0.5))
    for c in range(n_cls):
        for j in range(k):
            ax = axes[c, j]
            ax.imshow(np.clip(np.nan_to_num(im[c, j]), 0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set(color=class_color(c), linewidth=2)
        axes[c, 0].set_ylabel(_name(class_names, c), color=class_color(c))
    fig.suptitle(title)
    return fig


def layer_similarity(
    epochs: Any, series: Mapping[str, Any], ylabel: str = "correlation",
    epoch_cp: float | None = None, title: str = "Similarity of successive layers over epochs",
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
    x = _vec(epochs, "epochs")
    if not series or x.size == 0:
        return _no_data(title)
    fig, axes = _figure(size=(6.8, 4.0))
    ax = axes[0, 0]
    for (name, y), color in zip(series.items(), _ordered_colors(len(series))):
        ax.plot(x, _vec(y, name, x.size), color=color, label=name)
    if epoch_cp is not None:
        _mark_change_point(ax, epoch_cp)
    ax.set(xlabel=EPOCH, ylabel=ylabel, title=title)
    _legend(ax)
    return fig


def cka_heatmap(
    matrix: Any, layer_names: Sequence[str], title: str = "Linear CKA between layers",
    vmin: float = 0.0, vmax: float = 1.0,
) -> Figure:
    """Heat map of a layer-by-layer similarity matrix, values written in the cells up to 12 layers.

    Parameters
    ----------
    matrix : array_like, shape (L, L)
    layer_names : sequence of str, length L
    """
    m = np.asarray(matrix, dtype=float)
    if m.size == 0:
        return _no_data(title)
    n = m.shape[0]
    fig, axes = _figure(size=(1.0 + 0.55 * n + 1.2, 0.8 + 0.55 * n))
    ax = axes[0, 0]
    image = ax.imshow(m, cmap="viridis", vmin=vmin, vmax=vmax)
    ax.set_xticks(range(n), layer_names, rotation=45, ha="right")
    ax.set_yticks(range(n), layer_names)
    if n <= 12:
        for (i, j), v in np.ndenumerate(m):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize="x-small",
                        color="white" if v < (vmin + vmax) / 2 else "black")
    fig.colorbar(image, ax=ax, label="similarity")
    ax.set_title(title)
    return fig


# --- weight spectra (Martin & Mahoney phases) ------------------------------------------------

def spectra_over_epochs(
    epochs: Any, alpha: Mapping[str, Any], band: tuple[float, float] = (2.0, 6.0),
    title: str = "Power-law exponent of each layer's ESD",
) -> Figure:
    """Alpha of each layer over epochs, the heavy-tailed band shaded.

    Parameters
    ----------
    epochs : array_like, shape (E,)
    alpha : dict of layer name to array_like, shape (E,)
        In layer order; NaN where no tail was fitted.
    band : (float, float)
        The heavy-tailed range of alpha.
    """
    x = _vec(epochs, "epochs")
    if not alpha or x.size == 0:
        return _no_data(title)
    fig, axes = _figure(size=(6.8, 4.0))
    ax = axes[0, 0]
    label = f"heavy-tailed ({band[0]:g} ≤ α ≤ {band[1]:g})"
    ax.axhspan(*band, color="0.88", zorder=0, label=label)
    for (name, y), color in zip(alpha.items(), _ordered_colors(len(alpha))):
        ax.plot(x, _vec(y, name, x.size), color=color, marker=".", label=name)
    ax.set(xlabel=EPOCH, ylabel="power-law exponent α (dimensionless)", title=title)
    _legend(ax, loc="upper right")
    return fig


def phase_heatmap(
    epochs: Any, layers: Sequence[str], phases: Any, phase_names: Sequence[str],
    title: str = "Spectral phase of each layer over epochs",
) -> Figure:
    """Categorical heat map of each layer's phase at each epoch, with a legend.

    Parameters
    ----------
    epochs : array_like, shape (E,)
    layers : sequence of str, length L
    phases : array_like of str, shape (L, E)
        Names from ``phase_names``; anything else is drawn blank as "unknown".
    phase_names : sequence of str
        All phases, in their order (e.g. `dsc.core.spectra.PHASES`).
    """
    x = _vec(epochs, "epochs")
    if x.size == 0 or len(layers) == 0:
        return _no_data(title)
    ph = np.asarray(phases, dtype=object)
    if ph.shape != (len(layers), x.size):
        raise ValueError(f"phases must have shape (L, E) = {(len(layers), x.size)}, got {ph.shape}")
    code = {name: i for i, name in enumerate(phase_names)}
    codes = np.ma.masked_invalid(np.vectorize(lambda p: code.get(p, np.nan), otypes=[float])(ph))
    colors = [PHASE_PALETTE[i % len(PHASE_PALETTE)] for i in range(len(phase_names))]
    cmap = ListedColormap(colors)
    norm = BoundaryNorm(np.arange(len(colors) + 1) - 0.5, len(colors))
    fig, axes = _figure(size=(7.6, 1.2 + 0.4 * len(layers)))
    ax = axes[0, 0]
    ax.pcolormesh(_edges(x), np.arange(len(layers) + 1) - 0.5, codes, cmap=cmap, norm=norm)
    ax.set_yticks(range(len(layers)), layers)
    ax.invert_yaxis()
    ax.set(xlabel=EPOCH, title=title)
    handles = [Patch(color=c, label=n) for c, n in zip(colors, phase_names)]
    if codes.mask.any():
        handles.append(Patch(facecolor="white", edgecolor="0.5", label="unknown"))
    fig.legend(handles=handles, loc="outside right upper", fontsize="small")
    return fig


def _esd_on_ax(
    ax: Axes, title: str, evals, mp_x, mp_density, lambda_plus, log: bool, legend: bool = True,
) -> None:
    ev = np.asarray(evals, dtype=float).ravel()
    ev = ev[np.isfinite(ev) & ((ev > 0) if log else True)]
    ax.set_title(title)
    if ev.size == 0:
        _note(ax)
        return
    n_bins = int(np.clip(2 * np.sqrt(ev.size), 10, 80))
    log_bins = log and ev.max() > ev.min()
    bins = np.geomspace(ev.min(), ev.max(), n_bins + 1) if log_bins else n_bins
    ax.hist(ev, bins=bins, density=True, color="0.65", label=f"ESD ({ev.size} eigenvalues)")
    if mp_x is not None and mp_density is not None:
        mx, md = np.asarray(mp_x, dtype=float).ravel(), np.asarray(mp_density, dtype=float).ravel()
        keep = np.isfinite(mx) & np.isfinite(md) & ((md > 0) if log else True)
        ax.plot(mx[keep], md[keep], color=SERIES_PALETTE[1], lw=1.6, label="Marchenko-Pastur fit")
    if lambda_plus is not None and np.isfinite(lambda_plus):
        label = f"bulk edge λ+ = {lambda_plus:.3g}"
        ax.axvline(lambda_plus, color="0.1", ls="--", lw=1, label=label)
    if log:
        ax.set(xscale="log", yscale="log")
    ax.set(xlabel="eigenvalue λ of WᵀW (squared singular value)", ylabel="density (per unit λ)")
    if legend:
        _legend(ax)


def esd_histogram(
    evals: Any, mp_x: Any, mp_density: Any, lambda_plus: float | None, title: str = "ESD",
    log: bool = True,
) -> Figure:
    """Empirical spectral density with the fitted Marchenko-Pastur density and bulk edge.

    Parameters
    ----------
    evals : array_like, shape (m,)
        Eigenvalues of ``W^T W``.
    mp_x, mp_density : array_like, shape (q,), or None
        The fitted MP density (per unit λ) on a grid.
    lambda_plus : float or None
        The MP bulk edge.
    log : bool
        Log-spaced bins and log axes (non-positive eigenvalues skipped).
    """
    fig, axes = _figure(size=(5.6, 4.0))
    _esd_on_ax(axes[0, 0], title, evals, mp_x, mp_density, lambda_plus, log)
    return fig


def esd_grid(
    panels: Sequence[Sequence[Any]], ncols: int = 3, log: bool = True,
    title: str = "Empirical spectral densities",
) -> Figure:
    """Small multiples of `esd_histogram`.

    Parameters
    ----------
    panels : sequence of (title, evals (m,), mp_x (q,), mp_density (q,), lambda_plus)
    """
    if len(panels) == 0:
        return _no_data(title)
    fig, axes = _grid(len(panels), ncols, panel=(4.2, 3.4))
    for ax, (name, evals, mp_x, mp_density, lambda_plus) in zip(axes, panels):
        _esd_on_ax(ax, name, evals, mp_x, mp_density, lambda_plus, log, legend=False)
        ax.set(xlabel="λ", ylabel="density (per unit λ)")
    handles = {h.get_label().split(" (")[0].split(" =")[0]: h for ax in axes
               for h in ax.get_legend_handles_labels()[0]}
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=3)
    fig.suptitle(title)
    return fig


# --- hierarchical modes ----------------------------------------------------------------------

def modes_curves(
    k: Any, series: Mapping[str, Any], ylabel: str = ACC, logx: bool = True,
    title: str = "Keeping only the k leading singular modes", chance: float | None = None,
) -> Figure:
    """A metric against the number k of singular modes kept, one line per series.

    Series named ``"<group>/<kind>"`` share the group's colour; a kind containing "random" is
    dashed (random modes kept instead of the leading ones).

    Parameters
    ----------
    k : array_like, shape (m,)
    series : dict of str to array_like, shape (m,)
        e.g. ``{"conv1/leading": ..., "conv1/random": ..., "all/leading": ...}``.
    """
    kk = _vec(k, "k")
    if not series or kk.size == 0:
        return _no_data(title)
    groups = list(dict.fromkeys(name.rpartition("/")[0] or name for name in series))
    fig, axes = _figure(size=(6.8, 4.0))
    ax = axes[0, 0]
    for name, y in series.items():
        color = SERIES_PALETTE[groups.index(name.rpartition("/")[0] or name) % len(SERIES_PALETTE)]
        ls = "--" if "random" in name.rpartition("/")[2] else "-"
        ax.plot(kk, _vec(y, name, kk.size, per="k"), color=color, ls=ls, marker=".", label=name)
    if chance is not None:
        ax.axhline(chance, color="0.5", ls=":", lw=1, label=f"chance ({chance:.2f})")
    if logx:
        ax.set_xscale("log")
    ax.set(xlabel="singular modes kept, k", ylabel=ylabel, title=title)
    _legend(ax)
    return fig


def _two_segment(k: np.ndarray, b: float, s1: float, s2: float, c: float) -> np.ndarray:
    """err(k) with ln err = c + s1 ln k for k <= b, continuous with slope s2 beyond."""
    lk, lb = np.log(k), np.log(b)
    return np.exp(c + s1 * np.minimum(lk, lb) + s2 * np.maximum(lk - lb, 0.0))


def _field(fit: Any, name: str) -> float:
    value = fit[name] if isinstance(fit, Mapping) else getattr(fit, name)
    return float("nan") if value is None else float(value)


def power_law_fit(
    k: Any, err: Any, fit: Any, ylabel: str = "error (1 − accuracy)",
    title: str = "Two-segment power law of error against modes kept",
) -> Figure:
    """Log-log error against k with the fitted two-segment power law and its breakpoint.

    Parameters
    ----------
    k, err : array_like, shape (m,)
        Points with k <= 0, err <= 0 or non-finite values are skipped.
    fit : dict or `dsc.core.modes.PowerLawFit`
        With ``breakpoint``, ``slope_1``, ``slope_2`` and ``intercept`` (natural log of err at
        k = 1 on the first segment).
    """
    kk, ee = _vec(k, "k"), _vec(err, "err")
    keep = np.isfinite(kk) & np.isfinite(ee) & (kk > 0) & (ee > 0)
    kk, ee = kk[keep], ee[keep]
    if kk.size == 0:
        return _no_data(title)
    b, s1, s2, c = (_field(fit, n) for n in ("breakpoint", "slope_1", "slope_2", "intercept"))
    fig, axes = _figure(size=(5.8, 4.2))
    ax = axes[0, 0]
    ax.plot(kk, ee, "o", color="0.3", ms=4, label="measured")
    if np.isfinite([b, s1, s2, c]).all() and b > 0:
        inside = [b] if kk.min() < b < kk.max() else []
        grid = np.union1d(np.geomspace(kk.min(), kk.max(), 200), inside)
        ax.plot(grid, _two_segment(grid, b, s1, s2, c), color=SERIES_PALETTE[1],
                label=f"fit: slope {s1:.2f} then {s2:.2f}")
        ax.axvline(b, color="0.15", ls="--", lw=1, label=f"breakpoint k = {b:.3g}")
    else:
        ax.text(0.02, 0.04, "no fit", transform=ax.transAxes, color="0.3")
    ax.set(xscale="log", yscale="log", xlabel="singular modes kept, k", ylabel=ylabel, title=title)
    _legend(ax)
    return fig


# --- logistic learning decomposition (Figs 11, 12) -------------------------------------------

def _lld_on_ax(ax: Axes, t, y, curve, component_curves, constant, title: str, r2=None) -> None:
    tt = _vec(t, "t")
    ax.set_title(title if r2 is None or not np.isfinite(r2) else f"{title} (R² = {r2:.3f})")
    if tt.size == 0:
        _note(ax)
        return
    ax.plot(tt, _vec(y, "y", tt.size, per="t"), "o", ms=3, color="0.55", label="data")
    fitted = _vec(curve, "curve", tt.size, per="t")
    ax.plot(tt, fitted, color="0.05", lw=1.6, label="sum of logistics")
    comps = np.asarray(component_curves, dtype=float).reshape(-1, tt.size)
    for i, comp in enumerate(comps):
        ax.plot(tt, comp + constant, color=SERIES_PALETTE[i % len(SERIES_PALETTE)], ls="--",
                label=f"component {i + 1}")
    _legend(ax, loc="lower right")


def lld_fit(
    t: Any, y: Any, curve: Any, component_curves: Any, constant: float,
    title: str = "Logistic learning decomposition", r2: float | None = None, ylabel: str = ACC,
) -> Figure:
    """A learning curve, its fitted sum of logistics and each component (Figs 11, 12).

    Parameters
    ----------
    t, y, curve : array_like, shape (T,)
        Epochs, the data and the fitted curve.
    component_curves : array_like, shape (N, T)
        Each logistic component; drawn offset by ``constant``.
    constant : float
        The fitted baseline.
    r2 : float, optional
        Shown in the title.
    """
    fig, axes = _figure(size=(6.4, 4.0))
    _lld_on_ax(axes[0, 0], t, y, curve, component_curves, constant, title, r2)
    axes[0, 0].set(xlabel=EPOCH, ylabel=ylabel)
    return fig


def lld_overlay(
    runs: Sequence[Mapping[str, Any]], ncols: int = 3, ylabel: str = ACC,
    title: str = "Logistic learning decomposition of each run",
) -> Figure:
    """Small multiples of `lld_fit`, one per run, shared y axis.

    Parameters
    ----------
    runs : sequence of dict
        Keys ``label``, ``t``, ``y``, ``curve``, ``component_curves``, ``constant`` and
        optionally ``r2`` (see `lld_fit`).
    """
    if len(runs) == 0:
        return _no_data(title)
    fig, axes = _grid(len(runs), ncols, panel=(4.0, 3.2), sharey=True)
    for ax, run in zip(axes, runs):
        _lld_on_ax(ax, run["t"], run["y"], run["curve"], run["component_curves"],
                   run["constant"], str(run["label"]), run.get("r2"))
    fig.supxlabel(EPOCH)
    fig.supylabel(ylabel)
    fig.suptitle(title)
    return fig


def _numeric(values: Any) -> np.ndarray | None:
    """``values`` as floats when every one reads as a number (MLflow params are strings)."""
    try:
        return np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError):
        return None


def lld_centers_widths(
    centers: Any, widths: Any, colour_values: Any, colour_label: str,
    title: str = "Logistic components across runs",
) -> Figure:
    """Centre against width of each logistic component, coloured by a run parameter.

    Numeric ``colour_values`` get a colour bar, others a legend with one entry per value.

    Parameters
    ----------
    centers, widths : array_like, shape (n,)
        One entry per component (epochs).
    colour_values : array_like, shape (n,)
        The parameter of each component's run.
    colour_label : str
        The parameter's name.
    """
    cx, wy = _vec(centers, "centers"), _vec(widths, "widths")
    values = np.asarray(colour_values, dtype=object).ravel()
    if not cx.size == wy.size == values.size:
        raise ValueError(f"centers, widths and colour_values differ in length: "
                         f"{cx.size}, {wy.size}, {values.size}")
    keep = np.isfinite(cx) & np.isfinite(wy)
    if not keep.any():
        return _no_data(title)
    fig, axes = _figure(size=(6.0, 4.2))
    ax = axes[0, 0]
    numeric = _numeric(values)
    if numeric is not None:
        finite = numeric[keep & np.isfinite(numeric)]
        decades = finite.size and finite.min() > 0 and finite.max() >= 100 * finite.min()
        sc = ax.scatter(cx[keep], wy[keep], c=numeric[keep], cmap="viridis", s=30,
                        norm="log" if decades else None)
        fig.colorbar(sc, ax=ax, label=colour_label)
    else:
        for i, v in enumerate(dict.fromkeys(values[keep])):
            sel = keep & (values == v)
            color = SERIES_PALETTE[i % len(SERIES_PALETTE)]
            ax.scatter(cx[sel], wy[sel], color=color, s=30, label=str(v))
        ax.legend(title=colour_label, fontsize="small")
    ax.set(xlabel="logistic centre (epoch)", ylabel="logistic width (epochs)", title=title)
    return fig


def lld_variance_explained(
    run_labels: Sequence[str], r2_1: Any, r2_2: Any,
    title: str = "Variance explained by one and by two logistics",
) -> Figure:
    """Grouped bars of R² for one and two logistic components, one group per run.

    Parameters
    ----------
    run_labels : sequence of str, length n
    r2_1, r2_2 : array_like, shape (n,)
        R² of the one- and two-component fits; NaN bars are left empty.
    """
    n = len(run_labels)
    if n == 0:
        return _no_data(title)
    fig, axes = _figure(size=(max(4.8, 1.0 + 0.9 * n), 4.0))
    ax = axes[0, 0]
    x = np.arange(n)
    for shift, r2, label, color in ((-0.2, r2_1, "1 logistic", SERIES_PALETTE[0]),
                                    (0.2, r2_2, "2 logistics", SERIES_PALETTE[1])):
        heights = _vec(r2, label, n, per="run")
        bars = ax.bar(x + shift, np.nan_to_num(heights), width=0.4, color=color, label=label)
        ax.bar_label(bars, ["" if np.isnan(h) else f"{h:.3f}" for h in heights], fontsize="x-small")
    finite = np.concatenate([_vec(r2_1, "r2_1"), _vec(r2_2, "r2_2")])
    finite = finite[np.isfinite(finite)]
    low = max(0.0, math.floor((finite.min() - 0.02) * 10) / 10) if finite.size else 0.0
    ax.set_ylim(min(low, 0.9), 1.02)
    ax.set_xticks(x, run_labels, rotation=30 if n > 4 else 0, ha="right" if n > 4 else "center")
    ax.set(ylabel="R² (share of variance explained)", title=title)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=2)
    return fig


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


def to_base64_png(fig: Figure, dpi: int = 110) -> str:
    """The figure as base64-encoded PNG text, for ``<img src="data:image/png;base64,...">``."""
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _close(fig: Figure) -> None:
    """Release the figure's artists, and pyplot's hold on it if pyplot made it."""
    if fig.canvas.manager is not None:
        from matplotlib import pyplot  # only reached for figures pyplot already manages

        pyplot.close(fig)
    fig.clear()

