"""PCA of the hidden representation over epochs (Figs 9, 10, 13) and class emergence (Fig 14)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from dsc.figures import style
from dsc.figures.style import ACC, EPOCH


def limits(proj: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]]:
    """Axis limits holding every finite point of ``proj`` (..., 2), with a 5% margin."""
    pts = proj.reshape(-1, 2)
    pts = pts[np.isfinite(pts).all(axis=1)]
    if pts.size == 0:
        return (-1.0, 1.0), (-1.0, 1.0)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    pad = np.where(hi > lo, 0.05 * (hi - lo), 1.0)
    return (lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1])


def _scatter_classes(ax: Axes, points: np.ndarray, labels: np.ndarray, class_names) -> None:
    """One scatter per class (finite points only), in ``np.unique(labels)`` order."""
    finite = np.isfinite(points).all(axis=1)
    for c in np.unique(labels).astype(int):
        pts = points[(labels == c) & finite]
        ax.scatter(
            pts[:, 0],
            pts[:, 1],
            s=9,
            alpha=0.7,
            color=style.class_color(c),
            marker=style.class_marker(c),
            linewidths=0,
            label=style.class_name(class_names, c),
        )


def _pc_labels(ax: Axes, variance_ratio=None) -> None:
    setters: tuple[Callable[[str], object], ...] = (ax.set_xlabel, ax.set_ylabel)
    for i, set_label in enumerate(setters):
        share = "" if variance_ratio is None else f", {100 * variance_ratio[i]:.0f}% of variance"
        set_label(f"PC {i + 1} score (activation units{share})")


def pca_scatter(
    points: Any,
    labels: Any,
    class_names: Sequence[str],
    title: str = "PCA of the hidden representation",
    variance_ratio: Any = None,
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
        return style.no_data(title)
    fig, axes = style.new_figure(size=(5.4, 4.4))
    ax = axes[0, 0]
    _scatter_classes(ax, pts, lab, class_names)
    _pc_labels(ax, variance_ratio)
    ax.set_title(title)
    ax.legend(fontsize="small", markerscale=1.8)
    return fig


def pca_scatter_grid(
    projections: Any,
    labels: Any,
    class_names: Sequence[str],
    epochs: Any,
    max_panels: int = 12,
    accuracy: Any = None,
    ncols: int = 4,
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
    proj = np.asarray(projections, dtype=float)
    lab = np.asarray(labels).ravel()
    if proj.ndim != 3 or proj.shape[2] != 2 or proj.shape[1] != lab.size:
        raise ValueError(
            f"projections must have shape (E, n, 2) with n = {lab.size} labels, "
            f"got {proj.shape}; use PCATimeline.projections"
        )
    x = style.vec(epochs, "epochs")
    if proj.shape[0] != x.size:
        raise ValueError(f"projections has {proj.shape[0]} epochs but epochs has {x.size}")
    acc = None if accuracy is None else style.vec(accuracy, "accuracy", x.size)
    if x.size == 0 or lab.size == 0:
        return style.no_data(title)
    picks = np.unique(np.linspace(0, x.size - 1, min(x.size, max_panels)).round().astype(int))
    fig, axes = style.panel_grid(picks.size, ncols, sharex=True, sharey=True)
    xlim, ylim = limits(proj)
    for ax, e in zip(axes, picks):
        _scatter_classes(ax, proj[e], lab, class_names)
        suffix = "" if acc is None else f", accuracy {acc[e]:.2f}"
        ax.set(xlim=xlim, ylim=ylim, title=f"epoch {x[e]:g}{suffix}")
    fig.supxlabel("PC 1 score (activation units)")
    fig.supylabel("PC 2 score (activation units)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", markerscale=1.8)
    fig.suptitle(title)
    return fig


def pca_timeline(
    epochs: Any,
    explained_variance: Any,
    accuracy: Any = None,
    ratio: bool = False,
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
    x = style.vec(epochs, "epochs")
    var = style.matrix(explained_variance, x.size, "explained_variance")
    if x.size == 0 or var.shape[1] == 0:
        return style.no_data(title)
    fig, axes = style.new_figure(size=(6.8, 4.0))
    ax = axes[0, 0]
    for i, color in enumerate(style.ordered_colors(var.shape[1])):
        ax.plot(x, var[:, i], color=color, label=f"PC {i + 1}")
    ylabel = "share of total variance" if ratio else "variance along PC (activation units²)"
    ax.set(xlabel=EPOCH, ylabel=ylabel, title=title)
    handles, names = ax.get_legend_handles_labels()
    if accuracy is not None:
        twin = ax.twinx()
        twin.plot(x, style.vec(accuracy, "accuracy", x.size), color="0.1", ls="--", label="accuracy")
        twin.set_ylabel(ACC)
        handles += twin.get_legend_handles_labels()[0]
        names += ["accuracy"]
    ax.legend(handles, names, fontsize="small", ncols=2, loc="upper left")
    return fig


def emergence(
    epochs: Any,
    scores: Any,
    class_names: Sequence[str],
    emergence_epochs: Mapping[int, Any],
    threshold: float,
    classes: Any = None,
    title: str = "Emergence of each class",
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
    x = style.vec(epochs, "epochs")
    s = style.matrix(scores, x.size, "scores")
    labels = np.arange(s.shape[1]) if classes is None else np.asarray(classes, dtype=int)
    if x.size == 0 or s.shape[1] == 0:
        return style.no_data(title)
    fig, axes = style.new_figure(size=(6.8, 4.0))
    ax = axes[0, 0]
    for j, c in enumerate(labels):
        epoch = emergence_epochs.get(int(c))
        when = "never" if epoch is None else f"epoch {epoch}"
        ax.plot(x, s[:, j], color=style.class_color(c), label=f"{style.class_name(class_names, c)} ({when})")
        if epoch is not None:
            ax.axvline(epoch, color=style.class_color(c), ls=":", lw=1.3)
    ax.axhline(threshold, color="0.4", ls="--", lw=1, label=f"threshold ({threshold:g})")
    emerged = sorted((e, int(c)) for c, e in emergence_epochs.items() if e is not None)
    order = " → ".join(style.class_name(class_names, c) for _, c in emerged) or "none emerged"
    ax.set(xlabel=EPOCH, ylabel="separation score (mean silhouette)", title=f"{title}\norder: {order}")
    style.legend(ax, loc="upper left")
    return fig
