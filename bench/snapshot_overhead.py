"""Snapshot overhead: epochs with and without a snapshot, interleaved in one training run.

One training run of the default task (5 synthetic identities x 576 images, 128x128, the whole
validation split as probe) snapshots every second epoch, as ``dsc train --snapshot-every 2``
would: activations captured on the validation pass, spectra and CKA computed, the ``.npz``
written and logged with its metrics to a temporary SQLite tracking store. Odd epochs are the
arm without snapshots, even epochs the arm with them; interleaving epoch by epoch cancels the
slow drift of a shared machine, and the medians of each arm are compared. The snapshot's own
cost is also timed directly (its callback, and the validation pass with the capture hooks
against one without, best of 5 interleaved), which the machine's noise barely touches. Prints
seconds per epoch of each arm, both overheads and the snapshot size.

    uv run python bench/snapshot_overhead.py [--epochs 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import mlflow
import torch

from dsc.data.dataset import load_imageset, prepare
from dsc.jobs.snapshots import SnapshotLogger
from dsc.nn.model import DenseVGG
from dsc.nn.train import (
    evaluate,
    flush_denormals,
    keep_freed_memory,
    pick_device,
    train,
)
from dsc.settings import DataConfig, SnapshotConfig, TrainConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20, help="training epochs (half of them snapshotted)")
    args = ap.parse_args()
    keep_freed_memory()  # as dsc train does at start-up
    flush_denormals()
    tmp = tempfile.mkdtemp(prefix="dsc-bench-")
    mlflow.set_tracking_uri(f"sqlite:///{os.path.join(tmp, 'mlflow.db')}")

    data = prepare(load_imageset(DataConfig()), DataConfig())
    cfg = TrainConfig(epochs=args.epochs)
    device = pick_device(cfg.device)
    torch.manual_seed(0)
    model = DenseVGG(num_classes=len(data.classes))
    ends: dict[int, float] = {}
    callback: list[float] = []

    with mlflow.start_run() as run:
        snaps = SnapshotLogger.for_data(model, data, SnapshotConfig(every=2), device)

        def on_epoch(report) -> None:
            t0 = time.perf_counter()
            snaps(report)
            ends[report.epoch] = time.perf_counter()
            if snaps.due(report.epoch) and report.epoch > 0:
                callback.append(ends[report.epoch] - t0)

        train(model, data, cfg, on_epoch=on_epoch, val_context=snaps.context, progress=False)
        hooks = _hook_cost(model, data, device, cfg, snaps)
    # epoch e's time: its training, its evaluation and (even e) its snapshot
    took = {e: ends[e] - ends[e - 1] for e in range(2, args.epochs + 1)}  # epoch 1 warms up
    plain = statistics.median(t for e, t in took.items() if e % 2)
    snapped = statistics.median(t for e, t in took.items() if e % 2 == 0)
    art = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="snapshots")
    size = max(os.path.getsize(os.path.join(art, f)) for f in os.listdir(art) if f.startswith("epoch_"))
    print(
        f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"{len(data.train_idx)} train / {len(data.val_idx)} probe images, epochs 2..{args.epochs}"
    )
    print(
        "epoch seconds: "
        + " ".join(f"{e}:{t:.2f}{'*' if e % 2 == 0 else ''}" for e, t in took.items())
        + "   (* with a snapshot)"
    )
    print(f"without snapshots: {plain:7.2f} s per epoch (median)")
    print(f"with snapshots:    {snapped:7.2f} s per epoch (median)")
    print(f"overhead: {100 * (snapped - plain) / plain:.1f}%   snapshot size: {size / 1e6:.2f} MB per epoch")
    direct = hooks + statistics.median(callback)
    print(
        f"direct cost: capture hooks {hooks:.2f} s + spectra, CKA, file and logging "
        f"{statistics.median(callback):.2f} s = {direct:.2f} s per snapshot, "
        f"{100 * direct / plain:.1f}% of an epoch"
    )


def _hook_cost(model, data, device, cfg, snaps, repeats: int = 5) -> float:
    """Seconds the capture hooks add to one validation pass (best of ``repeats`` each, interleaved)."""
    without = with_hooks = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        evaluate(model, data, data.val_idx, device, cfg)
        t1 = time.perf_counter()
        with snaps.capture.recording():
            evaluate(model, data, data.val_idx, device, cfg)
        t2 = time.perf_counter()
        snaps.capture.take()
        without, with_hooks = min(without, t1 - t0), min(with_hooks, t2 - t1)
    return max(with_hooks - without, 0.0)


if __name__ == "__main__":
    main()
