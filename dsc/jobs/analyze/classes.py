"""The steps of `dsc analyze` that ask when each class is learned and which classes make each
learning process: class emergence (2) and the per-class decomposition (9).

Each takes arrays and settings, draws its figures through a `FigureWriter`, and returns a frozen
result with its report section, ``summary()`` (its entry of ``summary.json``) and ``metrics``
(logged onto the run at step 0). The rules are documented in `dsc.core.emergence` and
`dsc.core.attribution`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dsc.core import attribution, emergence, snapshot, timeline
from dsc.core.lld import Selection
from dsc.figures import attribution as attribution_figures
from dsc.figures import emergence as emergence_figures
from dsc.figures import pca as pca_figures
from dsc.figures import report
from dsc.jobs.analyze.plumbing import FigureWriter, Skipped, skipped
from dsc.settings import AnalyzeConfig

Curves = dict[str, tuple[np.ndarray, np.ndarray]]

# --- 2. class emergence ------------------------------------------------------------------------

EMERGENCE_TITLE = "2. Class emergence, by behaviour and by representation (Fig 14)"
EMERGENCE_TEXT = (
    "Behaviour: a class emerges at the first epoch from which its validation recall stays above halfway "
    "between chance and its final value for {patience} epochs (a class whose final recall is below halfway "
    "from chance to 1 is never learned). Representation: in every snapshotted layer, a leave-one-out "
    "one-vs-rest ridge probe on {k} whitened PCA components; a class's score is its worst pairwise AUC "
    "against another class, and it emerges once the score stays {gain:g} of the way from its epoch-0 value "
    "to 1 for {patience} snapshots. Lead = behaviour's epoch minus the layer's (positive: the layer first). "
    "Third view, silhouette: the mean silhouette of the class in {layer}'s {n_pcs}-PC space stays >= "
    "{threshold:g} (dsc.core.emergence, dsc.core.timeline.class_emergence)."
)


@dataclass(frozen=True)
class EmergenceResult:
    """When each class is learned: behaviour, each layer's probe, and the silhouette view.

    ``representation`` maps each probed layer to its `emergence.Representation`; ``skipped_layers``
    maps a layer that could not be probed to the reason. ``metrics`` are logged onto the run.
    """

    behaviour: emergence.Behaviour | None
    representation: dict[str, emergence.Representation]
    skipped_layers: dict[str, str]
    silhouette: timeline.Emergence
    names: dict[int, str]  # class label -> name
    metrics: dict[str, float]
    section: report.Section

    def epochs_in(self, layer: str) -> dict[int, int | None]:
        """Class label -> the epoch the class emerges in ``layer`` (empty when not probed)."""
        rep = self.representation.get(layer)
        return {} if rep is None else {c: rep.emergence[n] for c, n in self.names.items()}

    def lead(self) -> dict[str, dict[str, int | None]]:
        """Layer -> class name -> behaviour's epoch minus the layer's (None when either is missing)."""
        beh = self.behaviour.epochs if self.behaviour else {}
        return {
            layer: {n: (None if (b := beh.get(n)) is None or e is None else b - e) for n, e in rep.emergence.items()}
            for layer, rep in self.representation.items()
        }

    def summary(self) -> dict[str, Any]:
        beh, sil, names = self.behaviour, self.silhouette, self.names
        return {
            "behaviour": None
            if beh is None
            else {
                "rule": "recall above halfway from chance to its final value",
                "chance": beh.chance,
                "patience": beh.patience,
                "epochs": beh.epochs,
                "final": beh.final,
                "level": beh.level,
                "notes": beh.notes,
            },
            "representation": {
                layer: {
                    "epochs": rep.emergence,
                    "start": dict(zip(names.values(), rep.start)),
                    "level": dict(zip(names.values(), rep.level)),
                    "scores": rep.scores,
                }
                for layer, rep in self.representation.items()
            },
            "skipped_layers": self.skipped_layers,
            "lead": self.lead(),
            "silhouette": {
                "criterion": "mean silhouette in PC space",
                "threshold": sil.threshold,
                "patience": sil.patience,
                "epochs": {names[c]: e for c, e in sil.epochs.items()},
                "order": [names[c] for c in sil.order],
                "scores": sil.scores,
            },
        }


def _probe_layers(snaps: snapshot.Snapshots, cfg: AnalyzeConfig) -> tuple[dict, dict[str, str]]:
    """`emergence.Representation` of every layer with activations at every snapshot; reasons for the rest."""
    classes, out, skipped_layers = list(snaps.classes), {}, {}
    for layer in snaps.layers:
        missing = [e for e in snaps.epochs if layer not in snaps.by_epoch[e].activations]
        if missing:
            skipped_layers[layer] = f"no activations in the snapshots of epoch(s) {missing[:5]}"
            continue
        scores = emergence.probe_scores(
            snaps.activations(layer), snaps.labels, len(classes), cfg.probe_components, cfg.seed
        )
        out[layer] = emergence.representational_emergence(
            layer, snaps.epochs, scores, classes, cfg.probe_gain, cfg.patience
        )
    return out, skipped_layers


def class_emergence(
    recall: Curves, snaps: snapshot.Snapshots, tl: timeline.PCATimeline, cfg: AnalyzeConfig, draw: FigureWriter
) -> EmergenceResult:
    """Metrics ``emergence/class_<name>`` (behaviour) and ``emergence_repr/<layer>/class_<name>``."""
    classes = list(snaps.classes)
    names = dict(enumerate(classes))
    beh = emergence.behavioural_emergence(recall, classes, cfg.patience) if recall else None
    reps, skipped_layers = _probe_layers(snaps, cfg)
    absent = [n for c, n in names.items() if np.count_nonzero(snaps.labels == c) < emergence.MIN_PROBE_IMAGES]
    sil = timeline.class_emergence(tl, snaps.labels, snaps.epochs, patience=cfg.patience, n_components=cfg.n_components)
    images = []
    if beh is not None:
        images.append(
            draw(
                "emergence_behaviour",
                emergence_figures.recall_emergence(recall, classes, beh.level, beh.epochs, beh.chance),
                "each class's validation recall, its halfway level dashed, its emergence epoch dotted",
            )
        )
    if reps:
        grid = [[np.nan if rep.emergence[n] is None else rep.emergence[n] for n in classes] for rep in reps.values()]
        row = [np.nan if beh is None or beh.epochs.get(n) is None else beh.epochs[n] for n in classes]
        images.append(
            draw(
                "emergence_layers",
                emergence_figures.emergence_grid(list(reps), classes, grid, row),
                "epoch each class emerges in each layer's probe and in behaviour; the lead of "
                "representation over behaviour",
            )
        )
    images.append(
        draw(
            "emergence",
            pca_figures.emergence(
                snaps.epochs,
                sil.scores,
                classes,
                sil.epochs,
                sil.threshold,
                sil.classes,
                title=f"Silhouette view: {cfg.layer}'s PC space",
            ),
            "silhouette of each class over epochs, emergence epochs dotted (the third view)",
        )
    )
    rows: dict[str, object] = {}
    for n in classes:
        said = (
            "no recall curve"
            if beh is None
            else (beh.epochs.get(n) if beh.epochs.get(n) is not None else beh.notes.get(n, "never"))
        )
        probe = ", ".join(
            f"{layer} {rep.emergence[n] if rep.emergence[n] is not None else '–'}" for layer, rep in reps.items()
        )
        rows[f"{n}: behaviour"] = said
        rows[f"{n}: probe epoch by layer"] = probe or "no layer probed"
    rows |= {f"layer {layer}": f"skipped: {why}" for layer, why in skipped_layers.items()}
    rows |= {f"{n}: probe": f"fewer than {emergence.MIN_PROBE_IMAGES} probe images" for n in absent}
    text = EMERGENCE_TEXT.format(
        patience=cfg.patience,
        k=cfg.probe_components,
        gain=cfg.probe_gain,
        layer=cfg.layer,
        n_pcs=cfg.n_components,
        threshold=sil.threshold,
    )
    note = "" if beh is not None else "the run logged no acc_class/<name> metric: no behavioural emergence"
    metrics = {} if beh is None else {f"emergence/class_{n}": float(e) for n, e in beh.epochs.items() if e is not None}
    for layer, rep in reps.items():
        metrics |= {f"emergence_repr/{layer}/class_{n}": float(e) for n, e in rep.emergence.items() if e is not None}
    section = report.Section(EMERGENCE_TITLE, text, rows=rows, images=tuple(images), note=note)
    return EmergenceResult(beh, reps, skipped_layers, sil, names, metrics, section)


# --- 9. per-class decomposition ----------------------------------------------------------------

CLASS_LLD_TITLE = "9. Which classes make each learning process"
CLASS_LLD_TEXT = (
    "Each class's validation recall decomposed like acc/val (N = 0..{k}, by BIC). A class's main rise is its "
    "largest component; it makes the overall component whose centre lies within {tol:g} widths of it (the "
    "larger of the two widths; the nearest centre when several). R² of the sum of the per-class fitted curves, "
    "weighted by each class's share of the probe (validation) images, against acc/val."
)


@dataclass(frozen=True)
class ClassLLDResult:
    """The per-class decompositions and the attribution of the overall components."""

    attribution: attribution.Attribution
    metrics: dict[str, float]
    section: report.Section

    def summary(self) -> dict[str, Any]:
        a = self.attribution
        return {
            "weights": a.weights,
            "r2": a.r2,
            "identity_r2": a.identity_r2,
            "tolerance": attribution.TOLERANCE,
            "components": [{**comp, "classes": m} for comp, m in zip(a.components, a.members)],
            "unattributed": a.unattributed,
            "main_rise": a.main,
            "classes": {
                n: {
                    "n": s.n,
                    "no_process": s.no_process,
                    "reason": s.reason,
                    "components": s.best.components,
                    "r2": s.best.r2,
                }
                for n, s in a.selections.items()
            },
        }


def class_lld(
    recall: Curves, classes: list[str], labels: np.ndarray, overall: Selection, max_components: int, draw: FigureWriter
) -> ClassLLDResult | Skipped:
    """Metrics ``lld_class/<name>/n_components``, ``center_<k>`` and ``width_<k>`` per class."""
    text = CLASS_LLD_TEXT.format(k=max_components, tol=attribution.TOLERANCE)
    curves = {n: recall[n] for n in classes if n in recall and np.isfinite(recall[n][1]).any()}
    if len(classes) < 2 or not curves:
        why = ValueError("the run logged no acc_class/<name> metric" if len(classes) >= 2 else "one class")
        return skipped(CLASS_LLD_TITLE, text, why)
    weights = {n: float(np.count_nonzero(labels == classes.index(n))) for n in curves}
    if not any(weights.values()):
        weights = dict.fromkeys(curves, 1.0)
    a = attribution.attribute(overall, curves, weights, max_components)
    metrics = {}
    for n, sel in a.selections.items():
        if sel.best.success:
            metrics[f"lld_class/{n}/n_components"] = float(sel.n)
        for k, comp in enumerate(sel.best.components, start=1):
            metrics |= {f"lld_class/{n}/center_{k}": comp["center"], f"lld_class/{n}/width_{k}": comp["width"]}
    rows: dict[str, object] = {}
    for k, (comp, members) in enumerate(zip(a.components, a.members), start=1):
        rows[f"process {k} (centre {comp['center']:.1f}, width {comp['width']:.2g})"] = (
            ", ".join(members) or "no class's main rise"
        )
    if not a.components:
        rows["overall curve"] = "no learning process" if overall.no_process else overall.best.message
    for n, sel in a.selections.items():
        rise = a.main[n]
        rows[f"{n}: N"] = (
            ("no learning process" if sel.no_process else sel.n if sel.best.success else sel.best.message)
            if rise is None
            else f"{sel.n}, main rise at {rise['center']:.1f} (width {rise['width']:.2g})"
        )
    rows["R² of the weighted sum of per-class fits"] = a.r2
    rows["R² of the weighted sum of per-class recalls"] = a.identity_r2
    best = overall.best
    fitted = {n: (*_finite(curves[n]), s.best.evaluate(_finite(curves[n])[0])) for n, s in a.selections.items()}
    fig = attribution_figures.class_components(
        best.t,
        best.y,
        best.component_curves,
        best.constant,
        [c["center"] for c in a.components],
        [c["width"] for c in a.components],
        fitted,
        {n: a.component_of(n) for n in a.classes},
        attribution.TOLERANCE,
    )
    image = draw(
        "lld_classes",
        fig,
        "overall components with their windows, and each class's recall and fitted "
        "curve coloured by the component it is attributed to",
    )
    return ClassLLDResult(a, metrics, report.Section(CLASS_LLD_TITLE, text, rows=rows, images=(image,)))


def _finite(curve: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    t, y = (np.asarray(v, dtype=float) for v in curve)
    keep = np.isfinite(t) & np.isfinite(y)
    return t[keep], y[keep]
