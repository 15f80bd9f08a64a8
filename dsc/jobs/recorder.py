"""What a training run records each epoch: metrics, checkpoints, the best model, snapshots.

The training loop (:mod:`dsc.nn.train`) hands each epoch's report to these callbacks; they
write through :mod:`dsc.tracking`. Everything the run leaves is laid out as the README's
"What a training run leaves" section says.
"""
from __future__ import annotations

import contextlib
import copy
import tempfile
from collections.abc import Mapping
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.tracking import MlflowClient

from dsc.core import snapshot
from dsc.data.dataset import Prepared
from dsc.nn.capture import ActivationCapture, layer_weights, plan_grids
from dsc.nn.checkpoint import is_full, resume_state, weights_payload
from dsc.nn.train import EpochReport
from dsc.settings import SnapshotConfig
from dsc.tracking.artifacts import (
    CHECKPOINT_DIR,
    CHECKPOINT_FMT,
    deflate,
    mark_complete,
    mark_full,
)
from dsc.tracking.integrity import upload_checked
from dsc.tracking.store import LoggedSteps, log_metrics_to


class EpochLogger:
    """The training callback: metrics with step = epoch, checkpoints, the best model.

    ``extra`` (configs, class names, normalisation) goes into every checkpoint. Checkpoints are
    kept every ``checkpoint_every`` epochs, at the last epoch and whenever validation accuracy
    reaches a new best (so a resumed run can still register the best model). Each holds the
    weights; the optimizer and generator state (what resuming needs, twice the weights' bytes
    under Adam) only at epoch 0, every ``state_every`` epochs and the last: a killed run
    replays from the latest of those (:func:`dsc.jobs.train.resume_job`). ``logged`` (from
    :class:`LoggedSteps`) skips metrics a resumed run already has. The last epoch's state is
    held in memory until the next one, so that a stopped training can still write a full
    checkpoint of it (:meth:`flush`).
    """

    def __init__(self, extra: Mapping[str, object], checkpoint_every: int = 1,
                 last_epoch: int | None = None, logged: LoggedSteps | None = None,
                 state_every: int = 1) -> None:
        self.extra = dict(extra)
        self.checkpoint_every = checkpoint_every
        self.state_every = state_every
        self.final_epoch = last_epoch
        self.logged = logged or LoggedSteps()
        self.best_acc = -1.0
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None
        self.last_epoch = -1
        self._pending: dict | None = None  # the last epoch's full checkpoint, when it was not kept
        self._tmp = tempfile.TemporaryDirectory(prefix="dsc-ckpt-")

    def restore_best(self, acc: float, epoch: int, state: Mapping[str, torch.Tensor]) -> None:
        self.best_acc, self.best_epoch, self.best_state = acc, epoch, dict(state)

    def full_due(self, epoch: int) -> bool:
        """Whether the checkpoint of ``epoch`` carries the optimizer and generator state."""
        return epoch % self.state_every == 0 or epoch == self.final_epoch

    def __call__(self, report: EpochReport) -> None:
        run_id = mlflow.active_run().info.run_id
        fresh = self.logged.fresh(report.metrics, report.epoch)
        if fresh:
            mlflow.log_metrics(fresh, step=report.epoch)
        acc = report.metrics.get("acc/val", float("nan"))
        new_best = report.epoch > 0 and acc > self.best_acc
        if new_best:
            self.best_acc, self.best_epoch = acc, report.epoch
            self.best_state = {k: v.detach().cpu().clone() for k, v in report.model.state_dict().items()}
        weights = weights_payload(report, self.extra)
        full = self.full_due(report.epoch)
        if report.epoch % self.checkpoint_every == 0 or report.epoch == self.final_epoch or new_best or full:
            self._save(run_id, {**weights, **resume_state(report.optimizer)} if full else weights)
        # Its tensors are the live model's and optimizer's: copied, as training goes on.
        self._pending = None if full else copy.deepcopy({**weights, **resume_state(report.optimizer)})
        self.last_epoch = report.epoch

    def _save(self, run_id: str, payload: dict) -> None:
        path = Path(self._tmp.name) / CHECKPOINT_FMT.format(payload["epoch"])
        torch.save(payload, path)
        upload_checked(run_id, deflate(path), CHECKPOINT_DIR)
        path.unlink()
        mark_complete(run_id, CHECKPOINT_DIR, payload["epoch"])
        if is_full(payload):
            mark_full(run_id, payload["epoch"])

    def flush(self) -> None:
        """Upload the last epoch's full checkpoint if it was not kept (training stops here)."""
        if self._pending is not None:
            self._save(mlflow.active_run().info.run_id, self._pending)
            self._pending = None


def probe_rows(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Positions of the probe images in ``labels`` (all, or the first ``per_class`` of each)."""
    if per_class <= 0:
        return np.arange(len(labels))
    return np.sort(np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)]))


class SnapshotLogger:
    """Snapshots epoch 0 and every ``cfg.every`` epochs into run ``run_id`` (default: active run).

    During training, activations are captured on the validation pass training already makes
    (:meth:`context`), so a snapshot costs no extra forward pass. ``dsc snapshot`` uses the
    same object on checkpoints, so both paths write identical files. With ``cfg.images`` each
    snapshot's pictures are logged too (:mod:`dsc.jobs.pictures`); otherwise `dsc analyze`
    renders them.
    """

    def __init__(self, model: torch.nn.Module, data: Prepared, cfg: SnapshotConfig,
                 device: torch.device, prefix: str = "snapshots", run_id: str | None = None,
                 logged: LoggedSteps | None = None, defer_metrics: bool = False) -> None:
        self.cfg, self.prefix = cfg, prefix
        # Training hands the snapshot's metrics on in the report, for the epoch logger's one batch
        # (one store transaction an epoch instead of two).
        self.defer_metrics = defer_metrics
        self.logged = logged or LoggedSteps()
        self.run_id = run_id or mlflow.active_run().info.run_id
        self.client = MlflowClient()
        self.rows = probe_rows(data.y[data.val_idx].numpy(), cfg.probe_per_class)
        self.labels, self.classes = data.y[data.val_idx].numpy()[self.rows], list(data.classes)
        self.pictures = None
        if cfg.images:  # matplotlib and scikit-learn, imported only by runs that draw here
            from dsc.figures.epoch_images import EpochImages

            self.pictures = EpochImages()
        sample = data.batch(data.val_idx[:1], torch.device("cpu"))[0]
        # MB = 10^6 bytes; 5% is left for eigenvalues, CKA and the npz headers
        grids = plan_grids(model.cpu(), sample, len(self.rows), 0.95 * cfg.budget_mb * 1e6)
        model.to(device)
        self.capture = ActivationCapture(model, grids)
        self._tmp = tempfile.TemporaryDirectory(prefix="dsc-snap-")
        probe = snapshot.write_probe(Path(self._tmp.name), data.y[data.val_idx].numpy()[self.rows],
                                     data.val_idx[self.rows], data.classes, list(grids), grids)
        self._upload(probe)

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
        weights = layer_weights(report.model)
        snap, path = snapshot.record(report.epoch, self.capture.take(self.rows), weights, self._tmp.name)
        self._upload(path)
        if self.defer_metrics:
            report.metrics.update(snap.metrics())
        else:
            log_metrics_to(self.run_id, self.logged.fresh(snap.metrics(), report.epoch), report.epoch)
        if self.pictures is not None:
            from dsc.jobs.pictures import epoch_pictures, log_pictures

            pictures = epoch_pictures(self.pictures, snap, self.labels, self.classes,
                                      {n: w.shape[:2] for n, w in weights.items()})
            log_pictures(self.client, self.run_id, pictures, report.epoch)
        mark_complete(self.run_id, self.prefix, report.epoch)
