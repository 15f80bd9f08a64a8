"""Snapshot overhead: training epochs with and without per-epoch snapshots, in one process.

Both arms train the same network from the same initial weights on the default task
(5 synthetic identities x 576 images, 128x128, the whole validation split as probe) for
``--epochs`` epochs; the snapshot arm captures activations on the validation pass, computes
spectra and CKA, writes the ``.npz`` and logs it to a temporary SQLite tracking store, as
``dsc train`` does. Prints seconds per epoch of each arm, the overhead, and the snapshot size.

    uv run python bench/snapshot_overhead.py [--epochs 2]
"""
from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time

import mlflow
import torch

from dsc.data.dataset import DataConfig, load_imageset, prepare
from dsc.model import DenseVGG
from dsc.tracking import SnapshotConfig, SnapshotLogger
from dsc.train import TrainConfig, pick_device, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2, help="epochs per arm (after epoch 0)")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="dsc-bench-")
    mlflow.set_tracking_uri(f"sqlite:///{os.path.join(tmp, 'mlflow.db')}")

    data = prepare(load_imageset(DataConfig()), DataConfig())
    cfg = TrainConfig(epochs=args.epochs)
    device = pick_device(cfg.device)
    torch.manual_seed(0)
    base = DenseVGG(num_classes=len(data.classes))

    def plain() -> float:
        t0 = time.perf_counter()
        train(copy.deepcopy(base), data, cfg, progress=False)
        return time.perf_counter() - t0

    def with_snapshots() -> tuple[float, int]:
        model = copy.deepcopy(base)
        with mlflow.start_run() as run:
            t0 = time.perf_counter()
            snaps = SnapshotLogger(model, data, SnapshotConfig(), device)
            train(model, data, cfg, on_epoch=snaps, val_context=snaps.context, progress=False)
            elapsed = time.perf_counter() - t0
        art = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="snapshots")
        size = max(os.path.getsize(os.path.join(art, f)) for f in os.listdir(art) if f.startswith("epoch_"))
        return elapsed, size

    plain()  # warm-up: allocator, thread pools, data in cache
    t_plain = plain()
    t_snap, size = with_snapshots()
    n = args.epochs + 1  # epoch 0's evaluation is part of both arms
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{len(data.train_idx)} train / {len(data.val_idx)} probe images")
    print(f"without snapshots: {t_plain / n:7.2f} s per epoch")
    print(f"with snapshots:    {t_snap / n:7.2f} s per epoch")
    print(f"overhead: {100 * (t_snap - t_plain) / t_plain:.1f}%   snapshot size: {size / 1e6:.2f} MB per epoch")


if __name__ == "__main__":
    main()
