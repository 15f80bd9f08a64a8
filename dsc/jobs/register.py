"""Any epoch's checkpoint of a training run registered as a model version (``dsc register``)."""

from __future__ import annotations

import numpy as np
import torch

from dsc import tracking
from dsc.errors import ConfigError, TrackingError
from dsc.nn.model import build_model
from dsc.settings import DataConfig, ModelConfig

VERSION_TAGS = ("dsc.run_id", "dsc.epoch")  # the run and epoch each registered checkpoint came from


def _epoch_list(epochs: list[int]) -> str:
    """``[0, 1, 2, 5]`` as "0-2, 5"."""
    spans, start = [], None
    for i, e in enumerate(epochs):
        start = e if start is None else start
        if i + 1 == len(epochs) or epochs[i + 1] != e + 1:
            spans.append(f"{start}" if start == e else f"{start}-{e}")
            start = None
    return ", ".join(spans)


def _example(model: torch.nn.Module, data_cfg: DataConfig) -> np.ndarray:
    """A fixed input batch (2, C, H, W) for the signature: 2 keeps the exported batch dimension dynamic."""
    channels = next(p for p in model.parameters() if p.dim() == 4).shape[1]
    shape = (2, channels, data_cfg.image_size, data_cfg.image_size)
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def _probe_example(run_id: str) -> np.ndarray:
    """Two of the probe inputs a recorder kept, float32, for the signature."""
    from dsc.jobs.recorder import PROBE_INPUTS

    kept = tracking.snapshot.probe_inputs(run_id, PROBE_INPUTS)
    if kept is None:
        raise TrackingError(
            f"run {run_id} kept no probe inputs to give the model version an input example; "
            "register its final model (`model`) from the MLflow UI instead"
        )
    return np.ascontiguousarray(kept[0][:2], dtype=np.float32)


def register_job(run_id: str, epoch: int, name: str = "", alias: str = "") -> tuple[str, str]:
    """Register the weights of epoch ``epoch`` of training run ``run_id``; returns (name, version).

    The version has the format of a training run's final model (``mlflow.pytorch``, pt2) and
    the tags ``dsc.run_id`` and ``dsc.epoch``; its logged model belongs to the run's
    experiment. ``name`` defaults to the run's registered model; ``alias``, if given, points
    at the new version.
    """
    tracking.preflight(run_id=run_id)
    source = tracking.require_run(run_id)
    kind = tracking.run_kind(source)
    if kind not in (None, "train"):
        raise TrackingError(f"run {run_id} is a {kind} run; only runs of `dsc train` have checkpoints to register")
    ckpts = tracking.list_checkpoints(run_id)
    if not ckpts:
        raise TrackingError(f"run {run_id} has no checkpoints; is it a dsc training run?")
    if epoch not in ckpts:
        raise TrackingError(
            f"run {run_id} has no checkpoint of epoch {epoch} (it has epochs "
            f"{_epoch_list(sorted(ckpts))}); choose one with --epoch"
        )
    name = name or source.data.tags.get("dsc.registered_model") or source.data.params.get("register_name", "")
    if not name:
        raise ConfigError(f"run {run_id} has registered no model yet; name one with --name NAME")
    tracking.check_model_name(name)
    ckpt = tracking.load_checkpoint(run_id, ckpts[epoch])
    if "model_config" in ckpt:  # dsc train's networks are rebuilt from their settings
        model = build_model(ModelConfig(**ckpt["model_config"]))
        example = _example(model, DataConfig(**ckpt["data_config"]))
    else:  # any model dsc.Recorder recorded: the network it logged, the probe's inputs as the example
        model, example = tracking.load_logged_model(run_id), _probe_example(run_id)
    model.load_state_dict(ckpt["model_state"])
    version = tracking.log_and_register(
        model, f"model-epoch-{epoch}", name, example, experiment_id=source.info.experiment_id
    )
    tracking.tag_version(name, version, dict(zip(VERSION_TAGS, (run_id, str(epoch)))))
    if alias:
        tracking.set_alias(name, alias, version)
    return name, version
