"""The break rank of each layer's mode-importance power law, from a run's final checkpoint.

`dsc analyze` logs ``modes/<layer>/break_rank`` with its modes step; this job logs the same
metrics onto training runs that analyze cannot read (a sweep's members, trained without
snapshots): their last checkpoint's network, cut to k singular modes one layer at a time on a
stratified subset of the validation split rebuilt from the checkpoint's data config
(:func:`dsc.nn.modes.mode_sweep`). ``dsc compare --group-by`` then tests them against the
grouping param (``trend/modes/<layer>/break_rank/...``).
"""

from __future__ import annotations

from collections.abc import Iterable

from dsc import tracking
from dsc.data.base import ImageSet
from dsc.data.dataset import load_imageset
from dsc.errors import DataError, TrackingError
from dsc.jobs.analyze.images import break_ranks, validation_subset
from dsc.jobs.analyze.source import load_model
from dsc.nn.modes import mode_sweep
from dsc.settings import DataConfig

__all__ = ["log_break_ranks"]


class _Rebuilt:
    """The run's dataset rebuilt from a checkpoint's data config, checked against the digest trained on."""

    def __init__(self, checkpoint: dict, digest: str | None) -> None:
        self.cfg = DataConfig(**checkpoint["data_config"])
        self.ims = load_imageset(self.cfg)
        if digest and self.ims.digest() != digest:
            raise DataError(
                f"the dataset rebuilt from {self.cfg.data!r} differs from the one trained on "
                f"(digest {self.ims.digest()} != {digest}); restore the data it was trained on"
            )

    def get(self) -> tuple[DataConfig, ImageSet]:
        return self.cfg, self.ims


def log_break_ranks(
    run_ids: Iterable[str], max_images: int = 576, points: int = 10, seed: int = 0, skip_done: bool = True
) -> dict[str, dict[str, float]]:
    """Log ``modes/<layer>/break_rank`` (and ``modes/all/break_rank``) onto each training run.

    Parameters
    ----------
    run_ids : iterable of str
        Training runs with at least one complete checkpoint.
    max_images, points, seed
        As ``dsc analyze``'s ``--modes-max-images``, ``--modes-points`` and ``--seed``.
    skip_done : bool
        Leave runs that already have a ``modes/.../break_rank`` metric as they are.

    Returns
    -------
    dict of run id to {metric: break rank}
        The metrics logged (or, for a skipped run, those it has). A layer whose power-law fit
        failed has no metric.
    """
    out: dict[str, dict[str, float]] = {}
    for run_id in run_ids:
        run = tracking.require_run(run_id)
        have = {k: v for k, v in run.data.metrics.items() if k.startswith("modes/") and k.endswith("/break_rank")}
        if have and skip_done:
            out[run_id] = have
            continue
        ckpts = tracking.list_checkpoints(run_id)
        if not ckpts:
            raise TrackingError(f"run {run_id} has no complete checkpoint; its break ranks need the final weights")
        checkpoint = tracking.load_checkpoint(run_id, ckpts[max(ckpts)])
        x, y = validation_subset(_Rebuilt(checkpoint, run.data.params.get("data_digest")), checkpoint, max_images, seed)
        ranks = break_ranks(mode_sweep(load_model(checkpoint), x, y, points, seed))
        tracking.log_metrics_to(run_id, ranks, step=0)
        out[run_id] = ranks
    return out
