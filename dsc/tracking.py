"""The one place that talks to MLflow: runs, params, metrics, artifacts, datasets, models.

Training reports each epoch to :class:`EpochLogger`; everything the run leaves is laid out as
the README's "Artifact layout" section says.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.tracking import MlflowClient

from dsc import snapshot

from dsc.data.dataset import Prepared
from dsc.errors import ConfigError, DscError, TrackingError
from dsc.train import EpochReport

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_FMT = "epoch_{:04d}.pt"
# Artifacts are uploaded first and this tag (``dsc.complete.<dir>`` = last epoch) is set after
# them: a file of a later epoch, half-written when a process died, is never read as complete.
COMPLETE_TAG = "dsc.complete.{}"
ALIAS_FINAL = "final"
ALIAS_BEST = "best"


def ensure_store() -> None:
    """Create the tracking store's tables once, even when several runs start at once.

    MLflow creates a SQLite store's schema on first use, and two processes doing it together
    collide ("table already exists"); a file lock beside the database serialises that step.
    """
    uri = mlflow.get_tracking_uri()
    if not uri.startswith("sqlite:///"):
        MlflowClient().search_experiments(max_results=1)
        return
    import fcntl

    db = Path(uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            MlflowClient().search_experiments(max_results=1)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def run_context(experiment: str = "", run_name: str | None = None,
                tags: Mapping[str, str] | None = None, run_id: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """Start a run, or attach to the one ``mlflow run`` created (``MLFLOW_RUN_ID``) or to ``run_id``.

    Any exception marks the run FAILED (with the error as the ``error`` tag) and propagates;
    metrics and artifacts logged before it stay.
    """
    ensure_store()
    attached = run_id or os.environ.get("MLFLOW_RUN_ID")
    if run_id and os.environ.get("MLFLOW_RUN_ID", run_id) != run_id:
        raise ConfigError(f"MLFLOW_RUN_ID is {os.environ['MLFLOW_RUN_ID']} but run {run_id} was asked for; "
                          f"use `mlflow run . -e resume --run-id {run_id}` or unset MLFLOW_RUN_ID")
    if experiment and not attached:
        mlflow.set_experiment(experiment)
    run = mlflow.start_run(run_id=run_id, run_name=run_name if not run_id else None, tags=dict(tags or {}))
    try:
        yield run
    except BaseException as exc:
        with contextlib.suppress(Exception):
            mlflow.set_tag("error", f"{type(exc).__name__}: {exc}"[:4000])
        mlflow.end_run(status="FAILED" if not isinstance(exc, KeyboardInterrupt) else "KILLED")
        raise
    mlflow.end_run(status="FINISHED")


def log_params_once(params: Mapping[str, object]) -> None:
    """Log params, skipping keys the run already has (``mlflow run -P`` logs them as typed)."""
    run = mlflow.active_run()
    existing = MlflowClient().get_run(run.info.run_id).data.params if run else {}
    fresh = {k: v for k, v in params.items() if k not in existing}
    if fresh:
        mlflow.log_params(fresh)


def log_dataset(data: Prepared) -> None:
    """Log the train and validation splits as MLflow dataset inputs, with sizes and class counts."""
    ims = data.imageset
    digest = ims.digest()
    for context, idx in (("training", data.train_idx), ("validation", data.val_idx)):
        counts = np.bincount(ims.labels[idx], minlength=ims.num_classes)
        ds = mlflow.data.from_numpy(ims.images[idx], targets=ims.labels[idx], source=_dataset_source(ims),
                                    name=ims.name, digest=f"{digest}-{context[:5]}")
        tags = {"split_size": str(len(idx)),
                "class_counts": json.dumps({c: int(n) for c, n in zip(ims.classes, counts)})}
        clash_retried(functools.partial(mlflow.log_input, ds, context=context, tags=tags))
    mlflow.log_params({"data_digest": digest, "n_train": len(data.train_idx), "n_val": len(data.val_idx),
                       "classes": ",".join(ims.classes)})


def clash_retried(call: Callable[[], object], attempts: int = 4) -> object:
    """``call()``, tried again when a concurrent run inserted the same row first.

    MLflow's stores look a row up, then insert it (a dataset, a model alias): runs of one
    experiment starting or finishing together (a sweep) can all miss it, and every insert
    but the first breaks the unique key. The next try finds the row and updates or links it.
    """
    for attempt in range(attempts):
        try:
            return call()
        except mlflow.exceptions.MlflowException as exc:
            clash = any(s in str(exc) for s in ("UNIQUE constraint", "duplicate key", "IntegrityError"))
            if not clash or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def _dataset_source(ims) -> object:
    """A local path for data read from disk; for generated data, its generator parameters."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import get_registered_sources

    if ims.source and Path(ims.source).exists():
        # The registry holds MLflow's local-file source class; naming it avoids the
        # "can be interpreted in multiple ways" guess that a bare path triggers.
        local = next(s for s in get_registered_sources() if s._get_source_type() == "local")
        return local(ims.source)
    return CodeDatasetSource(tags={"generator": ims.source or ims.name})


def rng_state() -> dict[str, torch.Tensor]:
    """Torch's global generators (dropout draws from them), as a checkpoint stores them."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return state


def set_rng_state(state: Mapping[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["cpu"])
    cuda = [state[k] for k in sorted(state) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def checkpoint_payload(report: EpochReport, extra: Mapping[str, object]) -> dict:
    """A checkpoint that ``torch.load(weights_only=True)`` reads: tensors, numbers, strings.

    It holds what continuing needs: weights, optimizer state and the generators' state.
    """
    return {
        "epoch": report.epoch,
        "model_state": {k: v.detach().cpu().contiguous() for k, v in report.model.state_dict().items()},
        "optimizer_state": report.optimizer.state_dict(),
        "rng_state": rng_state(),
        "metrics": dict(report.metrics),
        **extra,
    }


class LoggedSteps:
    """Which (metric, step) pairs a run already has, so that a resumed run logs nothing twice.

    dsc logs every metric with increasing steps, so a key's latest step bounds what is there.
    """

    def __init__(self, run_id: str | None = None) -> None:
        self.latest: dict[str, int] = {}
        if run_id:
            client = MlflowClient()
            for key in client.get_run(run_id).data.metrics:
                self.latest[key] = max(m.step for m in client.get_metric_history(run_id, key))

    def fresh(self, metrics: Mapping[str, float], step: int) -> dict[str, float]:
        return {k: v for k, v in metrics.items() if step > self.latest.get(k, -1)}


def mark_complete(run_id: str, directory: str, epoch: int) -> None:
    MlflowClient().set_tag(run_id, COMPLETE_TAG.format(directory), str(epoch))


def complete_through(run: mlflow.entities.Run, directory: str) -> int | None:
    """The last epoch whose files under ``directory`` are known complete (None: no record)."""
    value = run.data.tags.get(COMPLETE_TAG.format(directory))
    return int(value) if value is not None else None


class EpochLogger:
    """The training callback: metrics with step = epoch, checkpoints, the best model.

    ``extra`` (configs, class names, normalisation) goes into every checkpoint. Checkpoints are
    kept every ``checkpoint_every`` epochs, at the last epoch and whenever validation accuracy
    reaches a new best (so a resumed run can still register the best model). ``logged``
    (from :class:`LoggedSteps`) skips metrics a resumed run already has.
    """

    def __init__(self, extra: Mapping[str, object], checkpoint_every: int = 1,
                 last_epoch: int | None = None, logged: LoggedSteps | None = None) -> None:
        self.extra = dict(extra)
        self.checkpoint_every = checkpoint_every
        self.final_epoch = last_epoch
        self.logged = logged or LoggedSteps()
        self.best_acc = -1.0
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None
        self.last_epoch = -1
        self._tmp = tempfile.TemporaryDirectory(prefix="dsc-ckpt-")

    def restore_best(self, acc: float, epoch: int, state: Mapping[str, torch.Tensor]) -> None:
        self.best_acc, self.best_epoch, self.best_state = acc, epoch, dict(state)

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
        if report.epoch % self.checkpoint_every == 0 or report.epoch == self.final_epoch or new_best:
            path = Path(self._tmp.name) / CHECKPOINT_FMT.format(report.epoch)
            torch.save(checkpoint_payload(report, self.extra), path)
            mlflow.log_artifact(str(path), CHECKPOINT_DIR)
            path.unlink()
            mark_complete(run_id, CHECKPOINT_DIR, report.epoch)
        self.last_epoch = report.epoch


@dataclass(frozen=True)
class SnapshotConfig:
    every: int = 1  # snapshot epoch 0 and every N epochs (0 = no snapshots)
    probe_per_class: int = 0  # cap on probe images per class from the validation split (0 = all)
    budget_mb: float = 4.0  # snapshot megabytes (10^6 bytes) per epoch; conv maps are pooled to fit

    def __post_init__(self) -> None:
        if self.every < 0 or self.probe_per_class < 0 or not self.budget_mb > 0:
            raise ConfigError(f"snapshot options: every={self.every} and probe_per_class="
                              f"{self.probe_per_class} must be >= 0, budget_mb={self.budget_mb} > 0")


def probe_rows(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Positions of the probe images in ``labels`` (all, or the first ``per_class`` of each)."""
    if per_class <= 0:
        return np.arange(len(labels))
    return np.sort(np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)]))


class SnapshotLogger:
    """Snapshots epoch 0 and every ``cfg.every`` epochs into run ``run_id`` (default: active run).

    During training, activations are captured on the validation pass training already makes
    (:meth:`context`), so a snapshot costs no extra forward pass. ``dsc snapshot`` uses the
    same object on checkpoints, so both paths write identical files.
    """

    def __init__(self, model: torch.nn.Module, data: Prepared, cfg: SnapshotConfig,
                 device: torch.device, prefix: str = "snapshots", run_id: str | None = None,
                 logged: LoggedSteps | None = None) -> None:
        from dsc.capture import ActivationCapture, plan_grids

        self.cfg, self.prefix = cfg, prefix
        self.logged = logged or LoggedSteps()
        self.run_id = run_id or mlflow.active_run().info.run_id
        self.client = MlflowClient()
        self.rows = probe_rows(data.y[data.val_idx].numpy(), cfg.probe_per_class)
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
        self.client.log_artifact(self.run_id, str(path), self.prefix)
        path.unlink()

    def due(self, epoch: int) -> bool:
        return self.cfg.every > 0 and epoch % self.cfg.every == 0

    def context(self, epoch: int) -> contextlib.AbstractContextManager:
        return self.capture.recording() if self.due(epoch) else contextlib.nullcontext()

    def __call__(self, report: EpochReport) -> None:
        if not self.due(report.epoch):
            return
        from dsc.capture import layer_weights

        snap = snapshot.compute(report.epoch, self.capture.take(self.rows), layer_weights(report.model))
        self._upload(snapshot.write(snap, Path(self._tmp.name)))
        log_metrics_to(self.run_id, self.logged.fresh(snap.metrics(), report.epoch), report.epoch)
        mark_complete(self.run_id, self.prefix, report.epoch)


def log_metrics_to(run_id: str, metrics: Mapping[str, float], step: int) -> None:
    """Log metrics with ``step`` to any run (active or finished) in one batch."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
    for i in range(0, len(batch), 1000):  # MLflow's per-request metric limit
        MlflowClient().log_batch(run_id, metrics=batch[i:i + 1000])


def list_checkpoints(run_id: str) -> dict[int, str]:
    """``{epoch: artifact path}`` of a run's complete checkpoints (see :data:`COMPLETE_TAG`)."""
    last = complete_through(require_run(run_id), CHECKPOINT_DIR)
    out = {}
    for f in MlflowClient().list_artifacts(run_id, CHECKPOINT_DIR):
        name = Path(f.path).name
        if name.startswith("epoch_") and name.endswith(".pt") and name[6:-3].isdigit():
            epoch = int(name[6:-3])
            if last is None or epoch <= last:
                out[epoch] = f.path
    return dict(sorted(out.items()))


def load_checkpoint(run_id: str, path: str) -> dict:
    """A checkpoint, read with ``weights_only=True`` (no pickle code runs)."""
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path)
    try:
        return torch.load(local, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = (str(exc).splitlines() or [""])[0][:160]
        raise TrackingError(f"checkpoint {path} of run {run_id} is unreadable ({type(exc).__name__}: {reason}); "
                            "it is truncated or not written by dsc: re-run training, or resume from an "
                            "earlier checkpoint") from None


def has_artifacts(run_id: str, prefix: str) -> bool:
    return bool(MlflowClient().list_artifacts(run_id, prefix))


def download_snapshots(run_id: str, prefix: str = "snapshots") -> tuple[Path, int | None]:
    """Download a run's snapshot directory; a clear error when the run has none.

    Returns the local directory and the last epoch known complete (None: no record).
    """
    run = require_run(run_id)
    names = [f.path for f in MlflowClient().list_artifacts(run_id, prefix)]
    if not any(n.endswith("probe.npz") for n in names):
        raise TrackingError(f"run {run_id} has no {prefix}/ (no snapshots); train with --snapshot-every 1 "
                            f"or run `dsc snapshot --run-id {run_id}`")
    local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=prefix))
    return local, complete_through(run, prefix)


def pip_requirements() -> list[str]:
    """Pinned requirements of a logged model, given explicitly (inference takes >10 s a call)."""
    import torchvision

    return [f"torch=={torch.__version__.split('+')[0]}",
            f"torchvision=={torchvision.__version__.split('+')[0]}",
            f"mlflow=={mlflow.__version__}", f"numpy=={np.__version__}"]


def log_and_register(model: torch.nn.Module, name: str, registered_name: str,
                     example: np.ndarray) -> str:
    """Log ``model`` (CPU, contiguous) under ``name`` and register it; return the version."""
    from mlflow.models import infer_signature

    model = copy.deepcopy(model).cpu().to(memory_format=torch.contiguous_format).eval()
    with torch.no_grad():
        out = model(torch.from_numpy(example)).numpy()
    # pt2 (torch.export) is MLflow's default: loading it runs no pickle. The example has a
    # batch of 2 so that the exported batch dimension stays dynamic (size 1 is specialised).
    info = mlflow.pytorch.log_model(
        model, name=name, registered_model_name=registered_name,
        pip_requirements=pip_requirements(), input_example=example,
        signature=infer_signature(example, out), serialization_format="pt2",
    )
    return str(info.registered_model_version)


def set_alias(registered_name: str, alias: str, version: str) -> None:
    clash_retried(functools.partial(MlflowClient().set_registered_model_alias, registered_name, alias, version))


def require_run(run_id: str) -> mlflow.entities.Run:
    """The run with this id, or a TrackingError that says how to find one."""
    try:
        return MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        raise TrackingError(f"no run with id {run_id!r} in {mlflow.get_tracking_uri()}; "
                            "list runs with `mlflow runs list --experiment-id ID`") from None


__all__ = ["DscError", "EpochLogger", "run_context", "log_params_once", "log_dataset",
           "log_and_register", "set_alias", "require_run"]
