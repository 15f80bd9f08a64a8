"""The steps of `dsc analyze` that need the run's images rebuilt: inputs (4) and modes (7).

When the dataset cannot be rebuilt as it was trained on (a moved folder, a changed generator)
both return `Skipped` with the reason, and the other steps still run.
"""

from __future__ import annotations

import copy
import threading
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from dsc.core import snapshot
from dsc.core.analysis_helpers import leading_feature, stratified_subset
from dsc.data.dataset import split_indices
from dsc.errors import DataError
from dsc.figures import inputs as input_figures
from dsc.figures import modes as mode_figures
from dsc.figures import report
from dsc.figures.style import ACC, METRIC_LABELS
from dsc.jobs.analyze.plumbing import FigureWriter, Skipped, skipped
from dsc.jobs.analyze.source import Images, RunImages
from dsc.nn.modes import ModeSweep, mode_sweep
from dsc.settings import AnalyzeConfig, ModelConfig

# --- 4. variance maps and leading features -----------------------------------------------------

INPUTS_TITLE = "4. Variance maps and each class's leading feature (Figs 15, 16)"


@dataclass(frozen=True)
class LeadingFeature:
    """The unit of the analysed layer most correlated with one class, and the inputs it likes best."""

    epoch: int  # the epoch the layer's probe finds the class (the last snapshot when it never does)
    emerged: bool
    unit: int | None  # None when every unit is constant
    correlation: float
    top_indices: np.ndarray  # (k,) dataset indices of the most activating probe images
    top_labels: np.ndarray  # (k,) their classes


@dataclass(frozen=True)
class InputsResult:
    """Pixel-wise variance of each class, shape (C, H, W), and each class's leading feature."""

    classes: list[str]
    variance_maps: np.ndarray
    leading_features: dict[str, LeadingFeature]
    section: report.Section

    def summary(self) -> dict[str, Any]:
        maps = self.variance_maps
        return {
            "variance_mean": dict(zip(self.classes, maps.mean(axis=(1, 2)))),
            "variance_max": dict(zip(self.classes, maps.max(axis=(1, 2)))),
            "leading_features": {name: asdict(f) for name, f in self.leading_features.items()},
        }


def inputs(
    images: Images,
    snaps: snapshot.Snapshots,
    emergence_epochs: dict[int, int | None],
    layer: str,
    top_k: int,
    draw: FigureWriter,
) -> InputsResult | Skipped:
    """Variance maps of each class, and the ``top_k`` probe inputs of each class's leading unit.

    The leading unit of class c is read at its emergence epoch in ``layer`` (``emergence_epochs[c]``,
    a snapshot epoch: where the layer's linear probe finds the class), or at the last snapshot when
    it never emerges there.
    """
    try:
        _, ims = images.get()
    except DataError as exc:
        return skipped(INPUTS_TITLE, "", exc)
    classes = list(snaps.classes)
    per_class = []
    for c in range(len(classes)):
        imgs = ims.images[ims.labels == c].astype(np.float32) / 255.0  # (N_c, C, H, W)
        per_class.append(imgs.var(axis=0).mean(axis=0))  # (H, W), channels averaged
    maps = np.stack(per_class)
    figures = [
        draw(
            "variance_maps",
            input_figures.variance_maps(maps, classes),
            "pixel-wise variance across all exemplars of each class (intensity in [0, 1])",
        )
    ]
    rows, tops, features = {}, [], {}
    for c, name in enumerate(classes):
        epoch = emergence_epochs.get(c)
        at = epoch if epoch is not None else snaps.epochs[-1]
        acts = snaps.by_epoch[at].activations[layer]
        unit, r = leading_feature(acts, snaps.labels, c)
        flat = acts.reshape(len(snaps.labels), -1)
        order = (
            np.argsort(-flat[:, unit].astype(np.float64), kind="stable")[:top_k]
            if unit is not None
            else np.arange(min(top_k, len(snaps.labels)))
        )
        picked = ims.images[snaps.indices[order]].astype(np.float32) / 255.0  # (k, C, H, W)
        tops.append(picked[:, 0] if picked.shape[1] == 1 else picked.transpose(0, 2, 3, 1))
        features[name] = LeadingFeature(at, epoch is not None, unit, r, snaps.indices[order], snaps.labels[order])
        rows[name] = f"unit {unit} (r = {r:.2f}) at epoch {at}{'' if epoch is not None else ' (never emerged: last)'}"
    fig = input_figures.top_inputs(
        np.stack(tops),
        classes,
        title=f"Probe inputs that most activate each class's leading {layer} unit at its emergence epoch",
    )
    figures.append(
        draw(
            "top_inputs",
            fig,
            f"per class, the {layer} unit most correlated with the class "
            "indicator at its emergence epoch, and the probe images that drive it hardest",
        )
    )
    return InputsResult(classes, maps, features, report.Section(INPUTS_TITLE, rows=rows, images=tuple(figures)))


# --- 7. hierarchical modes of the final weights ------------------------------------------------


def validation_subset(images: Images, checkpoint: dict, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A stratified subset of the validation split, normalised as in training: x (n, C, H, W), y (n,).

    ``images`` is anything whose ``get()`` gives the data config and the images (`RunImages`).
    """
    cfg, ims = images.get()
    if cfg is None:
        raise DataError("the validation split needs the data config the run was trained with; none was recorded")
    _, val = split_indices(ims.labels, cfg.val_fraction, cfg.data_seed)
    idx = stratified_subset(val, ims.labels, size, seed)
    x = (torch.from_numpy(ims.images[idx]).float() / 255.0 - float(checkpoint["norm_mean"])) / float(
        checkpoint["norm_std"]
    )
    if x.shape[1] == 1 and ModelConfig(**checkpoint["model_config"]).in_channels == 3:
        x = x.expand(-1, 3, -1, -1)
    return x.contiguous(memory_format=torch.channels_last), torch.from_numpy(ims.labels[idx])


def sweep_modes(
    model: nn.Module, images: RunImages, checkpoint: dict, cfg: AnalyzeConfig, stop: threading.Event
) -> ModeSweep:
    """`mode_sweep` of a copy of ``model`` on the validation subset (torch: meant for a background thread)."""
    x, y = validation_subset(images, checkpoint, cfg.modes_max_images, cfg.seed)
    model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    return mode_sweep(model, x, y, cfg.modes_points, cfg.seed, stop)


MODES_TITLE = "7. Hierarchical modes of the final weights (Li & Huang)"
MODES_TEXT = (
    "Each weight layer is replaced by its k leading singular modes (one layer at a time, the others "
    "full; then every layer at the same fraction of its modes), against k modes drawn at random; "
    "validation accuracy and loss on a stratified validation subset."
)


@dataclass(frozen=True)
class ModesResult:
    """The modes sweep and its report section."""

    sweep: ModeSweep
    section: report.Section

    @property
    def metrics(self) -> dict[str, float]:
        """``modes/<layer>/break_rank`` of each layer (and ``all``) whose power law was fitted."""
        return break_ranks(self.sweep)

    def summary(self) -> dict[str, Any]:
        return self.sweep.to_dict()


def break_ranks(sweep: ModeSweep) -> dict[str, float]:
    """The fitted break of each layer's mode-importance power law, as metrics.

    ``modes/<layer>/break_rank`` is the k at which the two power-law segments of
    ``error(k) - error(full)`` join (`dsc.core.modes.fit_two_segment_power_law`), for each
    layer cut alone and for ``all`` layers cut together; layers whose fit failed have none.
    Li & Huang's hierarchical modes predict the break near the number of classes.
    """
    fits = {**{name: r.fit_error for name, r in sweep.layers.items()}, "all": sweep.together.fit_error}
    return {
        f"modes/{name}/break_rank": float(fit.breakpoint)
        for name, fit in fits.items()
        if fit.success and np.isfinite(fit.breakpoint)
    }


def modes(sweep: Future[ModeSweep], n_classes: int, draw: FigureWriter) -> ModesResult | Skipped:
    """Curves of each layer and of all layers together, and each power-law fit; waits for ``sweep``."""
    try:
        res = sweep.result()
    except DataError as exc:
        return skipped(MODES_TITLE, MODES_TEXT, exc)
    figures, chance = [], 1 / n_classes
    for metric, label in (("acc", ACC), ("loss", METRIC_LABELS["loss"])):
        line = chance if metric == "acc" else None
        series = {}
        for name, r in res.layers.items():
            for mode, curve in r.by_mode.items():
                vals = dict(zip(r.k, getattr(curve, metric)))
                series[f"{name}/{mode}"] = [vals.get(kk, np.nan) for kk in res.k]  # NaN beyond its modes
        fig = mode_figures.modes_curves(
            res.k, series, label, chance=line, title=f"One layer at a time: {metric} with k singular modes kept"
        )
        figures.append(
            draw(
                f"modes_{metric}_layers",
                fig,
                f"validation {metric} with k modes of one layer (solid: leading, dashed: random)",
            )
        )
        both = {f"all/{mode}": getattr(curve, metric) for mode, curve in res.together.by_mode.items()}
        fig = mode_figures.modes_curves(
            res.together.k,
            both,
            label,
            chance=line,
            title="All layers at once (k of the widest layer, same fraction elsewhere)",
        )
        figures.append(
            draw(f"modes_{metric}_all", fig, f"validation {metric} with the same fraction of every layer's modes kept")
        )
    rows = {"full model (accuracy, loss)": f"{res.full_acc:.3f}, {res.full_loss:.3f}", "images": res.n_images}
    for name, r in [*res.layers.items(), ("all", res.together)]:
        fit = r.fit_error
        if not fit.success:
            rows[f"{name}: power law"] = fit.message
            continue
        rows[f"{name}: breakpoint k, slopes"] = f"{fit.breakpoint:.3g}, {fit.slope_1:.2f} then {fit.slope_2:.2f}"
        err = res.full_acc - np.asarray(r.leading.acc)
        fig = mode_figures.power_law_fit(
            r.k, err, fit, ylabel="error(k) − error(full)", title=f"{name}: two-segment power law"
        )
        figures.append(
            draw(
                f"modes_fit_{name}",
                fig,
                f"{name}: error increase against k leading modes, two-segment power law and breakpoint",
            )
        )
    return ModesResult(res, report.Section(MODES_TITLE, MODES_TEXT, rows=rows, images=tuple(figures)))
