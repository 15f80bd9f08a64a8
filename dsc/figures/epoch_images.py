"""Small per-epoch pictures for the MLflow image grid: probe PCA, ESDs with their MP bulk, CKA.

Rendered for every snapshot of a run (61 of them by default), so cheaply: each kind of picture
keeps one Agg figure whose axes, ticks, legend and colour bar are built once, and each epoch
only replaces the data of its artists (``set_offsets``, ``StepPatch.set_data``, ``set_data``)
and its limits before drawing. Rebuilding the axes is what cost most of a picture. A picture
is rebuilt only when its layout changes (other classes, panels or layers). Margins are fixed
(a layout engine would measure every tick label of every draw), the resolution is low, and
each picture comes back as an RGB array for ``mlflow.log_image``. Drawing epoch B after epoch
A gives the same pixels as drawing B on a fresh object (tested).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from dsc.figures import style
from dsc.figures.style import SERIES_PALETTE

ESD_BINS = 30


@dataclass
class _Picture:
    """One kind of picture: its figure, what its layout was built for, and its live artists."""

    signature: Hashable
    fig: Figure
    canvas: FigureCanvasAgg
    artists: dict = field(default_factory=dict)


class EpochImages:
    """Reusable canvases of ``size`` inches at ``dpi``; each method returns (H, W, 3) uint8."""

    def __init__(self, size: tuple[float, float] = (4.0, 3.2), dpi: int = 64) -> None:
        self.size, self.dpi = size, dpi
        self._pictures: dict[str, _Picture] = {}

    def _picture(self, kind: str, signature: Hashable, build: Callable[[Figure], dict]) -> _Picture:
        """The figure of ``kind``, built anew when its ``signature`` (its layout) changed."""
        pic = self._pictures.get(kind)
        if pic is None or pic.signature != signature:
            fig = Figure(figsize=self.size, dpi=self.dpi)
            fig.subplots_adjust(left=0.14, right=0.96, bottom=0.16, top=0.86, wspace=0.35)
            pic = _Picture(signature, fig, FigureCanvasAgg(fig))
            pic.artists = build(fig)
            self._pictures[kind] = pic
        return pic

    @staticmethod
    def _render(pic: _Picture) -> np.ndarray:
        pic.canvas.draw()
        return np.asarray(pic.canvas.buffer_rgba())[..., :3].copy()

    def pca(self, coords: np.ndarray, labels: np.ndarray, classes: Sequence[str], title: str) -> np.ndarray:
        """Probe images on their first two principal components, coloured by class.

        ``coords`` (n, 2) the projections, ``labels`` (n,) class indices into ``classes``.
        """
        present = tuple(int(c) for c in np.unique(labels))

        def build(fig: Figure) -> dict:
            ax = fig.add_subplot()
            dots = {
                c: ax.scatter(
                    np.empty(0),
                    np.empty(0),
                    s=6,
                    color=style.class_color(c),
                    marker=style.class_marker(c),
                    label=style.class_name(classes, c),
                )
                for c in present
            }
            ax.set(xlabel="PC 1", ylabel="PC 2", xticks=[], yticks=[])
            if len(present) <= 10:
                ax.legend(fontsize=6, markerscale=1.5, loc="best")
            return {"ax": ax, "dots": dots}

        pic = self._picture("pca", (present, tuple(classes)), build)
        coords = np.asarray(coords, dtype=float)
        for c, dots in pic.artists["dots"].items():
            dots.set_offsets(coords[labels == c])
        ax = pic.artists["ax"]
        ax.set_title(title)
        for axis, setter in ((0, ax.set_xlim), (1, ax.set_ylim)):
            setter(*_padded(coords[:, axis]))
        return self._render(pic)

    def esd(
        self, panels: Sequence[tuple[str, np.ndarray, np.ndarray | None, np.ndarray | None]], title: str
    ) -> np.ndarray:
        """Side-by-side ESD histograms (log axes), each with its fitted Marchenko-Pastur density.

        ``panels``: (layer, eigenvalues (m,), MP grid (q,) or None, MP density (q,) or None).
        """
        names = tuple(name for name, *_ in panels)

        def build(fig: Figure) -> dict:
            rows = []
            for ax, name in zip(fig.subplots(1, max(len(names), 1), squeeze=False)[0], names):
                ax.set_title(name, fontsize=8)
                ax.tick_params(labelsize=6)
                bars = ax.stairs(np.ones(ESD_BINS), np.geomspace(1, 2, ESD_BINS + 1), fill=True, color="0.65")
                (line,) = ax.plot([], [], color=SERIES_PALETTE[1], lw=1.2)
                note = ax.text(
                    0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="0.4", visible=False
                )
                ax.set(xscale="log", yscale="log", xlabel="λ")
                # Log axes' minor ticks cost most of this picture's drawing time (a frame per epoch).
                ax.xaxis.set_minor_locator(NullLocator())
                ax.yaxis.set_minor_locator(NullLocator())
                rows.append((ax, bars, line, note))
            return {"rows": rows, "title": fig.suptitle("", fontsize=9)}

        pic = self._picture("esd", names, build)
        for (ax, bars, line, note), (_, evals, mp_x, mp_y) in zip(pic.artists["rows"], panels):
            ev = np.asarray(evals, dtype=float)
            ev = ev[np.isfinite(ev) & (ev > 0)]
            for artist in (bars, line, ax.xaxis, ax.yaxis):
                artist.set_visible(ev.size > 0)
            note.set_visible(ev.size == 0)
            if ev.size == 0:
                continue
            bins = np.geomspace(ev.min(), ev.max(), ESD_BINS + 1) if ev.max() > ev.min() else ESD_BINS
            density, edges = np.histogram(ev, bins=bins, density=True)
            bars.set_data(density, edges, baseline=0)
            mx, my = (np.empty(0), np.empty(0)) if mp_x is None or mp_y is None else (mp_x, mp_y)
            keep = np.asarray(my) > 0
            line.set_data(np.asarray(mx)[keep], np.asarray(my)[keep])
            ax.set_xlim(*_padded_log(edges))
            heights = np.concatenate([density[density > 0], np.asarray(my)[keep]])
            ax.set_ylim(*_padded_log(heights))
        pic.artists["title"].set_text(title)
        return self._render(pic)

    def cka(self, matrix: np.ndarray, layers: Sequence[str], title: str) -> np.ndarray:
        """Linear CKA between layers, ``matrix`` (L, L) in ``layers`` order, on a fixed 0-1 scale."""

        def build(fig: Figure) -> dict:
            ax = fig.add_subplot()
            im = ax.imshow(np.zeros((len(layers), len(layers))), vmin=0, vmax=1, cmap="viridis")
            ax.set_xticks(range(len(layers)), layers, rotation=90, fontsize=6)
            ax.set_yticks(range(len(layers)), layers, fontsize=6)
            fig.colorbar(im, ax=ax, shrink=0.8).ax.tick_params(labelsize=6)
            return {"ax": ax, "im": im}

        pic = self._picture("cka", tuple(layers), build)
        pic.artists["im"].set_data(np.asarray(matrix, dtype=float))
        pic.artists["ax"].set_title(title, fontsize=9)
        return self._render(pic)


def _padded(values: np.ndarray, pad: float = 0.05) -> tuple[float, float]:
    """Axis limits around ``values`` with matplotlib's default 5% margins (±0.5 when flat)."""
    lo, hi = (float(np.nanmin(values)), float(np.nanmax(values))) if np.isfinite(values).any() else (0.0, 1.0)
    span = hi - lo
    return (lo - 0.5, hi + 0.5) if span <= 0 else (lo - pad * span, hi + pad * span)


def _padded_log(values: np.ndarray, pad: float = 0.05) -> tuple[float, float]:
    """Log-axis limits around positive ``values``, 5% of the decades on each side."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size == 0:
        return 0.1, 10.0
    lo, hi = np.log10(v.min()), np.log10(v.max())
    span = hi - lo if hi > lo else 1.0
    return 10 ** (lo - pad * span), 10 ** (hi + pad * span)
