"""What ``dsc train`` and the Recorder share: one epoch's snapshot and checkpoint, in order."""

from __future__ import annotations

import contextlib

from dsc.errors import ConfigError
from dsc.jobs.checkpoints import EpochLogger
from dsc.jobs.snapshots import SnapshotLogger
from dsc.nn.train import EpochReport

__all__ = ["Recording"]


class Recording:
    """What every recorded epoch leaves, whoever ran the probe pass: a snapshot and a checkpoint.

    The one recording path: :class:`Recorder` builds it for any model and loop, ``dsc train``
    for its own (its loop's validation pass is the probe, :func:`dsc.jobs.train.train_job`).
    ``snapshots`` is None where no snapshot is taken; ``checkpoints`` is None until a
    :class:`Recorder` enters its run.
    """

    def __init__(self, snapshots: SnapshotLogger | None, checkpoints: EpochLogger | None) -> None:
        self.snapshots, self.checkpoints = snapshots, checkpoints
        self.last_epoch = -1

    def capturing(self, epoch: int) -> contextlib.AbstractContextManager:
        """Around a pass over the probe that the caller runs itself, then :meth:`report` its epoch."""
        return self.snapshots.context(epoch) if self.snapshots is not None else contextlib.nullcontext()

    def report(self, report: EpochReport) -> None:
        """Record one epoch whose metrics are in ``report`` (its probe pass ran inside :meth:`capturing`)."""
        if report.epoch <= self.last_epoch:
            raise ConfigError(
                f"epoch {report.epoch} recorded twice (the last recorded is {self.last_epoch}); "
                "record each epoch once, in increasing order"
            )
        if self.snapshots is not None:
            self.snapshots(report)
        assert self.checkpoints is not None  # set before the first epoch is recorded
        self.checkpoints(report)
        self.last_epoch = int(report.epoch)
