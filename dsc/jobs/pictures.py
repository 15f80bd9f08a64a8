"""Each snapshot's pictures in the MLflow image grid: probe PCA at fc2, ESDs of fc1 and fc2, CKA.

Logged with ``log_image(key=..., step=epoch)``, the form that gives the run page a step slider.
`dsc analyze` renders them from the run's snapshots for every epoch that lacks them (so a rerun
adds none); ``dsc train --snapshot-images`` renders them during training instead, adding their
drawing to every snapshot's cost. Both paths draw the same pictures (:func:`epoch_pictures`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from mlflow.tracking import MlflowClient
from sklearn.decomposition import PCA

from dsc.core import snapshot
from dsc.core.spectra import fit_mp, mp_density
from dsc.figures.epoch_images import EpochImages

PICTURE_LAYERS = ("fc1", "fc2")  # the ESDs shown; the PCA is of the last of them


def picture_keys(snap: snapshot.Snapshot) -> list[str]:
    """The image keys :func:`epoch_pictures` gives ``snap``, without drawing them."""
    keys = [f"pca_{_pca_layer(snap)}"] if min(_pca_activations(snap).shape) >= 2 else []
    if any(n in snap.eigenvalues for n in PICTURE_LAYERS):
        keys.append("esd")
    return [*keys, "cka"]


def _pca_layer(snap: snapshot.Snapshot) -> str:
    return next((n for n in reversed(PICTURE_LAYERS) if n in snap.activations), snap.layers[-1])


def _pca_activations(snap: snapshot.Snapshot) -> np.ndarray:
    acts = snap.activations[_pca_layer(snap)]
    return acts.reshape(len(acts), -1)


def epoch_pictures(
    canvas: EpochImages,
    snap: snapshot.Snapshot,
    labels: np.ndarray,
    classes: list[str],
    shapes: Mapping[str, tuple[int, int]],
) -> dict[str, np.ndarray]:
    """The pictures of one snapshot, by image key (:func:`picture_keys`).

    ``labels`` (n,) the probe's classes; ``shapes`` each layer's (N, M) weight shape, for the
    Marchenko-Pastur fit. Each picture is an (H, W, 3) uint8 array.
    """
    out = {}
    layer, acts = _pca_layer(snap), _pca_activations(snap).astype(np.float32)
    if min(acts.shape) >= 2:
        coords = PCA(n_components=2, svd_solver="randomized", random_state=0).fit_transform(acts)
        out[f"pca_{layer}"] = canvas.pca(coords, labels, classes, f"{layer} probe PCA, epoch {snap.epoch}")
    panels = []
    for name in (n for n in PICTURE_LAYERS if n in snap.eigenvalues):
        ev = np.asarray(snap.eigenvalues[name], dtype=np.float64)
        n, m = shapes[name]
        sigma2, lo, hi = fit_mp(ev, n, m) if ev.size else (0.0, 0.0, 0.0)
        mx = md = None
        if sigma2 > 0 and hi > lo:
            mx = np.linspace(max(lo, hi * 1e-4), hi, 120)
            md = float((ev <= hi).mean()) * mp_density(mx, max(n, m) / min(n, m), sigma2, max(n, m))
        panels.append((name, ev, mx, md))
    if panels:
        out["esd"] = canvas.esd(panels, f"ESD and Marchenko-Pastur fit, epoch {snap.epoch}")
    out["cka"] = canvas.cka(snap.cka, snap.layers, f"linear CKA, epoch {snap.epoch}")
    return out


def missing_pictures(
    snaps: snapshot.Snapshots, shapes: Mapping[str, tuple[int, int]], logged: Mapping[str, set[int]]
) -> dict[int, dict[str, np.ndarray]]:
    """``{epoch: {key: picture}}`` for every snapshot epoch and key not yet in ``logged``.

    ``logged`` is :func:`dsc.tracking.image_steps` of the run. An epoch with some of its keys
    logged (a process that died between two pictures) is drawn again, and only its missing
    keys are returned.
    """
    canvas, out = EpochImages(), {}
    for epoch in snaps.epochs:
        snap = snaps.by_epoch[epoch]
        if all(epoch in logged.get(key, ()) for key in picture_keys(snap)):
            continue
        pictures = epoch_pictures(canvas, snap, snaps.labels, list(snaps.classes), shapes)
        out[epoch] = {k: v for k, v in pictures.items() if epoch not in logged.get(k, ())}
    return out


def log_pictures(client: MlflowClient, run_id: str, pictures: Mapping[str, np.ndarray], step: int) -> None:
    """Log one epoch's pictures with ``step`` = the epoch (the image grid's slider)."""
    for key, image in pictures.items():
        client.log_image(run_id, image, key=key, step=step)
