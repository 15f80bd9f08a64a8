"""A run's artifacts: checkpoints, snapshot directories, and the tags that mark them complete.

Layout under a run's artifacts (docs/guide/run-contents.md): ``checkpoints/epoch_EEEE.pt`` and
``snapshots/`` (``probe.npz``, ``epoch_EEEE.npz``; the format is :mod:`dsc.core.snapshot`),
and ``images/`` (MLflow's stepped pictures, read back by :func:`image_steps`).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import mlflow
import torch
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient

from dsc.core.zips import write_zip
from dsc.errors import TrackingError
from dsc.tracking.integrity import verify
from dsc.tracking.store import require_run

CHECKPOINT_DIR = "checkpoints"


CHECKPOINT_FMT = "epoch_{:04d}.pt"


# The epochs whose checkpoints carry the optimizer and generator state, comma-separated. A run
# without the tag was written when every checkpoint did.
FULL_TAG = "dsc.full_states"


# Artifacts are uploaded first and this tag (``dsc.complete.<dir>`` = last epoch) is set after
# them: a file of a later epoch, half-written when a process died, is never read as complete.
# A directory written in one go (``analysis``) loses its tag before it is replaced.
COMPLETE_TAG = "dsc.complete.{}"


def mark_complete(run_id: str, directory: str, epoch: int) -> None:
    """Record that run ``run_id``'s files under ``directory`` are complete through ``epoch``.

    Call it only once every file of that epoch has been uploaded: :func:`complete_through`
    reads the tag back, and readers trust no file of a later epoch.
    """
    MlflowClient().set_tag(run_id, COMPLETE_TAG.format(directory), str(epoch))


def mark_incomplete(run_id: str, directory: str) -> None:
    """Remove the completion tag of ``directory``, before its files are replaced."""
    try:
        MlflowClient().delete_tag(run_id, COMPLETE_TAG.format(directory))
    except mlflow.exceptions.MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":  # no tag: nothing was marked complete
            raise


def replace_directory(run_id: str, local_dir: str | Path, directory: str) -> None:
    """Upload ``local_dir`` as the run's ``directory``, every file it held before deleted first.

    Nothing of an earlier upload stays beside the new files (on a store whose MLflow repository
    implements deletion, as the local, HTTP and cloud ones do).
    """
    repo = get_artifact_repository(require_run(run_id).info.artifact_uri)
    if MlflowClient().list_artifacts(run_id, directory):
        repo.delete_artifacts(directory)
    MlflowClient().log_artifacts(run_id, str(local_dir), directory)


def complete_through(run: mlflow.entities.Run, directory: str) -> int | None:
    """The last epoch whose files under ``directory`` are known complete (None: no record)."""
    value = run.data.tags.get(COMPLETE_TAG.format(directory))
    return int(value) if value is not None else None


def mark_full(run_id: str, epoch: int) -> None:
    """Record that the checkpoint of ``epoch`` carries what resuming needs (set once it is complete)."""
    known = full_epochs(require_run(run_id)) or []
    MlflowClient().set_tag(run_id, FULL_TAG, ",".join(map(str, sorted({*known, epoch}))))


def full_epochs(run: mlflow.entities.Run) -> list[int] | None:
    """Epochs of the checkpoints that can be resumed from, ascending (None: every one can)."""
    value = run.data.tags.get(FULL_TAG)
    return None if value is None else sorted(int(e) for e in value.split(",") if e)


def deflate(path: Path) -> Path:
    """Rewrite the zip file ``path`` (a torch checkpoint, an ``.npz``) with the entries that compress deflated.

    ``torch.load`` and ``np.load`` read deflated entries as they read stored ones. Level 1,
    LZ77 or Huffman alone, whichever shrinks an entry's first 64 KiB more; entries that would
    save under 2% (random bytes) are stored (:func:`dsc.core.zips.choose`). Trained float32
    weights shrink a little, with Huffman alone, and quickly (a run's bytes are
    ``bench/run_bytes.py`` on the benchmark page, docs/benchmarks.md). The entries are deflated
    on two threads.
    """
    packed = path.with_name(path.name + ".deflated")
    with zipfile.ZipFile(path) as src:
        entries = [(info.filename, src.read(info)) for info in src.infolist()]
    with open(packed, "wb") as f:
        write_zip(f, entries)
    os.replace(packed, path)
    return path


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
    """A checkpoint, verified against the checksum recorded when it was written
    (:mod:`dsc.tracking.integrity`), then read with ``weights_only=True`` (no pickle code runs).

    Raises
    ------
    TrackingError
        The file fails its checksum or cannot be read; the line names it.
    """
    run = require_run(run_id)
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path)
    verify(
        run,
        path,
        local,
        f"checkpoint {path}",
        "resume from an earlier checkpoint, or register another epoch with --epoch",
    )
    try:
        return torch.load(local, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = (str(exc).splitlines() or [""])[0][:160]
        raise TrackingError(
            f"checkpoint {path} of run {run_id} is unreadable ({type(exc).__name__}: {reason}); "
            "it is truncated or not written by dsc: re-run training, or resume from an "
            "earlier checkpoint"
        ) from None


IMAGE_DIR = "images"  # where ``log_image(key=..., step=...)`` puts a run's stepped pictures


def image_steps(run_id: str, client: MlflowClient | None = None) -> dict[str, set[int]]:
    """``{key: steps}`` of the pictures a run logged with ``log_image(key=..., step=...)``.

    Read from the file names MLflow gives them, ``images/<key>+step+<S>+timestamp+<T>+<uuid>.png``
    (``%`` instead of ``+`` before MLflow 3.5, ``~`` for a ``/`` in the key); the ``+compressed``
    thumbnails beside them are not counted.
    """
    out: dict[str, set[int]] = {}
    for f in (client or MlflowClient()).list_artifacts(run_id, IMAGE_DIR):
        name = Path(f.path).name
        if not name.endswith(".png"):
            continue
        for sep in "+%":
            key, marker, rest = name[:-4].partition(f"{sep}step{sep}")
            step = rest.split(sep, 1)[0]
            if marker and step.lstrip("-").isdigit():
                out.setdefault(key.replace("~", "/"), set()).add(int(step))
                break
    return out


def has_artifacts(run_id: str, prefix: str) -> bool:
    """Whether run ``run_id`` holds any artifact under ``prefix`` (a directory such as ``"images"``)."""
    return bool(MlflowClient().list_artifacts(run_id, prefix))
