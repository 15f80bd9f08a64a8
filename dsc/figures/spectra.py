"""Weight spectra: power-law exponents and Martin & Mahoney phases over epochs, and ESD histograms."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from dsc.figures import style
from dsc.figures.style import EPOCH, PHASE_PALETTE, SERIES_PALETTE


def spectra_over_epochs(
    epochs: Any,
    alpha: Mapping[str, Any],
    band: tuple[float, float] = (2.0, 6.0),
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
    x = style.vec(epochs, "epochs")
    if not alpha or x.size == 0:
        return style.no_data(title)
    fig, axes = style.new_figure(size=(6.8, 4.0))
    ax = axes[0, 0]
    label = f"heavy-tailed ({band[0]:g} ≤ α ≤ {band[1]:g})"
    ax.axhspan(*band, color="0.88", zorder=0, label=label)
    for (name, y), color in zip(alpha.items(), style.ordered_colors(len(alpha))):
        ax.plot(x, style.vec(y, name, x.size), color=color, marker=".", label=name)
    ax.set(xlabel=EPOCH, ylabel="power-law exponent α (dimensionless)", title=title)
    style.legend(ax, loc="upper right")
    return fig


def phase_heatmap(
    epochs: Any,
    layers: Sequence[str],
    phases: Any,
    phase_names: Sequence[str],
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
    x = style.vec(epochs, "epochs")
    if x.size == 0 or len(layers) == 0:
        return style.no_data(title)
    ph = np.asarray(phases, dtype=object)
    if ph.shape != (len(layers), x.size):
        raise ValueError(f"phases must have shape (L, E) = {(len(layers), x.size)}, got {ph.shape}")
    code = {name: i for i, name in enumerate(phase_names)}
    codes = np.ma.masked_invalid(np.vectorize(lambda p: code.get(p, np.nan), otypes=[float])(ph))
    colors = [PHASE_PALETTE[i % len(PHASE_PALETTE)] for i in range(len(phase_names))]
    cmap = ListedColormap(colors)
    norm = BoundaryNorm(np.arange(len(colors) + 1) - 0.5, len(colors))
    fig, axes = style.new_figure(size=(7.6, 1.2 + 0.4 * len(layers)))
    ax = axes[0, 0]
    ax.pcolormesh(style.edges(x), np.arange(len(layers) + 1) - 0.5, codes, cmap=cmap, norm=norm)
    ax.set_yticks(range(len(layers)), layers)
    ax.invert_yaxis()
    ax.set(xlabel=EPOCH, title=title)
    handles = [Patch(color=c, label=n) for c, n in zip(colors, phase_names)]
    if codes.mask.any():
        handles.append(Patch(facecolor="white", edgecolor="0.5", label="unknown"))
    fig.legend(handles=handles, loc="outside right upper", fontsize="small")
    return fig


def _esd_on_ax(ax: Axes, title: str, evals, mp_x, mp_density, lambda_plus, log: bool) -> None:
    ev = np.asarray(evals, dtype=float).ravel()
    ev = ev[np.isfinite(ev) & ((ev > 0) if log else True)]
    ax.set_title(title)
    if ev.size == 0:
        style.note_on(ax)
        return
    n_bins = int(np.clip(2 * np.sqrt(ev.size), 10, 80))
    log_bins = log and ev.max() > ev.min()
    bins = np.geomspace(ev.min(), ev.max(), n_bins + 1) if log_bins else n_bins
    # matplotlib's stubs leave out the arrays of bin edges that hist takes
    ax.hist(ev, bins=bins, density=True, color="0.65", label=f"ESD ({ev.size} eigenvalues)")  # type: ignore[arg-type]
    if mp_x is not None and mp_density is not None:
        mx, md = np.asarray(mp_x, dtype=float).ravel(), np.asarray(mp_density, dtype=float).ravel()
        keep = np.isfinite(mx) & np.isfinite(md) & ((md > 0) if log else True)
        ax.plot(mx[keep], md[keep], color=SERIES_PALETTE[1], lw=1.6, label="Marchenko-Pastur fit")
    if lambda_plus is not None and np.isfinite(lambda_plus):
        ax.axvline(lambda_plus, color="0.1", ls="--", lw=1, label=f"bulk edge λ+ = {lambda_plus:.3g}")
    if log:
        ax.set(xscale="log", yscale="log")


def esd_grid(
    panels: Sequence[Sequence[Any]],
    ncols: int = 3,
    log: bool = True,
    title: str = "Empirical spectral densities",
) -> Figure:
    """Small multiples of empirical spectral densities, each with its fitted Marchenko-Pastur bulk.

    Parameters
    ----------
    panels : sequence of (title, evals (m,), mp_x (q,), mp_density (q,), lambda_plus)
        ``evals`` are the eigenvalues of ``W^T W``; ``mp_x``, ``mp_density`` the fitted MP
        density (per unit λ) on a grid, or None; ``lambda_plus`` its bulk edge, or None.
    log : bool
        Log-spaced bins and log axes (non-positive eigenvalues skipped).
    """
    if len(panels) == 0:
        return style.no_data(title)
    fig, axes = style.panel_grid(len(panels), ncols, panel=(4.2, 3.4))
    for ax, (name, evals, mp_x, mp_density, lambda_plus) in zip(axes, panels):
        _esd_on_ax(ax, name, evals, mp_x, mp_density, lambda_plus, log)
        ax.set(xlabel="λ", ylabel="density (per unit λ)")
    handles = {
        str(h.get_label()).split(" (")[0].split(" =")[0]: h for ax in axes for h in ax.get_legend_handles_labels()[0]
    }
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=3)
    fig.suptitle(title)
    return fig
