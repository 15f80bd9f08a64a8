"""A tracked run's snapshots, downloaded and read back as arrays (the format: :mod:`dsc.core.snapshot`)."""
from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
from mlflow.tracking import MlflowClient

from dsc.core import snapshot
from dsc.errors import TrackingError
from dsc.tracking.artifacts import complete_through
from dsc.tracking.store import require_run


def download(run_id: str, prefix: str = "snapshots") -> tuple[Path, int | None]:
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


def load(run_id: str, prefix: str = "snapshots") -> snapshot.Snapshots:
    """A tracked run's complete snapshots, by epoch (files of epochs not yet marked complete are left out)."""
    return snapshot.read_dir(*download(run_id, prefix))


def probe_inputs(run_id: str, name: str, prefix: str = "snapshots") -> tuple[np.ndarray, np.ndarray] | None:
    """The probe inputs (n, ...) float16 and labels (n,) a recorder kept beside the snapshots, or None."""
    if not any(f.path.endswith(name) for f in MlflowClient().list_artifacts(run_id, prefix)):
        return None
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"{prefix}/{name}")
    with np.load(local, allow_pickle=False) as z:
        return z["inputs"], z["labels"]
