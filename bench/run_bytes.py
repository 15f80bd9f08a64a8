"""Artifact bytes of a default training run, from one trained epoch's files.

Trains the default task (5 synthetic identities x 576 images, 128x128, DenseVGG) for one
epoch into a temporary SQLite store with the recorder ``dsc train`` uses, then reads the sizes
of what it left: a weights checkpoint, a full one (weights, Adam's moments, generators), a
snapshot and the epoch's pictures (which `dsc analyze` logs in a default run). A default run
keeps a checkpoint and a snapshot for each of its 61 epochs (0-60), full ones at epochs 0, 20,
40 and 60 (``--state-every 20``; epoch 0's optimizer state is empty), so its bytes are estimated
as 61 x (weights + snapshot + pictures) + 3 x (full - weights) + the probe file; the registered
models are not counted. Prints each part and the total against 1.83 GB (every checkpoint full
and stored, as before).

With ``--run-id``, counts a finished run's artifacts instead, folder by folder, in the store
that ``MLFLOW_TRACKING_URI`` names (a real default run: its snapshots grow as activations
grow less sparse, which one trained epoch cannot show).

    uv run python bench/run_bytes.py [--run-id ID]
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
from pathlib import Path

import mlflow
import torch

from dsc.data.dataset import load_imageset, prepare
from dsc.jobs.checkpoints import EpochLogger
from dsc.jobs.snapshots import SnapshotLogger
from dsc.nn.checkpoint import checkpoint_payload
from dsc.nn.model import DenseVGG
from dsc.nn.train import flush_denormals, keep_freed_memory, pick_device, train
from dsc.settings import DataConfig, SnapshotConfig, TrackConfig, TrainConfig
from dsc.tracking import deflate

EPOCHS, BEFORE = 60, 1.83e9


def count_run(run_id: str) -> None:
    """Bytes of each top-level artifact folder of ``run_id``, and of its training artifacts."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()

    def size(path: str | None) -> int:
        return sum(size(f.path) if f.is_dir else (f.file_size or 0) for f in client.list_artifacts(run_id, path))

    folders = {f.path: size(f.path) if f.is_dir else (f.file_size or 0) for f in client.list_artifacts(run_id)}
    for name, n in sorted(folders.items()):
        print(f"{name:20s} {n / 1e6:8.1f} MB")
    training = folders.get("checkpoints", 0) + folders.get("snapshots", 0)
    print(
        f"training artifacts (checkpoints + snapshots): {training / 1e9:.3f} GB = {100 * training / BEFORE:.1f}% "
        f"of 1.83 GB; everything {sum(folders.values()) / 1e9:.3f} GB = {100 * sum(folders.values()) / BEFORE:.1f}%"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-id", default="", help="count this finished run's artifacts instead of estimating")
    args = ap.parse_args()
    if args.run_id:
        count_run(args.run_id)
        return
    keep_freed_memory()
    flush_denormals()
    tmp = tempfile.mkdtemp(prefix="dsc-bench-")
    mlflow.set_tracking_uri(f"sqlite:///{os.path.join(tmp, 'mlflow.db')}")
    data = prepare(load_imageset(DataConfig()), DataConfig())
    cfg = TrainConfig(epochs=1)
    torch.manual_seed(0)
    model = DenseVGG(num_classes=len(data.classes))
    with mlflow.start_run() as run:
        # images=True: the same pictures `dsc analyze` logs for each snapshot of a default run
        snaps = SnapshotLogger.for_data(model, data, SnapshotConfig(images=True), pick_device(cfg.device))
        # last_epoch beyond 1: epoch 1 keeps a weights checkpoint, as most epochs of a default run
        logger = EpochLogger({}, last_epoch=EPOCHS, state_every=TrackConfig().state_every)
        full = {}

        def on_epoch(report) -> None:
            snaps(report)
            logger(report)
            full.update(copy.deepcopy(checkpoint_payload(report, {})))

        train(model, data, cfg, on_epoch=on_epoch, val_context=snaps.context, progress=False)
        artifacts = Path(mlflow.get_artifact_uri().removeprefix("file://"))
    full_path = Path(tmp) / "full.pt"
    torch.save(full, full_path)

    sizes = {
        "weights checkpoint": (artifacts / "checkpoints" / "epoch_0001.pt").stat().st_size,
        "full checkpoint": deflate(full_path).stat().st_size,
        "snapshot": (artifacts / "snapshots" / "epoch_0001.npz").stat().st_size,
        "pictures": sum(p.stat().st_size for p in (artifacts / "images").glob("*step+1+*")),
        "probe": (artifacts / "snapshots" / "probe.npz").stat().st_size,
    }
    n = EPOCHS + 1
    total = (
        n * (sizes["weights checkpoint"] + sizes["snapshot"] + sizes["pictures"])
        + 3 * (sizes["full checkpoint"] - sizes["weights checkpoint"])
        + sizes["probe"]
    )
    for name, size in sizes.items():
        print(f"{name:20s} {size / 1e6:8.2f} MB")
    print(
        f"default run (61 epochs): {total / 1e9:.3f} GB = {100 * total / BEFORE:.1f}% of 1.83 GB  "
        f"(run {run.info.run_id})"
    )


if __name__ == "__main__":
    main()
