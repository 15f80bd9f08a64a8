"""A new training run (:func:`train_job`); a stopped one is continued by :mod:`dsc.jobs.resume`."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import mlflow
import numpy as np
import torch

from dsc import tracking
from dsc.data.dataset import load_imageset, prepare
from dsc.errors import ConfigError, DscError, Interrupted
from dsc.jobs.checkpoints import EpochLogger
from dsc.jobs.recording import Recording
from dsc.jobs.snapshots import SnapshotLogger
from dsc.nn.model import build_model, count_parameters, min_image_size
from dsc.nn.train import epochs_to_train, flush_denormals, keep_freed_memory, pick_device, steps_per_epoch, train
from dsc.settings import (
    DataConfig,
    ModelConfig,
    SnapshotConfig,
    TrackConfig,
    TrainConfig,
    options_of,
)


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 (16 hex digits) of a model's parameters and buffers, in state-dict order."""
    import hashlib

    h = hashlib.sha256()
    for key, value in model.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def provenance_tags(model: torch.nn.Module, data, device: torch.device) -> dict[str, str]:
    """Tags that tell whether two runs started alike: versions, device, data and weight hashes.

    The libraries training does not import are named by their installed distributions' versions
    (importing torchvision only for its ``__version__`` costs a training process seconds).
    """
    import platform
    from importlib.metadata import version

    return {
        "dsc.device": str(device),
        "dsc.python": platform.python_version(),
        "dsc.torch": torch.__version__,
        "dsc.torchvision": version("torchvision"),
        "dsc.mlflow": mlflow.__version__,
        "dsc.numpy": np.__version__,
        "dsc.lmfit": version("lmfit"),
        "dsc.sklearn": version("scikit-learn"),
        "dsc.data_digest": data.imageset.digest(),
        "dsc.init_weights": weights_digest(model),
    }


@contextlib.contextmanager
def failing_run(track: TrackConfig) -> Iterator[None]:
    """Settings refused inside (a :class:`DscError`) leave a FAILED training run with the error.

    Build the configs of a run in it, so that a bad value ends like a training that failed:
    a run marked FAILED, its ``error`` tag saying why.
    """
    try:
        yield
    except DscError:
        with _training_run(track):
            raise


class GracefulStop:
    """SIGTERM and SIGINT ask training to stop after its current step; a second one ends it at once.

    Call the object to ask whether a stop was asked for (the training loop's ``stop``). The
    handlers are installed on entry (in the main thread only, where Python runs them) and the
    previous ones restored on exit.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum = 0
        self._saved: dict[int, Callable[[int, FrameType | None], Any] | int | None] = {}

    def __call__(self) -> bool:
        return bool(self.signum)

    def _handle(self, signum: int, frame) -> None:
        if self.signum:  # the second signal: the default action, now (the run stays resumable)
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signum = signum

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            self._saved = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)


def _interrupted(run_id: str, epoch: int, signum: int) -> Interrupted:
    """The one line of a training stopped by ``signum`` while epoch ``epoch`` was under way."""
    name = signal.Signals(signum).name if signum else "a stop request"
    if epoch == 0:
        return Interrupted(
            f"interrupted by {name} before epoch 0 was recorded; nothing to resume: start again with dsc train",
            epoch,
            signum,
        )
    return Interrupted(
        f"interrupted at epoch {epoch} by {name} (epochs 0-{epoch - 1} kept); "
        f"continue with dsc train --resume {run_id}",
        epoch,
        signum,
    )


def _check_fits(model_cfg: ModelConfig, data_cfg: DataConfig) -> None:
    need = min_image_size(model_cfg)
    if data_cfg.image_size < need:
        raise ConfigError(
            f"--arch {model_cfg.arch} needs --image-size >= {need} (its poolings halve the "
            f"image down to 1 pixel at {need}), got {data_cfg.image_size}; "
            f"use a larger --image-size or --arch dense-vgg"
        )


def tune_process() -> None:
    """What a training process sets first, before its data and model create any thread."""
    keep_freed_memory()  # a dsc process trains, so it may keep the allocator's freed blocks
    flush_denormals()  # Adam's decaying moments would otherwise slow each later epoch by a quarter


def _training_run(track: TrackConfig):
    return tracking.run_context(
        track.experiment, track.run_name or None, tags={tracking.KIND_TAG: "train"}, system_metrics=True
    )


def train_job(
    data_cfg: DataConfig,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    track: TrackConfig,
    snap_cfg: SnapshotConfig | None = None,
) -> str:
    """Train and log everything to a run; returns the run id.

    ``model_cfg.num_classes`` is replaced by the number of classes of the data. Params are
    logged once, under the names of the ``dsc train`` options (``snapshot_every``).
    """
    snap_cfg = snap_cfg or SnapshotConfig()
    tune_process()
    tracking.preflight(track.experiment)
    with _training_run(track) as run, GracefulStop() as stop, tracking.Heartbeat(run.info.run_id):
        tracking.log_params_once(
            {
                **data_cfg.to_dict(),
                **train_cfg.to_dict(),
                **_option_params(model_cfg),
                **_option_params(snap_cfg),
                "checkpoint_every": track.checkpoint_every,
                "state_every": track.state_every,
                "register": track.register,
                "register_name": track.register_name,
            }
        )
        _check_fits(model_cfg, data_cfg)
        torch.manual_seed(train_cfg.seed)
        device = pick_device(train_cfg.device)
        data = prepare(load_imageset(data_cfg), data_cfg)
        if track.register:
            tracking.check_model_name(_model_name(track, data, model_cfg))
        tracking.log_dataset(data)
        model_cfg = dataclasses.replace(model_cfg, num_classes=len(data.classes))
        model = build_model(model_cfg)
        mlflow.log_params(
            {
                "num_classes": model_cfg.num_classes,
                "n_parameters": count_parameters(model),
                **_step_params(train_cfg, len(data.train_idx)),
            }
        )
        mlflow.set_tags(provenance_tags(model, data, device))
        logger = EpochLogger(
            checkpoint_extra(model_cfg, train_cfg, data_cfg, data),
            checkpoint_every=track.checkpoint_every,
            last_epoch=epochs_to_train(train_cfg, len(data.train_idx)),
            state_every=track.state_every,
        )
        train_logged(model, data, train_cfg, device, logger, snap_cfg, track.progress, stop=stop)
        register(model, model_cfg, data, logger, track)
        return run.info.run_id


def _step_params(train_cfg: TrainConfig, n_train: int) -> dict:
    """With ``--steps``: the epochs trained and the steps of the last one (partial when fewer
    than a full epoch's)."""
    if not train_cfg.steps:
        return {}
    epochs, per_epoch = epochs_to_train(train_cfg, n_train), steps_per_epoch(train_cfg, n_train)
    return {
        "steps_epochs": epochs,
        "steps_last_epoch": train_cfg.steps - (epochs - 1) * per_epoch,
        "steps_per_epoch": per_epoch,
    }


def _option_params(cfg) -> dict:
    """A config's command-line settings under their option names (``snapshot_every``)."""
    return {opt.param: getattr(cfg, opt.field) for opt in options_of(type(cfg)).values()}


def snapshot_config(params: dict[str, str]) -> SnapshotConfig:
    """The snapshot settings a run was trained with, read back from its params."""
    default = SnapshotConfig(every=0)  # runs without the params took no snapshots
    values: dict[str, Any] = {
        o.field: _param_value(o.kind, params.get(o.param, getattr(default, o.field)))
        for o in options_of(SnapshotConfig).values()
    }
    return SnapshotConfig(**values)


def _param_value(kind: type, value: object) -> object:
    """A param read back as its setting's type (MLflow stores ``True`` as the text "True")."""
    return value == "True" if kind is bool and isinstance(value, str) else kind(value)


def checkpoint_extra(model_cfg: ModelConfig, train_cfg: TrainConfig, data_cfg: DataConfig, data) -> dict:
    """What every checkpoint carries besides weights: the configs that rebuild the run."""
    return {
        "model_config": model_cfg.to_dict(),
        "train_config": train_cfg.to_dict(),
        "data_config": data_cfg.to_dict(),
        "classes": list(data.classes),
        "norm_mean": data.mean,
        "norm_std": data.std,
    }


def train_logged(
    model,
    data,
    train_cfg: TrainConfig,
    device: torch.device,
    logger: EpochLogger,
    snap_cfg: SnapshotConfig,
    progress: bool,
    start_epoch: int = 0,
    optimizer_state: dict | None = None,
    logged: tracking.LoggedSteps | None = None,
    stop: GracefulStop | None = None,
) -> None:
    """Train, recording each epoch (:class:`dsc.jobs.recorder.Recording`): the validation pass is
    the probe, and snapshots, when due, are taken on it.

    A stop asked for ends training after its current step; the epoch under way is dropped
    (a resumed run repeats it), the last complete epoch's checkpoint is written if it was not
    kept, and :class:`Interrupted` carries the line to print.
    """
    # the snapshot's metrics go out in the epoch logger's batch (the logger runs after it)
    snaps = (
        SnapshotLogger.for_data(model, data, snap_cfg, device, logged=logged, defer_metrics=True)
        if snap_cfg.every > 0
        else None
    )
    rec = Recording(snaps, logger)
    rec.last_epoch = start_epoch if start_epoch > 0 else -1
    try:
        train(
            model,
            data,
            train_cfg,
            on_epoch=rec.report,
            progress=progress,
            val_context=rec.capturing,
            start_epoch=start_epoch,
            optimizer_state=optimizer_state,
            stop=stop,
        )
    except Interrupted as exc:
        logger.flush()
        raise _interrupted(tracking.store.active_run_id(), exc.epoch, stop.signum if stop else 0) from None


def _model_name(track: TrackConfig, data, model_cfg: ModelConfig) -> str:
    return track.register_name or f"dsc-{data.imageset.name}-{model_cfg.arch}"


def register(model: torch.nn.Module, model_cfg: ModelConfig, data, logger: EpochLogger, track: TrackConfig) -> None:
    """Log the final (and, if different, the best-validation) model; alias both versions.

    Without ``track.register`` only the best validation accuracy and its epoch are logged.
    """
    if not track.register:
        _log_best(logger)
        return
    name = _model_name(track, data, model_cfg)
    example = data.batch(data.val_idx[:2], torch.device("cpu"))[0].numpy().astype(np.float32)
    final_version = tracking.log_and_register(model, "model", name, example)
    tracking.set_alias(name, tracking.ALIAS_FINAL, final_version)
    best_version = final_version
    if logger.best_state is not None and logger.best_epoch != logger.last_epoch:
        best = build_model(model_cfg)
        best.load_state_dict(logger.best_state)
        best_version = tracking.log_and_register(best, "model-best", name, example)
    tracking.set_alias(name, tracking.ALIAS_BEST, best_version)
    mlflow.set_tags(
        {"dsc.registered_model": name, "dsc.version_final": final_version, "dsc.version_best": best_version}
    )
    _log_best(logger)


def _log_best(logger: EpochLogger) -> None:
    mlflow.log_metric("best/acc_val", logger.best_acc, step=max(logger.best_epoch, 0))
    mlflow.log_param("best_epoch", logger.best_epoch)


def restore(ckpt: dict, data_override: dict | None = None):
    """Data, model and train config of a checkpoint, rebuilt on this machine."""
    data_cfg = DataConfig(**{**ckpt["data_config"], **(data_override or {})})
    data = prepare(load_imageset(data_cfg), data_cfg)
    model = build_model(ModelConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model_state"])
    return data, model, TrainConfig(**ckpt["train_config"])
