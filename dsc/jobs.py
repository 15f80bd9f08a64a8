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
        mlflow.set_tags({"dsc.device": str(device), "dsc.torch": torch.__version__})
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
