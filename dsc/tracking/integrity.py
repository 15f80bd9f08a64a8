"""Checksums of the files a run's readers unpickle or unpack: recorded on upload, verified on download.

Every checkpoint and snapshot file goes up through :func:`upload_checked`, which records the
file's SHA-256 as the run tag ``dsc.sha256.<artifact path>`` *before* uploading it: a file
that is later truncated, zeroed or flipped at rest, or replaced by a half-finished upload, no
longer matches, and the readers (:func:`dsc.tracking.load_checkpoint`,
:mod:`dsc.tracking.snapshot`) say so by name instead of unpickling it. A file without a
recorded checksum (written before checksums were kept) is read as it is.

Public API: :data:`CHECKSUM_TAG`, :func:`sha256_of`, :func:`upload_checked`,
:func:`recorded_checksum`, :func:`corruption`, :func:`verify`.
"""

from __future__ import annotations

import errno
import hashlib
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
from mlflow.tracking import MlflowClient

from dsc.errors import TrackingError

CHECKSUM_TAG = "dsc.sha256.{}"  # formatted with the file's artifact path: dsc.sha256.checkpoints/epoch_0003.pt


def sha256_of(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, as 64 hex digits."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def upload_checked(run_id: str, local_path: str | Path, artifact_dir: str) -> str:
    """Log ``local_path`` as an artifact of run ``run_id`` under ``artifact_dir``, with its checksum.

    The checksum tag is set first, then the file uploaded: whatever stops in between (a
    full store, a dead server) leaves a tag that no partial file matches. Returns the
    file's artifact path (``artifact_dir/name``).

    Raises
    ------
    TrackingError
        The artifact store has no room for the file: the line names the store, the bytes the
        file needs and those free, and how to continue.
    """
    local_path = Path(local_path)
    artifact_path = f"{artifact_dir}/{local_path.name}" if artifact_dir else local_path.name
    client = MlflowClient()
    client.set_tag(run_id, CHECKSUM_TAG.format(artifact_path), sha256_of(local_path))
    try:
        client.log_artifact(run_id, str(local_path), artifact_dir or None)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise TrackingError(_full_line(client.get_run(run_id), artifact_path, local_path.stat().st_size)) from None
    return artifact_path


def _full_line(run: mlflow.entities.Run, artifact_path: str, size: int) -> str:
    """The one line of an artifact store that ran out of space while ``artifact_path`` was written."""
    root = run.info.artifact_uri
    free = ""
    if urlparse(root).scheme in ("", "file"):
        where = Path(unquote(urlparse(root).path))
        while not where.exists() and where != where.parent:
            where = where.parent
        free = f", {shutil.disk_usage(where).free} free there"
    return (
        f"the artifact store {root} is full: {artifact_path} needs {size} bytes{free}; every earlier "
        f"epoch's files are kept: free space (or move the store), then continue a training run with "
        f"`dsc train --resume {run.info.run_id}`"
    )


def recorded_checksum(run: mlflow.entities.Run, artifact_path: str) -> str | None:
    """The SHA-256 recorded when ``artifact_path`` was uploaded (None: none was recorded)."""
    return run.data.tags.get(CHECKSUM_TAG.format(artifact_path))


def corruption(run: mlflow.entities.Run, artifact_path: str, local: str | Path) -> str | None:
    """Why the downloaded copy ``local`` of ``artifact_path`` is not the file that was written, or None.

    None too when no checksum was recorded (nothing to compare with).
    """
    expected = recorded_checksum(run, artifact_path)
    if expected is None:
        return None
    actual = sha256_of(local)
    if actual == expected:
        return None
    size = Path(local).stat().st_size
    return (
        f"its SHA-256 is {actual[:12]}... ({size} bytes), not the {expected[:12]}... recorded when it was "
        "written: truncated or altered since"
    )


def verify(run: mlflow.entities.Run, artifact_path: str, local: str | Path, what: str, hint: str) -> None:
    """Raise a one-line TrackingError naming ``what`` (``"checkpoint checkpoints/epoch_0003.pt"``)
    if ``local`` fails its recorded checksum; ``hint`` says what to do instead."""
    reason = corruption(run, artifact_path, local)
    if reason:
        raise TrackingError(f"{what} of run {run.info.run_id} fails its checksum ({reason}); {hint}")


__all__ = ["CHECKSUM_TAG", "corruption", "recorded_checksum", "sha256_of", "upload_checked", "verify"]
