"""What `dsc analyze` reads from a training run: the run, its snapshots, curves and final weights.

Everything here raises one-line errors (TrackingError, DataError) that say what is missing.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Protocol, cast

import numpy as np
import torch
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from torch import nn
from tqdm.auto import tqdm

from dsc import tracking
from dsc.core import snapshot
from dsc.data.base import ImageSet
from dsc.data.dataset import load_imageset
from dsc.errors import DataError, TrackingError
from dsc.jobs.recorder import RECORDER_TAG
from dsc.nn.model import build_model, named_layers
from dsc.settings import DataConfig, ModelConfig

CURVES = ("acc/train", "acc/val", "loss/train", "loss/val")
RECALL = "acc_class/{}"  # each class's validation recall, step = epoch


def find_run(run_id: str = "", experiment: str = "") -> Run:
    """The run to analyse: ``run_id``, or the latest FINISHED training run (tag dsc.kind=train).

    Without ``run_id`` the search covers ``experiment`` (a name), else the experiment named by
    MLFLOW_EXPERIMENT_NAME / MLFLOW_EXPERIMENT_ID, else every experiment.
    """
    if run_id:
        run = tracking.require_run(run_id)
        kind = tracking.run_kind(run) or "train"
        if kind != "train":
            raise TrackingError(
                f"run {run_id} is a {kind!r} run; analyze reads training runs ({tracking.KIND_TAG}=train)"
            )
        if run.info.status != "FINISHED":
            raise TrackingError(
                f"run {run_id} is {run.info.status}; analyze needs a FINISHED training run "
                "(a failed or unfinished run has incomplete snapshots)"
            )
        return run
    client = MlflowClient()
    where = ""
    if experiment:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise TrackingError(
                f"--experiment {experiment!r}: no such experiment in the tracking store; "
                "list them with `mlflow experiments search`"
            )
        ids = [exp.experiment_id]
        where = f" in experiment {experiment!r}"
    elif os.environ.get("MLFLOW_EXPERIMENT_ID"):
        ids = [os.environ["MLFLOW_EXPERIMENT_ID"]]
    elif os.environ.get("MLFLOW_EXPERIMENT_NAME"):
        exp = client.get_experiment_by_name(os.environ["MLFLOW_EXPERIMENT_NAME"])
        ids = [exp.experiment_id] if exp else []
    else:
        ids = [e.experiment_id for e in client.search_experiments()]
    runs = (
        client.search_runs(
            ids,
            f"tags.`{tracking.KIND_TAG}` = 'train' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if ids
        else []
    )
    if not runs:
        raise TrackingError(f"no FINISHED training run{where}; train one with `dsc train`, or pass --run-id")
    return runs[0]


@dataclass(frozen=True)
class Source:
    """What analysis reads from a run.

    Attributes
    ----------
    run : the MLflow run
    snaps : its snapshots, epochs ascending
    history : dict of metric name (`CURVES`) to (steps (n,), values (n,))
    checkpoint : the last checkpoint (model state and config, data config, classes, normalisation)
    recall : class name to its validation recall (`RECALL`) as (steps (n,), values (n,)); only
        the classes the run logged it for
    pictures : image key to the steps the run already has pictures of (`tracking.image_steps`)
    recorded : whether dsc.Recorder made the run (any model): no model or data config to rebuild
    skipped_epochs : epoch -> why its snapshot was left out (its file fails its checksum)
    """

    run: Run
    snaps: snapshot.Snapshots
    history: dict[str, tuple[np.ndarray, np.ndarray]]
    checkpoint: dict
    recall: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    pictures: dict[str, set[int]] = field(default_factory=dict)
    recorded: bool = False
    skipped_epochs: dict[int, str] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.run.info.run_id


def _last_checkpoint(run_id: str, recorded: bool) -> dict:
    ckpts = tracking.list_checkpoints(run_id)
    if not ckpts:
        raise TrackingError(
            f"run {run_id} has no {tracking.CHECKPOINT_DIR}/ (no checkpoint); analyze needs the final weights"
        )
    path = ckpts[max(ckpts)]
    ckpt = tracking.load_checkpoint(run_id, path)
    need = {"model_state", "classes"} | (set() if recorded else {"model_config", "data_config"})
    missing = need - set(ckpt)
    if missing:
        raise TrackingError(
            f"checkpoint {path} of run {run_id} lacks {sorted(missing)}; was it written by `dsc train` or dsc.Recorder?"
        )
    return ckpt


def read_source(run: Run) -> Source:
    """Download what analysis reads; TrackingError (one line) for what is missing.

    A snapshot epoch whose file fails its checksum is left out (``Source.skipped_epochs`` says
    why), with a warning; a run with no intact epoch is refused.
    """
    client = MlflowClient()
    run_id = run.info.run_id
    snaps, skipped = tracking.snapshot.load_verified(run_id)
    if skipped and not snaps.epochs:
        more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
        raise TrackingError(
            f"no snapshot epoch of run {run_id} is intact: {next(iter(skipped.values()))}{more}; "
            f"{tracking.snapshot.RECOMPUTE}"
        )
    if not snaps.epochs:
        raise TrackingError(f"run {run_id} has snapshots/probe.npz but no epoch snapshots")
    for epoch, why in skipped.items():
        tqdm.write(f"warning: epoch {epoch} is left out of the analysis: {why}", file=sys.stderr)
    history = {k: tracking.metric_history(run_id, k, client) for k in CURVES if k in run.data.metrics}
    if "acc/val" not in history or not history["acc/val"][0].size:
        raise TrackingError(
            f"run {run_id} has no acc/val metric; analyze reads runs made by `dsc train` or dsc.Recorder"
        )
    logged = run.data.metrics
    recall = {
        name: tracking.metric_history(run_id, RECALL.format(name), client)
        for name in snaps.classes
        if RECALL.format(name) in logged
    }
    recorded = RECORDER_TAG in run.data.tags
    return Source(
        run,
        snaps,
        history,
        _last_checkpoint(run_id, recorded),
        recall,
        tracking.image_steps(run_id, client),
        recorded,
        skipped,
    )


def load_model(checkpoint: dict) -> nn.Module:
    """The checkpoint's network with its final weights, in eval mode."""
    model = build_model(ModelConfig(**checkpoint["model_config"]))
    model.load_state_dict(checkpoint["model_state"])
    return model.eval()


def weight_shapes(src: Source, model: nn.Module | None) -> dict[str, tuple[int, int]]:
    """(out, in) of each weight layer (a kernel's channels): from the snapshots, else the model's named layers."""
    if src.snaps.weight_shapes or model is None:
        return dict(src.snaps.weight_shapes)
    # nn.Module's attributes are typed Tensor | Module; a weight layer's weight is a tensor
    shapes = {n: cast(torch.Tensor, m.weight).shape for n, m in named_layers(model).items()}
    return {n: (s[0], s[1]) for n, s in shapes.items()}


class Images(Protocol):
    """What the image steps read: ``get()``, the data config (None where unknown) and the images."""

    def get(self) -> tuple[DataConfig | None, ImageSet]: ...


class RunImages:
    """The run's dataset, rebuilt from the checkpoint's data config on first use, then kept.

    Two threads ask for it (the inputs step, and the modes sweep beside it): a lock makes the
    first caller build it and the other wait. A failed rebuild is tried again by the next caller.
    """

    def __init__(self, src: Source) -> None:
        self._src = src
        self._lock = threading.Lock()
        self._loaded: tuple[DataConfig, ImageSet] | None = None

    def get(self) -> tuple[DataConfig, ImageSet]:
        """The data config and images; DataError when they cannot be rebuilt as trained on."""
        with self._lock:
            if self._loaded is None:
                self._loaded = self._rebuild()
            return self._loaded

    def _rebuild(self) -> tuple[DataConfig, ImageSet]:
        src = self._src
        cfg = DataConfig(**src.checkpoint["data_config"])
        ims = load_imageset(cfg)
        digest = src.run.data.params.get("data_digest")
        if digest and ims.digest() != digest:
            raise DataError(
                f"the dataset rebuilt from {cfg.data!r} differs from the one trained on "
                f"(digest {ims.digest()} != {digest})"
            )
        if (
            src.snaps.indices.max(initial=0) >= len(ims.labels)
            or (ims.labels[src.snaps.indices] != src.snaps.labels).any()
        ):
            raise DataError(f"the dataset rebuilt from {cfg.data!r} does not match the run's probe labels")
        return cfg, ims
