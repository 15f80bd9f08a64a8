"""Entry-point jobs: each opens (or attaches to) an MLflow run and does one step of the pipeline."""
from __future__ import annotations

from dataclasses import dataclass

import mlflow
import numpy as np
import torch

from dsc import tracking
from dsc.data.dataset import DataConfig, load_imageset, prepare
from dsc.model import ModelConfig, build_model, count_parameters
from dsc.train import TrainConfig, pick_device, train


@dataclass(frozen=True)
class TrackConfig:
    experiment: str = ""  # experiment name ("" = MLflow's current one)
    run_name: str = ""  # run name ("" = MLflow's generated one)
    register_name: str = ""  # registered model name ("" = dsc-<data>-<arch>)
    checkpoint_every: int = 1  # keep a checkpoint every N epochs (epoch 0 and the last always)
    progress: bool = True  # show progress bars


def _flat_params(**groups: dict) -> dict:
    return {k: v for group in groups.values() for k, v in group.items()}


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 (16 hex digits) of a model's parameters and buffers, in state-dict order."""
    import hashlib

    h = hashlib.sha256()
    for key, value in model.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def provenance_tags(model: torch.nn.Module, data, device: torch.device) -> dict[str, str]:
    """Tags that tell whether two runs started alike: versions, device, data and weight hashes."""
    import platform

    import lmfit
    import sklearn
    import torchvision

    return {"dsc.device": str(device), "dsc.python": platform.python_version(),
            "dsc.torch": torch.__version__, "dsc.torchvision": torchvision.__version__,
            "dsc.mlflow": mlflow.__version__, "dsc.numpy": np.__version__,
            "dsc.lmfit": lmfit.__version__, "dsc.sklearn": sklearn.__version__,
            "dsc.data_digest": data.imageset.digest(), "dsc.init_weights": weights_digest(model)}


def train_job(data_kw: dict, model_kw: dict, train_kw: dict, track: TrackConfig,
              snap_kw: dict | None = None) -> str:
    """Train and log everything to a run; returns the run id.

    The keyword dicts hold DataConfig, ModelConfig (less ``num_classes``, which the data
    decides) and TrainConfig fields. Configs are built inside the run so that a bad value
    also leaves a FAILED run behind.
    """
    with tracking.run_context(track.experiment, track.run_name or None,
                              tags={"dsc.kind": "train"}) as run:
        data_cfg, train_cfg = DataConfig(**data_kw), TrainConfig(**train_kw)
        snap_cfg = tracking.SnapshotConfig(**(snap_kw or {}))
        ModelConfig(**model_kw)  # validates before any data is read
        tracking.log_params_once(_flat_params(data=data_cfg.to_dict(), train=train_cfg.to_dict(),
                                              model=model_kw, snapshot={
                                                  "snapshot_every": snap_cfg.every,
                                                  "probe_per_class": snap_cfg.probe_per_class,
                                                  "snapshot_budget_mb": snap_cfg.budget_mb}))
        torch.manual_seed(train_cfg.seed)
        device = pick_device(train_cfg.device)
        data = prepare(load_imageset(data_cfg), data_cfg)
        tracking.log_dataset(data)
        model_cfg = ModelConfig(num_classes=len(data.classes), **model_kw)
        model = build_model(model_cfg)
        mlflow.log_params({"num_classes": model_cfg.num_classes, "n_parameters": count_parameters(model)})
        mlflow.set_tags(provenance_tags(model, data, device))
        logger = tracking.EpochLogger(
            extra={"model_config": model_cfg.to_dict(), "train_config": train_cfg.to_dict(),
                   "data_config": data_cfg.to_dict(), "classes": list(data.classes),
                   "norm_mean": data.mean, "norm_std": data.std},
            checkpoint_every=track.checkpoint_every, last_epoch=train_cfg.epochs)
        callbacks = [logger]
        val_context = None
        if snap_cfg.every > 0:
            snaps = tracking.SnapshotLogger(model, data, snap_cfg, device)
            callbacks.insert(0, snaps)
            val_context = snaps.context
        train(model, data, train_cfg, on_epoch=lambda r: [cb(r) for cb in callbacks],
              progress=track.progress, val_context=val_context)
        _register(model, model_cfg, data, logger, track)
        return run.info.run_id


def _register(model: torch.nn.Module, model_cfg: ModelConfig, data, logger: tracking.EpochLogger,
              track: TrackConfig) -> None:
    """Log the final (and, if different, the best-validation) model; alias both versions."""
    name = track.register_name or f"dsc-{data.imageset.name}-{model_cfg.arch}"
    example = data.batch(data.val_idx[:2], torch.device("cpu"))[0].numpy().astype(np.float32)
    final_version = tracking.log_and_register(model, "model", name, example)
    tracking.set_alias(name, tracking.ALIAS_FINAL, final_version)
    best_version = final_version
    if logger.best_state is not None and logger.best_epoch != logger.last_epoch:
        best = build_model(model_cfg)
        best.load_state_dict(logger.best_state)
        best_version = tracking.log_and_register(best, "model-best", name, example)
    tracking.set_alias(name, tracking.ALIAS_BEST, best_version)
    mlflow.set_tags({"dsc.registered_model": name, "dsc.version_final": final_version,
                     "dsc.version_best": best_version})
    mlflow.log_metric("best/acc_val", logger.best_acc, step=max(logger.best_epoch, 0))
    mlflow.log_param("best_epoch", logger.best_epoch)


def _restore(ckpt: dict, data_override: dict | None = None):
    """Data, model and train config of a checkpoint, rebuilt on this machine."""
    data_cfg = DataConfig(**{**ckpt["data_config"], **(data_override or {})})
    data = prepare(load_imageset(data_cfg), data_cfg)
    model = build_model(ModelConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model_state"])
    return data, model, TrainConfig(**ckpt["train_config"])


def _target_run(source: mlflow.entities.Run, child: bool, overwrite: bool, prefix: str, kind: str) -> tuple[str, bool]:
    """The run that receives the snapshots (the source or a new child) and whether it is new."""
    if child:
        run = tracking.MlflowClient().create_run(
            source.info.experiment_id, tags={"mlflow.parentRunId": source.info.run_id, "dsc.kind": kind,
                                              "dsc.source_run": source.info.run_id})
        return run.info.run_id, True
    if tracking.has_artifacts(source.info.run_id, prefix) and not overwrite:
        raise tracking.TrackingError(
            f"run {source.info.run_id} already has {prefix}/; pass --child to write a child run, "
            f"--prefix NAME for another directory, or --overwrite to replace them")
    return source.info.run_id, False


def snapshot_job(run_id: str, snap_kw: dict, child: bool = False, overwrite: bool = False,
                 prefix: str = "snapshots", progress: bool = True) -> str:
    """Recompute snapshots of a training run from its per-epoch checkpoints; returns the target run id."""
    from tqdm.auto import tqdm

    from dsc.train import evaluate

    source = tracking.require_run(run_id)
    snap_cfg = tracking.SnapshotConfig(**snap_kw)
    if snap_cfg.every < 1:
        raise tracking.ConfigError("--every must be >= 1 for dsc snapshot")
    ckpts = {e: p for e, p in tracking.list_checkpoints(run_id).items() if e % snap_cfg.every == 0}
    if not ckpts:
        raise tracking.TrackingError(f"run {run_id} has no checkpoints at epochs divisible by {snap_cfg.every}; "
                                     "is it a dsc training run?")
    target, new = _target_run(source, child, overwrite, prefix, "snapshot")
    try:
        first = tracking.load_checkpoint(run_id, next(iter(ckpts.values())))
        data, model, train_cfg = _restore(first)
        device = pick_device(train_cfg.device)
        fmt = torch.channels_last if train_cfg.channels_last else torch.contiguous_format
        # Every checkpoint's epoch is snapshotted: the schedule was applied when listing them.
        snaps = tracking.SnapshotLogger(model, data, tracking.SnapshotConfig(1, snap_cfg.probe_per_class,
                                                                             snap_cfg.budget_mb),
                                        device, prefix=prefix, run_id=target)
        model.to(device=device, memory_format=fmt)
        for epoch, path in tqdm(ckpts.items(), desc="snapshots", unit="ckpt", disable=not progress):
            ckpt = first if epoch == first["epoch"] else tracking.load_checkpoint(run_id, path)
            model.load_state_dict(ckpt["model_state"])
            with snaps.capture.recording():
                evaluate(model, data, data.val_idx, device, train_cfg)
            snaps(_report(epoch, model))
    except BaseException:
        if new:
            tracking.MlflowClient().set_terminated(target, "FAILED")
        raise
    if new:
        tracking.MlflowClient().set_terminated(target, "FINISHED")
    return target


def _report(epoch: int, model: torch.nn.Module):
    from dsc.train import EpochReport

    return EpochReport(epoch, {}, model, None)
