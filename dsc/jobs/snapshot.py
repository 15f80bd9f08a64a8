"""Snapshots recomputed from a training run's per-epoch checkpoints (``dsc snapshot``)."""

from __future__ import annotations

import dataclasses

import mlflow
import torch
from mlflow.tracking import MlflowClient
from tqdm.auto import tqdm

from dsc import tracking
from dsc.errors import ConfigError, TrackingError
from dsc.jobs.snapshots import SnapshotLogger
from dsc.jobs.train import restore
from dsc.nn.train import EpochReport, logits, pick_device
from dsc.settings import SnapshotConfig


def _target_run(source: mlflow.entities.Run, child: bool, overwrite: bool, prefix: str, kind: str) -> tuple[str, bool]:
    """The run that receives the snapshots (the source or a new child) and whether it is new."""
    if child:
        run = MlflowClient().create_run(
            source.info.experiment_id,
            tags={
                "mlflow.parentRunId": source.info.run_id,
                tracking.KIND_TAG: kind,
                "dsc.source_run": source.info.run_id,
            },
        )
        return run.info.run_id, True
    if tracking.has_artifacts(source.info.run_id, prefix) and not overwrite:
        raise TrackingError(
            f"run {source.info.run_id} already has {prefix}/; pass --child to write a child run, "
            f"--prefix NAME for another directory, or --overwrite to replace them"
        )
    return source.info.run_id, False


def snapshot_job(
    run_id: str,
    snap_cfg: SnapshotConfig,
    child: bool = False,
    overwrite: bool = False,
    prefix: str = "snapshots",
    progress: bool = True,
) -> str:
    """Recompute snapshots of a training run from its per-epoch checkpoints; returns the target run id."""
    tracking.preflight(run_id=run_id)
    source = tracking.require_run(run_id)
    if snap_cfg.every < 1:
        raise ConfigError("--every must be >= 1 for dsc snapshot")
    ckpts = {e: p for e, p in tracking.list_checkpoints(run_id).items() if e % snap_cfg.every == 0}
    if not ckpts:
        raise TrackingError(
            f"run {run_id} has no checkpoints at epochs divisible by {snap_cfg.every}; is it a dsc training run?"
        )
    target, new = _target_run(source, child, overwrite, prefix, "snapshot")
    try:
        first = tracking.load_checkpoint(run_id, next(iter(ckpts.values())))
        data, model, train_cfg = restore(first)
        device = pick_device(train_cfg.device)
        fmt = torch.channels_last if train_cfg.channels_last else torch.contiguous_format
        # Every checkpoint's epoch is snapshotted: the schedule was applied when listing them.
        snaps = SnapshotLogger.for_data(
            model, data, dataclasses.replace(snap_cfg, every=1), device, prefix=prefix, run_id=target
        )
        model.to(device=device, memory_format=fmt)
        for epoch, path in tqdm(ckpts.items(), desc="snapshots", unit="ckpt", disable=not progress):
            ckpt = first if epoch == first["epoch"] else tracking.load_checkpoint(run_id, path)
            model.load_state_dict(ckpt["model_state"])
            with snaps.capture.recording():
                logits(model, data, data.val_idx, device, train_cfg)
            snaps(_report(epoch, model))
    except BaseException:
        if new:
            MlflowClient().set_terminated(target, "FAILED")
        raise
    if new:
        MlflowClient().set_terminated(target, "FINISHED")
    return target


def _report(epoch: int, model: torch.nn.Module) -> EpochReport:
    return EpochReport(epoch, {}, model, None)
