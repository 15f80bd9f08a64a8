"""A training run's checkpoints and metrics, each epoch: weights, the best model, resumable states.

The recorder (:mod:`dsc.jobs.recorder`) hands each epoch's report here; files go to the run's
``checkpoints/`` (the layout: :mod:`dsc.tracking.artifacts`).
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch

from dsc.nn.checkpoint import is_full, resume_state, weights_payload
from dsc.nn.train import EpochReport
from dsc.tracking.artifacts import (
    CHECKPOINT_DIR,
    CHECKPOINT_FMT,
    deflate,
    mark_complete,
    mark_full,
)
from dsc.tracking.integrity import upload_checked
from dsc.tracking.store import LoggedSteps, active_run_id, log_metrics_to


class EpochLogger:
    """The training callback: metrics with step = epoch, checkpoints, the best model.

    ``extra`` (configs, class names, normalisation) goes into every checkpoint. Checkpoints are
    kept (unless ``checkpoint_every`` is 0: none) every ``checkpoint_every`` epochs, at the
    last epoch and whenever validation accuracy reaches a new best (so a resumed run can still
    register the best model). Each holds the weights; the optimizer and generator state (what
    resuming needs, twice the weights' bytes under Adam) only at epoch 0, every ``state_every``
    epochs and the last: a killed run replays from the latest of those
    (:func:`dsc.jobs.resume.resume_job`). ``logged`` (from :class:`LoggedSteps`) skips metrics a
    resumed run already has. The last epoch's state is held in memory until the next one, so
    that a stopped training can still write a full checkpoint of it (:meth:`flush`).
    """

    def __init__(
        self,
        extra: Mapping[str, object],
        checkpoint_every: int = 1,
        last_epoch: int | None = None,
        logged: LoggedSteps | None = None,
        state_every: int = 1,
        run_id: str | None = None,
    ) -> None:
        self._run_id = run_id
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

    @property
    def run_id(self) -> str:
        """The run written to: the one given, else the active run."""
        return self._run_id or active_run_id()

    def restore_best(self, acc: float, epoch: int, state: Mapping[str, torch.Tensor]) -> None:
        self.best_acc, self.best_epoch, self.best_state = acc, epoch, dict(state)

    def full_due(self, epoch: int) -> bool:
        """Whether the checkpoint of ``epoch`` carries the optimizer and generator state (given an optimizer)."""
        return epoch % self.state_every == 0 or epoch == self.final_epoch

    def __call__(self, report: EpochReport) -> None:
        run_id = self.run_id
        fresh = self.logged.fresh(report.metrics, report.epoch)
        if fresh:
            log_metrics_to(run_id, fresh, report.epoch)
        acc = report.metrics.get("acc/val", float("nan"))
        new_best = report.epoch > 0 and acc > self.best_acc
        if new_best:
            self.best_acc, self.best_epoch = acc, report.epoch
            self.best_state = {k: v.detach().cpu().clone() for k, v in report.model.state_dict().items()}
        weights = weights_payload(report, self.extra)
        full = report.optimizer is not None and self.full_due(report.epoch)
        periodic = self.checkpoint_every > 0 and report.epoch % self.checkpoint_every == 0
        if self.checkpoint_every > 0 and (periodic or report.epoch == self.final_epoch or new_best or full):
            # (full implies an optimizer; naming it again lets the type checker see it)
            self._save(
                run_id,
                {**weights, **resume_state(report.optimizer)} if full and report.optimizer is not None else weights,
            )
        # Its tensors are the live model's and optimizer's: copied, as training goes on.
        self._pending = (
            None if full or report.optimizer is None else copy.deepcopy({**weights, **resume_state(report.optimizer)})
        )
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
            self._save(self.run_id, self._pending)
            self._pending = None
