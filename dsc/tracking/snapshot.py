"""A tracked run's snapshots, downloaded, verified and read back as arrays (the format: :mod:`dsc.core.snapshot`).

Each file is checked against the checksum recorded when it was uploaded
(:mod:`dsc.tracking.integrity`): :func:`load` refuses a run with a corrupted file, naming it;
:func:`load_verified` leaves the corrupted epochs out and says why, for a reader that can do
without them (``dsc analyze``).
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
from mlflow.tracking import MlflowClient

from dsc.core import snapshot
from dsc.errors import TrackingError
from dsc.tracking.artifacts import complete_through
from dsc.tracking.integrity import corruption
from dsc.tracking.store import require_run

RECOMPUTE = "recompute the snapshots with `dsc snapshot --overwrite`"


def download(run_id: str, prefix: str = "snapshots") -> tuple[Path, int | None]:
    """Download a run's snapshot directory; a clear error when the run has none.

    Returns the local directory and the last epoch known complete (None: no record). The
    files are not verified here: see :func:`corrupted`.
    """
    run = require_run(run_id)
    names = [f.path for f in MlflowClient().list_artifacts(run_id, prefix)]
    if not any(n.endswith("probe.npz") for n in names):
        raise TrackingError(
            f"run {run_id} has no {prefix}/ (no snapshots); train with --snapshot-every 1 "
            f"or run `dsc snapshot --run-id {run_id}`"
        )
    local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=prefix))
    return local, complete_through(run, prefix)


def _epoch(name: str) -> int | None:
    """The epoch of a snapshot file's name (``epoch_0003.npz``: 3); None for ``probe.npz``."""
    digits = name.removeprefix("epoch_").removesuffix(".npz")
    return int(digits) if name.startswith("epoch_") and digits.isdigit() else None


def corrupted(run_id: str, local: Path, prefix: str = "snapshots", through: int | None = None) -> dict[str, str]:
    """``{file name: reason}`` of the downloaded snapshot files in ``local`` that fail their checksums.

    Epochs after ``through`` (not yet marked complete, which readers skip anyway) are not checked.
    """
    run = require_run(run_id)
    bad = {}
    for path in sorted(local.glob("*.npz")):
        epoch = _epoch(path.name)
        if through is not None and epoch is not None and epoch > through:
            continue
        reason = corruption(run, f"{prefix}/{path.name}", path)
        if reason:
            bad[path.name] = reason
    return bad


def load_verified(run_id: str, prefix: str = "snapshots") -> tuple[snapshot.Snapshots, dict[int, str]]:
    """A run's complete snapshots but those that fail their checksums, and ``{epoch: why}`` of the latter.

    The corrupted epochs' files are removed from the local copy before it is read. A corrupted
    ``probe.npz`` (which every epoch needs) is an error.
    """
    local, through = download(run_id, prefix)
    bad = corrupted(run_id, local, prefix, through)
    if "probe.npz" in bad:
        raise TrackingError(
            f"snapshot {prefix}/probe.npz of run {run_id} fails its checksum ({bad['probe.npz']}); {RECOMPUTE}"
        )
    skipped = {}
    for name, reason in bad.items():
        epoch = _epoch(name)
        if epoch is not None:
            skipped[epoch] = f"snapshot {prefix}/{name} fails its checksum ({reason})"
        (local / name).unlink()
    return snapshot.read_dir(local, through), dict(sorted(skipped.items()))


def load(run_id: str, prefix: str = "snapshots") -> snapshot.Snapshots:
    """A tracked run's complete snapshots, by epoch (files of epochs not yet marked complete are left out).

    Raises
    ------
    TrackingError
        A file fails its checksum (the first such is named) or cannot be read.
    """
    local, through = download(run_id, prefix)
    bad = corrupted(run_id, local, prefix, through)
    if bad:
        name, reason = next(iter(bad.items()))
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise TrackingError(
            f"snapshot {prefix}/{name} of run {run_id} fails its checksum ({reason}){more}; {RECOMPUTE}"
        )
    return snapshot.read_dir(local, through)


def probe_inputs(run_id: str, name: str, prefix: str = "snapshots") -> tuple[np.ndarray, np.ndarray] | None:
    """The probe inputs (n, ...) float16 and labels (n,) a recorder kept beside the snapshots, or None."""
    if not any(f.path.endswith(name) for f in MlflowClient().list_artifacts(run_id, prefix)):
        return None
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"{prefix}/{name}")
    with np.load(local, allow_pickle=False) as z:
        return z["inputs"], z["labels"]
