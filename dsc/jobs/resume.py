"""A training run that stopped (killed, crashed) continued from its last complete checkpoint."""

from __future__ import annotations

import mlflow
from mlflow.tracking import MlflowClient

from dsc import tracking
from dsc.errors import DataError, TrackingError
from dsc.jobs.checkpoints import EpochLogger
from dsc.jobs.train import (
    GracefulStop,
    checkpoint_extra,
    register,
    restore,
    snapshot_config,
    train_logged,
    tune_process,
)
from dsc.nn.checkpoint import is_full, set_rng_state
from dsc.nn.train import epochs_to_train, pick_device
from dsc.settings import DataConfig, ModelConfig, TrackConfig

__all__ = ["latest_full", "restore_best", "resume_job"]


def resume_job(run_id: str, progress: bool = True, takeover: bool = False) -> str:
    """Continue a training run that stopped (killed, crashed) from its last complete checkpoint.

    Metrics, checkpoints and snapshots go into the same run; nothing it already has is logged
    twice. Training restarts from the latest readable *full* checkpoint (weights, optimizer
    state and torch's generators; see :class:`dsc.jobs.checkpoints.EpochLogger`) and replays the epochs
    after it that were already kept, rewriting their files with the same contents. On CPU the
    result equals an uninterrupted run with the same seed: the batch order of an epoch depends
    only on (seed, epoch). A run whose training process is alive (a fresh heartbeat,
    :mod:`dsc.tracking.heartbeat`) is refused unless ``takeover``.
    """
    tune_process()
    tracking.preflight(run_id=run_id)
    source = tracking.require_run(run_id)
    kind = tracking.run_kind(source)
    if kind is None and source.data.tags.get("mlflow.project.entryPoint") == "resume":
        raise TrackingError(
            "`mlflow run . -e resume` continues an existing training run: pass its id with --run-id RUN_ID"
        )
    if kind != "train":
        raise TrackingError(
            f"run {run_id} is {'a ' + kind if kind else 'not a dsc'} run; only runs of `dsc train` can be resumed"
        )
    if source.info.status == "FINISHED":
        raise TrackingError(f"run {run_id} already FINISHED; there is nothing to resume")
    tracking.require_free(source, takeover)
    ckpts = tracking.list_checkpoints(run_id)
    if not ckpts:
        raise TrackingError(f"run {run_id} has no complete checkpoint to resume from; start a new run with `dsc train`")
    params = source.data.params
    with (
        tracking.Heartbeat(run_id, claim=True),
        tracking.run_context(run_id=run_id, system_metrics=True) as run,
        GracefulStop() as stop,
    ):
        start, ckpt = latest_full(source, ckpts)
        data, model, train_cfg = restore(ckpt)
        digest = data.imageset.digest()
        if digest != source.data.tags.get("dsc.data_digest", digest):
            raise DataError(
                f"the data of run {run_id} changed since it started (digest "
                f"{digest} != {source.data.tags['dsc.data_digest']}); "
                "restore the dataset or start a new run"
            )
        model_cfg, data_cfg = ModelConfig(**ckpt["model_config"]), DataConfig(**ckpt["data_config"])
        snap_cfg = snapshot_config(params)
        track = TrackConfig(
            register=params.get("register", "True") == "True",
            register_name=params.get("register_name", ""),
            checkpoint_every=int(params.get("checkpoint_every", 1)),
            state_every=int(params.get("state_every", 1)),
            progress=progress,
        )
        device = pick_device(train_cfg.device)
        logged = tracking.LoggedSteps(run_id)
        logger = EpochLogger(
            checkpoint_extra(model_cfg, train_cfg, data_cfg, data),
            checkpoint_every=track.checkpoint_every,
            last_epoch=epochs_to_train(train_cfg, len(data.train_idx)),
            logged=logged,
            state_every=track.state_every,
        )
        restore_best(run_id, ckpts, start, logger, loaded=ckpt)
        mlflow.set_tags({"dsc.resumed_from": str(max(ckpts)), "dsc.replayed_from": str(start)})
        if "error" in source.data.tags:  # the failure that stopped it, kept under another name
            mlflow.set_tag("dsc.previous_error", source.data.tags["error"])
            MlflowClient().delete_tag(run_id, "error")
        if "rng_state" in ckpt:  # checkpoints written before generators were saved lack it
            set_rng_state(ckpt["rng_state"])
        train_logged(
            model,
            data,
            train_cfg,
            device,
            logger,
            snap_cfg,
            progress,
            start_epoch=start,
            optimizer_state=ckpt["optimizer_state"],
            logged=logged,
            stop=stop,
        )
        register(model, model_cfg, data, logger, track)
        return run.info.run_id


def latest_full(source: mlflow.entities.Run, ckpts: dict[int, str]) -> tuple[int, dict]:
    """The epoch and contents of the latest complete checkpoint that resuming can start from.

    A full checkpoint that is missing, unreadable or lacks the optimizer state is passed over
    for the one before it; none left is a one-line error.
    """
    run_id = source.info.run_id
    full = tracking.full_epochs(source)
    candidates = sorted((e for e in ckpts if full is None or e in full), reverse=True)
    passed = []
    for epoch in candidates:
        try:
            ckpt = tracking.load_checkpoint(run_id, ckpts[epoch])
        except (TrackingError, OSError) as exc:
            passed.append(f"{epoch} ({str(exc).split(' (')[0].split(';')[0]})")
            continue
        if is_full(ckpt):
            return epoch, ckpt
        passed.append(f"{epoch} (no optimizer state)")
    tried = "; ".join(passed) or "none is recorded as full"
    raise TrackingError(
        f"run {run_id} has no readable checkpoint with the optimizer state to resume from "
        f"(tried: {tried}); start a new run with `dsc train`"
    )


def restore_best(run_id: str, ckpts: dict[int, str], through: int, logger: EpochLogger, loaded: dict) -> None:
    """Give a resumed run's logger the best validation accuracy (and its weights) so far.

    ``loaded`` is the checkpoint of epoch ``through``, already read: not downloaded again when
    that epoch is also the best.
    """
    steps, values = tracking.metric_history(run_id, "acc/val")
    history = {int(e): float(v) for e, v in zip(steps, values) if 0 < e <= through}
    if not history:
        return
    best_epoch = min(history, key=lambda e: (-history[e], e))  # the first epoch with the highest value
    if best_epoch in ckpts:
        ckpt = loaded if best_epoch == through else tracking.load_checkpoint(run_id, ckpts[best_epoch])
        state = ckpt["model_state"]
        logger.restore_best(history[best_epoch], best_epoch, state)
