"""Each epoch's snapshot of a run: probe activations, weight spectra and similarity, uploaded.

The recorder (:mod:`dsc.jobs.recorder`) drives it for any model; ``dsc snapshot`` drives it on
checkpoints, so both write identical files (the format: :mod:`dsc.core.snapshot`).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import psutil
import torch
from mlflow.tracking import MlflowClient
from torch import nn

from dsc.core import snapshot
from dsc.data.dataset import Prepared
from dsc.errors import ConfigError
from dsc.nn.capture import BYTES_F16, ActivationCapture, activation_sites, grids_for, layer_weights
from dsc.nn.layers import output_shapes, per_image_values
from dsc.nn.model import named_layers
from dsc.nn.train import EpochReport
from dsc.settings import SnapshotConfig
from dsc.tracking.artifacts import mark_complete
from dsc.tracking.integrity import upload_checked
from dsc.tracking.store import LoggedSteps, active_run_id, log_metrics_to

MEMORY_SHARE = 0.5  # of the memory available, at most this much may hold one snapshot's activations


def probe_rows(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Positions of the probe images in ``labels`` (all, or the first ``per_class`` of each)."""
    if per_class <= 0:
        return np.arange(len(labels))
    return np.sort(np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)]))


class SnapshotLogger:
    """Snapshots every ``cfg.every`` epochs (and epoch 0) into run ``run_id`` (default: active run).

    Activations are captured on a pass over the probe that someone else runs, inside
    :meth:`context` (training's validation pass, or the recorder's probe pass), so a snapshot
    costs no extra forward pass. ``rows`` are the positions of that pass kept in snapshots;
    ``labels``, ``indices`` and ``classes`` describe them in ``probe.npz``. ``sites`` are
    where each recorded layer is read (:func:`dsc.nn.capture.activation_sites`), ``weights``
    the layers whose spectra are taken. ``grid`` pools every conv map to that side; None plans
    the grids from ``cfg.budget_mb``. With ``cfg.images`` each snapshot's pictures are logged
    too (:mod:`dsc.jobs.pictures`); otherwise `dsc analyze` renders them.
    """

    def __init__(
        self,
        model: nn.Module,
        sites: Mapping[str, tuple[nn.Module, bool]],
        weights: Mapping[str, nn.Module],
        sample: torch.Tensor,
        rows: np.ndarray,
        labels: np.ndarray,
        indices: np.ndarray,
        classes: Sequence[str],
        cfg: SnapshotConfig,
        prefix: str = "snapshots",
        run_id: str | None = None,
        logged: LoggedSteps | None = None,
        defer_metrics: bool = False,
        grid: int | None = None,
        output: str = snapshot.DEFAULT_OUTPUT,
    ) -> None:
        self.cfg, self.prefix = cfg, prefix
        # Training hands the snapshot's metrics on in the report, for the epoch logger's one batch
        # (one store transaction an epoch instead of two).
        self.defer_metrics = defer_metrics
        self.logged = logged or LoggedSteps()
        self.run_id = run_id or active_run_id()
        self.client = MlflowClient()
        self.model, self.weights = model, dict(weights)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels, self.classes = np.asarray(labels), list(classes)
        self.pictures = None
        if cfg.images:  # matplotlib and scikit-learn, imported only by runs that draw here
            from dsc.figures.epoch_images import EpochImages

            self.pictures = EpochImages()
        shapes = output_shapes(model, {n: m for n, (m, _) in sites.items()}, sample[:1])
        missing = [n for n in sites if n not in shapes]
        if missing:
            raise ConfigError(f"layers {missing} give no tensor output on the probe; record other layers")
        # MB = 10^6 bytes; 5% is left for eigenvalues, CKA and the npz headers
        grids = (
            grids_for(shapes, len(self.rows), 0.95 * cfg.budget_mb * 1e6)
            if grid is None
            else {n: grid if len(s) == 3 else None for n, s in shapes.items()}
        )
        _check_memory(shapes, grids, len(self.rows))
        self.capture = ActivationCapture(model, grids, sites, rows=self.rows)
        self._tmp = tempfile.TemporaryDirectory(prefix="dsc-snap-")
        probe = snapshot.write_probe(
            Path(self._tmp.name), self.labels, indices, self.classes, list(grids), grids, output=output
        )
        self._upload(probe)

    @classmethod
    def for_data(
        cls, model: nn.Module, data: Prepared, cfg: SnapshotConfig, device: torch.device, **kwargs
    ) -> SnapshotLogger:
        """The snapshots of a dsc model trained on ``data``: its validation split is the pass."""
        labels = data.y[data.val_idx].numpy()
        rows = probe_rows(labels, cfg.probe_per_class)
        sample = data.batch(data.val_idx[:1], torch.device("cpu"))[0]
        self = cls(
            model.cpu(),
            activation_sites(model),
            named_layers(model),
            sample,
            rows,
            labels[rows],
            data.val_idx[rows],
            data.classes,
            cfg,
            **kwargs,
        )
        model.to(device)
        return self

    def _upload(self, path: Path) -> None:
        """Log a snapshot file (written deflated by :mod:`dsc.core.snapshot`) and drop the local copy."""
        upload_checked(self.run_id, path, self.prefix)
        path.unlink()

    def due(self, epoch: int) -> bool:
        return self.cfg.every > 0 and epoch % self.cfg.every == 0

    def context(self, epoch: int) -> contextlib.AbstractContextManager:
        return self.capture.recording() if self.due(epoch) else contextlib.nullcontext()

    def __call__(self, report: EpochReport) -> None:
        """Snapshot the reported epoch if due; with ``defer_metrics`` its metrics join ``report.metrics``."""
        if not self.due(report.epoch):
            return
        weights = layer_weights(report.model, self.weights)
        snap, path = snapshot.record(report.epoch, self.capture.take(), weights, self._tmp.name)
        self._upload(path)
        if self.defer_metrics:
            report.metrics.update(snap.metrics())
        else:
            log_metrics_to(self.run_id, self.logged.fresh(snap.metrics(), report.epoch), report.epoch)
        if self.pictures is not None:
            from dsc.jobs.pictures import epoch_pictures, log_pictures

            pictures = epoch_pictures(self.pictures, snap, self.labels, self.classes, snap.weight_shapes)
            log_pictures(self.client, self.run_id, pictures, report.epoch)
        mark_complete(self.run_id, self.prefix, report.epoch)


def _check_memory(shapes: Mapping[str, tuple], grids: Mapping[str, int | None], n: int) -> None:
    """One line when one snapshot's activations would not fit in the memory there is."""
    per_image = sum(per_image_values(shapes[name], grids[name]) for name in grids) * BYTES_F16
    available = psutil.virtual_memory().available * MEMORY_SHARE
    if per_image * n > available:
        fits = max(1, int(available // max(per_image, 1)))
        widest = max(grids, key=lambda k: per_image_values(shapes[k], grids[k]))
        raise ConfigError(
            f"the probe's {n} images need {per_image * n / 1e9:.1f} GB of activations a snapshot "
            f"({per_image / 1e6:.2f} MB an image, most of it {widest!r}), more than the {available / 1e9:.1f} GB "
            f"that can hold them; record at most {fits} images (probe_size={fits}), fewer layers "
            "(layers=[...]), or pool conv maps further (grid=4)"
        )
