"""The steps of `dsc analyze` that read the snapshots and the learning curves.

Each step takes arrays and settings, draws its figures through a `FigureWriter`, and returns a
frozen result: what it found, its report section, and ``summary()``, its entry of
``summary.json``. The pipeline that calls them in order is `dsc.jobs.analyze.run_analysis`.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from dsc.core import snapshot, timeline
from dsc.core.analysis_helpers import near_layers_summary, pick_esd_epochs, series_at
from dsc.core.lld import Selection
from dsc.core.lld import select as lld_select
from dsc.core.spectra import PHASES, fit_mp, mp_density
from dsc.figures import curves as curve_figures
from dsc.figures import lld as lld_figures
from dsc.figures import pca as pca_figures
from dsc.figures import report
from dsc.figures import similarity as similarity_figures
from dsc.figures import spectra as spectra_figures
from dsc.figures.animation import pca_gif
from dsc.jobs.analyze.plumbing import FigureWriter

ESD_MAX_COLUMNS = 6  # layers shown side by side in the ESD grid
ESD_MIN_SIDE = 32  # ESD histograms for weight matrices (or kernel slices) at least this wide


# --- learning curves ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CurvesResult:
    """The learning curves at the epochs of acc/val: epochs (E,), series name -> (E,)."""

    epochs: np.ndarray
    series: dict[str, np.ndarray]
    section: report.Section

    def summary(self) -> dict[str, Any]:
        return {"epochs": self.epochs, **self.series}


def curves(history: dict[str, tuple[np.ndarray, np.ndarray]], n_classes: int, draw: FigureWriter) -> CurvesResult:
    """Accuracy and loss of both splits by epoch; ``history`` maps a metric to (steps, values)."""
    steps = history["acc/val"][0]
    series = {k: series_at(*history[k], steps) for k in history if history[k][0].size}
    image = draw(
        "learning_curves",
        curve_figures.learning_curves(steps, series, chance=1 / n_classes),
        "accuracy and loss of the training and validation splits by epoch",
    )
    return CurvesResult(steps, series, report.Section("Learning curves", images=(image,)))


# --- 1. PCA timeline ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PCAResult:
    """The PCA of one layer's probe activations at each snapshot epoch."""

    layer: str
    epochs: list[int]
    timeline: timeline.PCATimeline
    section: report.Section

    def summary(self) -> dict[str, Any]:
        tl = self.timeline
        return {
            "layer": self.layer,
            "epochs": self.epochs,
            "explained_variance": tl.explained_variance,
            "explained_variance_ratio": tl.explained_variance_ratio,
            "total_variance": tl.total_variance,
        }


def pca(
    snaps: snapshot.Snapshots, layer: str, n_components: int, accuracy: np.ndarray, draw: FigureWriter
) -> PCAResult:
    """PCA timeline, first and last planes, a grid of planes and the GIF (Figs 9, 10, 13).

    ``accuracy`` (E,) is acc/val at the snapshot epochs, shown beside the planes.
    """
    epochs, classes = snaps.epochs, list(snaps.classes)
    tl = timeline.pca_timeline(snaps.activations(layer), n_components)
    images = [
        draw(
            "pca_timeline",
            pca_figures.pca_timeline(epochs, tl.explained_variance, accuracy, title=f"PCA timeline of {layer}"),
            "variance along each leading PC over epochs, validation accuracy on the right axis (Fig 13)",
        )
    ]
    for tag, e in (("first", 0), ("last", len(epochs) - 1)):
        title = f"PCA of {layer} at epoch {epochs[e]} (accuracy {accuracy[e]:.2f})"
        images.append(
            draw(
                f"pca_{tag}",
                pca_figures.pca_scatter(
                    tl.projections[e], snaps.labels, classes, title, tl.explained_variance_ratio[e, :2]
                ),
                f"probe images on PC 1 and PC 2 at the {tag} snapshot (Fig {9 if tag == 'first' else 10})",
            )
        )
    images.append(
        draw(
            "pca_grid",
            pca_figures.pca_scatter_grid(tl.projections, snaps.labels, classes, epochs, accuracy=accuracy),
            "the PCA plane at evenly spaced epochs, shared axes",
        )
    )
    gif = pca_gif(tl.projections, snaps.labels, classes, epochs, draw.directory / "pca.gif", accuracy=accuracy)
    images.append(report.Image(gif.name, "the PCA plane at every snapshot epoch", gif.read_bytes(), "image/gif"))
    section = report.Section(
        f"1. PCA timeline of {layer} (Figs 9, 10, 13)",
        f"PCA of the {len(snaps.labels)} probe images' {layer} activations, fitted at each epoch.",
        images=tuple(images),
    )
    return PCAResult(layer, epochs, tl, section)


# --- 3. change point ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ChangePointResult:
    """The end of the latent phase of acc/val; ``metrics`` (``transition_epoch``) are logged."""

    change: timeline.ChangePoint
    metrics: dict[str, float]
    section: report.Section

    @property
    def epoch(self) -> int | None:
        return self.change.epoch

    def summary(self) -> dict[str, Any]:
        return {"metric": "acc/val", **asdict(self.change)}


def change_point(steps: np.ndarray, acc: np.ndarray, n_classes: int, draw: FigureWriter) -> ChangePointResult:
    """The change point of acc/val, ``steps`` and ``acc`` of shape (n,)."""
    cp = timeline.change_point(acc, steps)
    image = draw(
        "change_point",
        curve_figures.change_point(steps, acc, cp.epoch, chance=1 / n_classes),
        "validation accuracy, latent phase shaded",
    )
    section = report.Section(
        "3. Change point",
        "End of the latent phase of acc/val: the knot of a "
        "flat-then-rising hinge fitted up to the half-rise (dsc.core.timeline.change_point).",
        rows={"transition epoch": cp.epoch, "onset": cp.onset, "rise": cp.rise, "noise sd": cp.noise},
        images=(image,),
    )
    metrics = {} if cp.epoch is None else {"transition_epoch": float(cp.epoch)}
    return ChangePointResult(cp, metrics, section)


# --- 5. layer similarity -----------------------------------------------------------------------


@dataclass(frozen=True)
class SimilarityResult:
    """Similarity of the layers over epochs: Pearson correlation and linear CKA.

    ``corr`` and ``cka_successive`` map a layer pair to (E,); ``cka`` is (E, L, L);
    ``by_distance_*`` are `near_layers_summary` of the first and last CKA matrices.
    """

    layers: list[str]
    corr: dict[str, np.ndarray]
    cka_successive: dict[str, np.ndarray]
    cka: np.ndarray
    by_distance_first: dict[str, Any]
    by_distance_last: dict[str, Any]
    section: report.Section

    def summary(self) -> dict[str, Any]:
        return {
            "layers": self.layers,
            "corr": self.corr,
            "cka_successive": self.cka_successive,
            "cka_first": self.cka[0],
            "cka_last": self.cka[-1],
            "by_distance_first": self.by_distance_first,
            "by_distance_last": self.by_distance_last,
        }


def similarity(snaps: snapshot.Snapshots, change_epoch: int | None, draw: FigureWriter) -> SimilarityResult:
    """Successive layers' correlation and CKA over epochs (Fig 17), every pair's CKA first and last."""
    epochs, layers = snaps.epochs, snaps.layers
    cka, corr = snaps.cka(), snaps.corr()
    pairs = {f"{x}-{y}": cka[:, i, i + 1] for i, (x, y) in enumerate(itertools.pairwise(layers))}
    fig = similarity_figures.layer_similarity(epochs, corr, "Pearson correlation", change_epoch)
    images = [draw("corr_successive", fig, "correlation between successive layers' activations over epochs (Fig 17)")]
    fig = similarity_figures.layer_similarity(
        epochs, pairs, "linear CKA", change_epoch, title="CKA of successive layers over epochs"
    )
    images.append(draw("cka_successive", fig, "linear CKA between successive layers over epochs"))
    for tag, e in (("first", 0), ("last", -1)):
        fig = similarity_figures.cka_heatmap(cka[e], layers, title=f"Linear CKA between layers, epoch {epochs[e]}")
        images.append(draw(f"cka_{tag}", fig, f"CKA of every pair of layers at the {tag} snapshot"))
    first, last = near_layers_summary(cka[0]), near_layers_summary(cka[-1])
    rows = {
        "near layers more alike (last epoch)": last["near_more_alike"],
        "slope of mean CKA per layer of distance (last)": last["slope"],
        **{f"mean CKA at distance {d} (last)": v for d, v in zip(last["distance"], last["mean_cka"])},
    }
    section = report.Section(
        "5. Layer similarity (Fig 17)",
        "Pearson correlation of successive layers of one shape, and linear CKA of successive layers, over epochs.",
        rows=rows,
        images=tuple(images),
    )
    return SimilarityResult(layers, corr, pairs, cka, first, last, section)


# --- 6. weight spectra -------------------------------------------------------------------------


@dataclass(frozen=True)
class BulkFit:
    """The Marchenko-Pastur bulk fitted to one layer's ESD at one epoch."""

    sigma2: float
    lambda_minus: float
    lambda_plus: float
    bulk_share: float  # share of the eigenvalues inside the bulk


@dataclass(frozen=True)
class SpectraResult:
    """Spectral scalars by layer over epochs (each (E,)), phases, and the MP bulk at some epochs."""

    layers: list[str]
    scalars: dict[str, dict[str, np.ndarray]]  # alpha, num_spikes, stable_rank, lambda_max -> layer -> (E,)
    phases: dict[str, list[str]]  # layer -> phase at each epoch
    esd_epochs: list[int]
    esd_layers_shown: list[str]
    esd: dict[int, dict[str, BulkFit]]  # epoch -> layer -> bulk
    section: report.Section

    def summary(self) -> dict[str, Any]:
        return {
            "layers": self.layers,
            **self.scalars,
            "phases": self.phases,
            "esd_epochs": self.esd_epochs,
            "esd_layers_shown": self.esd_layers_shown,
            "esd": {e: {n: asdict(b) for n, b in fits.items()} for e, fits in self.esd.items()},
        }


def spectra(
    snaps: snapshot.Snapshots,
    shapes: dict[str, tuple[int, int]],
    esd_epochs: tuple[int, ...],
    change_epoch: int | None,
    draw: FigureWriter,
) -> SpectraResult:
    """Alpha and phases over epochs; ESD histograms with their MP bulk at ``esd_epochs``.

    ``shapes`` gives each layer's (out, in); empty ``esd_epochs`` means first, transition, last.
    """
    epochs, layers = snaps.epochs, snaps.weight_layers
    scalars = {k: snaps.spectral(k) for k in ("alpha", "num_spikes", "stable_rank", "lambda_max")}
    phases = snaps.phases()
    images = [
        draw("alpha", spectra_figures.spectra_over_epochs(epochs, scalars["alpha"]), "alpha of each layer over epochs"),
        draw(
            "phases",
            spectra_figures.phase_heatmap(epochs, layers, phases, PHASES),
            "spectral phase of each layer over epochs",
        ),
    ]
    picks = pick_esd_epochs(epochs, esd_epochs, change_epoch)
    # A Marchenko-Pastur bulk says little about a 3 x 3 kernel slice: the histograms show the
    # layers at least ESD_MIN_SIDE wide both ways (the widest ones in a smaller network); every
    # layer's fit is in the summary.
    side = {n: min(shapes.get(n, (0, 0))) for n in layers}
    shown = [n for n in layers if side[n] >= min(ESD_MIN_SIDE, max(side.values()))]
    if len(shown) > ESD_MAX_COLUMNS:  # a deep network: evenly spaced layers, the first and last kept
        shown = [shown[i] for i in np.unique(np.linspace(0, len(shown) - 1, ESD_MAX_COLUMNS).round().astype(int))]
    esd: dict[int, dict[str, BulkFit]] = {}
    panels = []
    for e in picks:
        esd[e] = {}
        for layer in layers:
            ev = np.asarray(snaps.by_epoch[e].eigenvalues[layer], dtype=np.float64)
            n, m = shapes.get(layer, (len(ev), len(ev)))
            sigma2, lo, hi = fit_mp(ev, n, m) if ev.size else (0.0, 0.0, 0.0)
            share = float((ev <= hi).mean()) if ev.size else float("nan")
            esd[e][layer] = BulkFit(sigma2, lo, hi, share)
            if layer not in shown:
                continue
            mx = md = None
            if sigma2 > 0 and hi > lo:
                mx = np.linspace(max(lo, hi * 1e-4), hi, 200)
                md = share * mp_density(mx, max(n, m) / min(n, m), sigma2, max(n, m))  # bulk share of the ESD
            panels.append((f"{layer}, epoch {e}", ev, mx, md, hi if sigma2 > 0 else None))
    fig = spectra_figures.esd_grid(
        panels, ncols=len(shown), title=f"Empirical spectral densities at epochs {', '.join(map(str, picks))}"
    )
    images.append(
        draw(
            "esd",
            fig,
            "eigenvalues of W^T W with the fitted Marchenko-Pastur bulk (scaled to the "
            "bulk's share), one row per epoch (first, transition, last by default)",
        )
    )
    section = report.Section(
        "6. Weight spectra over epochs",
        "Power-law exponent of each layer's ESD tail and Martin & Mahoney's phase, per epoch.",
        images=tuple(images),
    )
    return SpectraResult(layers, scalars, dict(zip(layers, phases.tolist())), picks, shown, esd, section)


# --- 8. logistic learning decomposition --------------------------------------------------------


@dataclass(frozen=True)
class LLDResult:
    """acc/val decomposed into a constant plus N logistics, N chosen by BIC (0: no learning process)."""

    selection: Selection
    section: report.Section

    def summary(self) -> dict[str, Any]:
        sel = self.selection
        return {
            "metric": "acc/val",
            "r2": {str(n): f.r2 for n, f in sel.fits.items()},
            "no_process": sel.no_process,
            **sel.to_dict(),
        }


def lld(steps: np.ndarray, acc: np.ndarray, max_components: int, draw: FigureWriter) -> LLDResult:
    """Fits of 1..``max_components`` logistics to acc/val (``steps``, ``acc`` of shape (n,)) (Figs 11, 12)."""
    sel = lld_select(steps, acc, max_components=max_components)
    runs = [
        {
            "label": f"{n} logistic{'s' if n > 1 else ''}",
            "t": f.t,
            "y": f.y,
            "curve": f.curve,
            "component_curves": f.component_curves,
            "constant": f.constant,
            "r2": f.r2,
        }
        for n, f in sel.fits.items()
        if f.success
    ]
    b = sel.best
    images = (
        draw(
            "lld_components",
            lld_figures.lld_overlay(runs, title="1, 2 and 3 logistic components"),
            "the learning curve fitted with 1, 2 and 3 logistic components, R² in each title",
        ),
        draw(
            "lld_best",
            lld_figures.lld_fit(
                b.t,
                b.y,
                b.curve,
                b.component_curves,
                b.constant,
                title=f"Logistic learning decomposition, N = {sel.n}",
                r2=b.r2,
            ),
            "the chosen decomposition and its components (Figs 11, 12)",
        ),
    )
    chosen = f"{sel.n} (no learning process)" if sel.no_process else sel.n
    section = report.Section(
        "8. Logistic learning decomposition (Figs 11, 12)",
        f"acc/val fitted by a constant plus N logistic components, N = 0..{max_components}; "
        f"N chosen by BIC: {sel.reason}",
        rows={f"N = {n}: R²": f.r2 for n, f in sel.fits.items()} | {"chosen N": chosen},
        images=images,
    )
    return LLDResult(sel, section)
