"""The step of `dsc analyze` that measures neural collapse per epoch (11), and what it reads for it.

NC1 and NC2 come from each layer's probe activations alone; NC3 and NC4 compare the features of
the layer that feeds the classifier with the classifier's weights at the same epoch, read from
that epoch's checkpoint (``model_state`` only). An epoch without a checkpoint, or whose
checkpoint fails its checksum (named in the summary and the report), and every other layer,
has NaN there (`dsc.core.collapse`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from dsc import tracking
from dsc.core import collapse, snapshot
from dsc.errors import TrackingError
from dsc.figures import collapse as collapse_figures
from dsc.figures import report
from dsc.jobs.analyze.plumbing import FigureWriter

CLASSIFIER = "out"
# Checkpoints read for NC3/NC4, evenly spread over the snapshot epochs: each read loads the
# whole checkpoint (optimizer state too) for one (C, d) matrix; reading every epoch's would make
# them a large part of `dsc analyze`'s time on a 60-epoch run (``bench/analyze.py`` on the
# benchmark page, docs/benchmarks.md).
WEIGHT_EPOCHS = 16
LAYERS = ("fc1", "fc2")  # always measured, with the analysed layer (--layer) when it is another

Weights = dict[int, tuple[np.ndarray, np.ndarray]]  # epoch -> (W (C, d), b (C,))


def classifier_weights(
    run_id: str, epochs: Sequence[int], most: int = WEIGHT_EPOCHS, classifier: str = CLASSIFIER
) -> tuple[Weights, dict[int, str]]:
    """The weight and bias of layer ``classifier`` at up to ``most`` of ``epochs`` that have a
    checkpoint, evenly spread, the first and last included; and ``{epoch: why}`` of the
    checkpoints left out because they cannot be read (one that fails its checksum)."""
    ckpts = tracking.list_checkpoints(run_id)
    have = [e for e in epochs if e in ckpts]
    spread = np.unique(np.linspace(0, len(have) - 1, min(most, len(have))).round().astype(int))
    out, skipped = {}, {}
    for e in (have[i] for i in spread):
        try:
            state = tracking.load_checkpoint(run_id, ckpts[e]).get("model_state", {})
        except TrackingError as exc:
            skipped[e] = str(exc)
            tqdm.write(f"warning: neural collapse: NC3 and NC4 skip epoch {e}: {exc}", file=sys.stderr)
            continue
        w, b = state.get(f"{classifier}.weight"), state.get(f"{classifier}.bias")
        if w is not None:
            out[e] = (w.double().numpy(), np.zeros(len(w)) if b is None else b.double().numpy())
    return out, skipped


COLLAPSE_TITLE = "11. Neural collapse per epoch (Papyan, Han & Donoho)"
COLLAPSE_TEXT = (
    "On the probe activations of {layers} at every snapshot: NC1 = tr(Σ_W Σ_B⁺)/C; NC2 equinorm = std/mean of "
    "the centred class means' norms; NC2 equiangle = mean over ordered class pairs of |cos + 1/(C−1)|; NC3 = "
    "‖W/‖W‖ − M/‖M‖‖² of the {clf} layer's weights against the centred class means, and NC4 = the share of "
    "probe images whose {clf} decision differs from the nearest class mean, both for {feeder} (the layer "
    "{clf} reads), at {n_w} epochs with a checkpoint, evenly spread. Below: the spikes of {clf}'s spectrum "
    "against C − 1 (dsc.core.collapse)."
)


@dataclass(frozen=True)
class CollapseResult:
    """NC figures by layer over the snapshot epochs, and the classifier's spikes.

    ``values`` maps layer -> key (`collapse.KEYS`) -> (E,); ``spikes`` is (E,) (NaN when the
    classifier is not snapshotted); ``skipped_layers`` gives the reason a layer was left out,
    ``skipped_checkpoints`` that of an epoch whose checkpoint could not be read for NC3/NC4.
    """

    epochs: list[int]
    values: dict[str, dict[str, np.ndarray]]
    spikes: np.ndarray
    n_classes: int
    weight_epochs: list[int]
    skipped_layers: dict[str, str]
    section: report.Section
    skipped_checkpoints: dict[int, str] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, float]:
        """Nothing at step 0: the NC figures are logged per epoch (`epoch_metrics`)."""
        return {}

    def epoch_metrics(self) -> dict[int, dict[str, float]]:
        """epoch -> ``nc/<layer>/<key>`` -> value, the finite ones, logged with step = epoch."""
        out: dict[int, dict[str, float]] = {}
        for i, e in enumerate(self.epochs):
            out[e] = {
                f"nc/{layer}/{k}": float(v[i])
                for layer, by_key in self.values.items()
                for k, v in by_key.items()
                if np.isfinite(v[i])
            }
        return out

    def summary(self) -> dict[str, Any]:
        at = np.flatnonzero(self.spikes == self.n_classes - 1)
        return {
            "epochs": self.epochs,
            "layers": self.values,
            "weight_epochs": self.weight_epochs,
            "skipped_layers": self.skipped_layers,
            "skipped_checkpoints": self.skipped_checkpoints,
            "out_spikes": self.spikes,
            "c_minus_1": self.n_classes - 1,
            "first_epoch_spikes_eq_c_minus_1": int(self.epochs[at[0]]) if at.size else None,
        }


def neural_collapse(
    snaps: snapshot.Snapshots,
    weights: Weights,
    layer: str,
    change_epoch: int | None,
    draw: FigureWriter,
    skipped_checkpoints: dict[int, str] | None = None,
) -> CollapseResult:
    """NC1..NC4 of fc1, fc2 and ``layer`` at every snapshot epoch; ``weights`` and
    ``skipped_checkpoints`` from `classifier_weights`."""
    epochs, n_cls = list(snaps.epochs), len(snaps.classes)
    clf = snaps.output or CLASSIFIER  # the layer whose activations are the logits
    feeder = snaps.layers[snaps.layers.index(clf) - 1] if clf in snaps.layers[1:] else None
    values, skipped_layers = {}, {}
    # dsc's networks: fc1 and fc2 always; another model: the layer that feeds its classifier
    measured = LAYERS if clf == CLASSIFIER else tuple(n for n in (feeder,) if n)
    for name in dict.fromkeys((*measured, layer)):
        missing = [e for e in epochs if name not in snaps.by_epoch[e].activations]
        if missing:
            skipped_layers[name] = (
                f"not snapshotted (epochs {missing[:5]})"
                if len(missing) < len(epochs)
                else f"not snapshotted; the snapshots hold {', '.join(snaps.layers)}"
            )
            continue
        per_epoch = []
        for e in epochs:
            acts = snaps.by_epoch[e].activations[name]
            w, b = weights.get(e, (None, None)) if name == feeder else (None, None)
            # a probe missing a class has fewer class means than the classifier has rows
            fits = w is not None and w.shape == (len(np.unique(snaps.labels)), acts[0].size)
            per_epoch.append(collapse.neural_collapse(acts, snaps.labels, *((w, b) if fits else (None, None))))
        values[name] = {k: np.array([r[k] for r in per_epoch]) for k in collapse.KEYS}
    spikes = snaps.spectral("num_spikes")[clf] if clf in snaps.weight_layers else np.full(len(epochs), np.nan)
    images = (
        draw(
            "collapse",
            collapse_figures.collapse_over_epochs(epochs, values, change_epoch),
            "NC1 to NC4 of each layer over epochs (log scale but NC4), the change point marked",
        ),
        draw(
            "collapse_spikes",
            collapse_figures.spikes_against_classes(epochs, spikes, n_cls),
            f"spikes of {clf}'s spectrum above the Marchenko-Pastur edge, against C − 1",
        ),
    )
    rows: dict[str, object] = {}
    for name, by_key in values.items():
        rows[f"{name}: NC1 first → last"] = f"{by_key['nc1'][0]:.3g} → {by_key['nc1'][-1]:.3g}"
        rows[f"{name}: NC2 equinorm, equiangle (last)"] = (
            f"{by_key['nc2_equinorm'][-1]:.3g}, {by_key['nc2_equiangle'][-1]:.3g}"
        )
        last = [i for i in range(len(epochs)) if np.isfinite(by_key["nc3"][i])]
        if last:
            rows[f"{name}: NC3, NC4 at epoch {epochs[last[-1]]}"] = (
                f"{by_key['nc3'][last[-1]]:.3g}, {by_key['nc4'][last[-1]]:.3g}"
            )
    rows[f"{clf} spikes (last) against C − 1"] = f"{spikes[-1]:g} against {n_cls - 1}"
    rows |= {f"layer {n}": f"skipped: {why}" for n, why in skipped_layers.items()}
    rows |= {f"checkpoint of epoch {e}": f"skipped: {why}" for e, why in (skipped_checkpoints or {}).items()}
    text = COLLAPSE_TEXT.format(
        layers=", ".join(values) or "no layer", clf=clf, feeder=feeder or "none", n_w=len(weights)
    )
    note = "" if weights else f"no checkpoint at a snapshot epoch holds {clf}'s weights: NC3 and NC4 are NaN"
    section = report.Section(COLLAPSE_TITLE, text, rows=rows, images=images, note=note)
    return CollapseResult(
        epochs,
        values,
        np.asarray(spikes, dtype=float),
        n_cls,
        sorted(weights),
        skipped_layers,
        section,
        dict(skipped_checkpoints or {}),
    )
