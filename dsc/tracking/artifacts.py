"""A run's artifacts: checkpoints, snapshot directories, and the tags that mark them complete.

Layout under a run's artifacts (see the README): ``checkpoints/epoch_EEEE.pt`` and
``snapshots/`` (``probe.npz``, ``epoch_EEEE.npz``; the format is :mod:`dsc.core.snapshot`).
"""
from __future__ import annotations

from pathlib import Path

import mlflow
import torch
from mlflow.tracking import MlflowClient

from dsc.errors import TrackingError
from dsc.tracking.store import require_run

CHECKPOINT_DIR = "checkpoints"


CHECKPOINT_FMT = "epoch_{:04d}.pt"


# Artifacts are uploaded first and this tag (``dsc.complete.<dir>`` = last epoch) is set after
# them: a file of a later epoch, half-written when a process died, is never read as complete.
COMPLETE_TAG = "dsc.complete.{}"


def mark_complete(run_id: str, directory: str, epoch: int) -> None:
    MlflowClient().set_tag(run_id, COMPLETE_TAG.format(directory), str(epoch))


def complete_through(run: mlflow.entities.Run, directory: str) -> int | None:
    """The last epoch whose files under ``directory`` are known complete (None: no record)."""
    value = run.data.tags.get(COMPLETE_TAG.format(directory))
    return int(value) if value is not None else None


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
