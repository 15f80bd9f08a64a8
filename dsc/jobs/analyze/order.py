"""The step of `dsc analyze` that asks whether the data predicted the order the classes were
learned in (10): the input-output modes of the training split (Saxe et al.), one-vs-rest pixel
separability, and the network's own strength along each mode over epochs.

The rules are documented in `dsc.core.saxe`. Like steps 4 and 7, it needs the images rebuilt;
when they cannot be, it returns `Skipped` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import softmax

from dsc.core import emergence, saxe, snapshot
from dsc.data.dataset import split_indices
from dsc.errors import DataError
from dsc.figures import order as order_figures
from dsc.figures import report
from dsc.jobs.analyze.plumbing import FigureWriter, Skipped, skipped
from dsc.jobs.analyze.source import Images

CLASSIFIER = "out"  # the layer whose logits give the network's outputs, where the snapshots name none
NOT_KNOWN = "the run was recorded by dsc.Recorder from a loop of its own: dsc knows its probe, not its training split"
SEPARABILITY_COMPONENTS = 32  # whitened pixel PCs the one-vs-rest separability reads

ORDER_TITLE = "10. What predicted the order: the data's input-output modes (Saxe et al.)"
ORDER_TEXT = (
    "The SVD of the correlation of the training split's centred one-hot targets with its centred pixels gives "
    "mode strengths s_k. A class's predicted time is the mean of 1/s_k weighted by the share of its target "
    "strength each mode carries, (U_ck s_k)² / Σ_j (U_cj s_j)²; the second predictor is one-vs-rest linear "
    "separability (cross-validated log-likelihood of a logistic regression on {k} whitened pixel PCs; more "
    "separable: predicted earlier). Both are ranked against each class's behavioural emergence epoch "
    "(Spearman ρ, positive: the predictor got the order right). The network's strength along mode k, "
    "a_k(t) = u_k^T Σ̂(t) v_k with Σ̂(t) the correlation of its centred softmax outputs on the probe with the "
    "probe's centred pixels, is fitted by one logistic; Saxe predicts its centre t_k ∝ 1/s_k "
    "(dsc.core.saxe)."
)


@dataclass(frozen=True)
class OrderResult:
    """Predicted against observed order, and the network's mode strengths over epochs.

    ``strengths`` (r,) and ``loadings`` (C, r) are the data's modes; ``predicted`` (C,) the Saxe
    times, ``separability`` (C,) the scores, ``observed`` (C,) the behavioural epochs (NaN: never);
    ``network`` (E, r) is a_k(t) at the snapshot epochs and ``mode_times`` (r,) the fitted t_k
    (both NaN without the classifier's activations).
    """

    classes: list[str]
    strengths: np.ndarray
    loadings: np.ndarray
    predicted: np.ndarray
    separability: np.ndarray
    observed: np.ndarray
    epochs: list[int]
    network: np.ndarray
    mode_times: np.ndarray
    spearman: dict[str, float]  # metric name -> rho (NaN: fewer than 3 ranked pairs)
    section: report.Section

    @property
    def metrics(self) -> dict[str, float]:
        """The finite Spearman correlations, logged at step 0."""
        return {k: v for k, v in self.spearman.items() if np.isfinite(v)}

    def summary(self) -> dict[str, Any]:
        names = self.classes
        return {
            "rule": "sum_k w_ck / s_k, w_ck = (U_ck s_k)^2 / sum_j (U_cj s_j)^2",
            "mode_strengths": self.strengths,
            "loadings": dict(zip(names, self.loadings)),
            "predicted_time": dict(zip(names, self.predicted)),
            "separability": dict(zip(names, self.separability)),
            "observed_epoch": dict(zip(names, self.observed)),
            "spearman": {k.removeprefix("order/"): v for k, v in self.spearman.items()},
            "network_strengths": {"epochs": self.epochs, "a": self.network.T},
            "mode_times": self.mode_times,
            "t_times_s": self.mode_times * self.strengths,
        }


def _pixels(images: np.ndarray) -> np.ndarray:
    """(n, C*H*W) float32 intensities in [0, 1] of uint8 images (n, C, H, W)."""
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def order(
    images: Images, snaps: snapshot.Snapshots, behaviour: emergence.Behaviour | None, seed: int, draw: FigureWriter
) -> OrderResult | Skipped:
    """Metrics ``order/spearman_saxe``, ``order/spearman_separability``, ``order/spearman_mode_time``."""
    text = ORDER_TEXT.format(k=SEPARABILITY_COMPONENTS)
    if not getattr(images, "training_split", True):
        return skipped(ORDER_TITLE, text, DataError(NOT_KNOWN))
    try:
        cfg, ims = images.get()
    except DataError as exc:
        return skipped(ORDER_TITLE, text, exc)
    assert cfg is not None  # images of a known training split come with their data config
    classes, n_cls = list(snaps.classes), len(snaps.classes)
    train, _ = split_indices(ims.labels, cfg.val_fraction, cfg.data_seed)
    x, y = _pixels(ims.images[train]), ims.labels[train]
    modes = saxe.io_modes(x, saxe.one_hot(y, n_cls))
    predicted = saxe.predicted_times(modes)
    separable = saxe.separability(x, y, n_cls, SEPARABILITY_COMPONENTS, seed=seed)
    del x
    epochs_of = behaviour.epochs if behaviour else {}
    observed = np.array([np.nan if epochs_of.get(n) is None else epochs_of[n] for n in classes], dtype=float)
    note, r = "", len(modes.strengths)
    clf = snaps.output or CLASSIFIER
    if clf in snaps.layers and all(clf in snaps.by_epoch[e].activations for e in snaps.epochs):
        probs = softmax(snaps.activations(clf).astype(np.float64), axis=-1)  # (E, n, C)
        network = saxe.network_strengths(probs, _pixels(ims.images[snaps.indices]), modes)
        times = saxe.mode_times(np.asarray(snaps.epochs), network)
    else:
        network, times = np.full((len(snaps.epochs), r), np.nan), np.full(r, np.nan)
        note = f"no {clf!r} activations in the snapshots: the network's mode strengths are not measured"
    if behaviour is None:
        note = "; ".join(filter(None, [note, "the run logged no acc_class/<name> metric: no observed order"]))
    rho = {
        "order/spearman_saxe": saxe.spearman(predicted, observed),
        "order/spearman_separability": saxe.spearman(-separable, observed),
        "order/spearman_mode_time": saxe.spearman(times, 1 / modes.strengths),
    }
    images_ = (
        draw(
            "order_predicted",
            order_figures.predicted_vs_observed(
                classes,
                observed,
                {
                    "predicted time, Σ w_ck / s_k": (predicted, rho["order/spearman_saxe"]),
                    "− separability (log-likelihood)": (-separable, rho["order/spearman_separability"]),
                },
            ),
            "each class's predicted time (Saxe modes, left; pixel separability, right) against its "
            "behavioural emergence epoch",
        ),
        draw(
            "order_modes",
            order_figures.mode_strengths(snaps.epochs, network, modes.strengths, times),
            "the network's strength a_k(t) along each data mode, s_k dashed, fitted centre dotted; "
            "the centres t_k against 1/s_k",
        ),
    )
    rows = {
        "mode strengths s_k": ", ".join(f"{s:.4g}" for s in modes.strengths),
        **{f"ρ({k.removeprefix('order/spearman_')})": v for k, v in rho.items()},
        "t_k (epochs)": ", ".join(f"{t:.1f}" for t in times),
        "t_k s_k": ", ".join(f"{p:.3g}" for p in times * modes.strengths),
        **{
            f"{n}: predicted, separability, observed": f"{p:.4g}, {s:.3f}, {o:g}"
            for n, p, s, o in zip(classes, predicted, separable, observed)
        },
    }
    section = report.Section(ORDER_TITLE, text, rows=rows, images=images_, note=note)
    return OrderResult(
        classes,
        modes.strengths,
        modes.u,
        predicted,
        separable,
        observed,
        list(snaps.epochs),
        network,
        times,
        rho,
        section,
    )
