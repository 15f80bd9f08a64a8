"""Snapshot overhead: epochs with and without a snapshot, interleaved in one training run.

One training run of the default task (5 synthetic identities x 576 images, 128x128, the whole
validation split as probe) snapshots every third epoch, as ``dsc train --snapshot-every 3``
would: activations captured on the validation pass, then spectra, CKA, the ``.npz`` and its
metrics, into a temporary SQLite tracking store. An epoch e = 0 (mod 3) takes the snapshot;
e + 1 and e + 2 do not (a snapshot done on a worker thread would spill into e + 1): the
overhead of one snapshot is t(e) + t(e + 1) - 2 t(e + 2),
as a share of t(e + 2): from the medians of the three kinds of epoch, and the median over
the triples. Interleaving cancels the slow drift of a shared machine; a VM's epochs still
vary by +-10%, so use 30 epochs or more for a figure. The snapshot's own cost, timed directly
(its callback, and the validation pass with the capture hooks against one without), and the
snapshot size are printed too.

    uv run python bench/snapshot_overhead.py [--epochs 31]
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
from dsc.jobs.recorder import SnapshotLogger
from dsc.nn.model import DenseVGG
from dsc.nn.train import evaluate, keep_freed_memory, pick_device, train
from dsc.settings import DataConfig, SnapshotConfig, TrainConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=21, help="training epochs (a third of them snapshotted)")
    args = ap.parse_args()
    keep_freed_memory()  # as dsc train does at start-up
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
        snaps = SnapshotLogger(model, data, SnapshotConfig(every=3), device)

        def on_epoch(report) -> None:
            t0 = time.perf_counter()
            snaps(report)
            ends[report.epoch] = time.perf_counter()
            if snaps.due(report.epoch) and report.epoch > 0:
                callback.append(ends[report.epoch] - t0)

        train(model, data, cfg, on_epoch=on_epoch, val_context=snaps.context, progress=False)
        hooks = _hook_cost(model, data, device, cfg, snaps)
    # epoch e's time: its training, its evaluation and (e = 0 mod 3) its capture; epoch 1 warms up
    took = {e: ends[e] - ends[e - 1] for e in range(2, args.epochs + 1)}
    triples = [e for e in range(3, args.epochs - 1, 3)]
    snapped, beside, clean = (statistics.median(took[e + k] for e in triples) for k in range(3))
    by_kind = (snapped + beside - 2 * clean) / clean
    by_triple = statistics.median((took[e] + took[e + 1] - 2 * took[e + 2]) / took[e + 2] for e in triples)
    art = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="snapshots")
    size = max(os.path.getsize(os.path.join(art, f)) for f in os.listdir(art) if f.startswith("epoch_"))
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{len(data.train_idx)} train / {len(data.val_idx)} probe images, epochs 2..{args.epochs}")
    marks = {0: "*", 1: "+", 2: ""}  # by e mod 3
    print("epoch seconds: " + " ".join(f"{e}:{t:.2f}{marks[e % 3]}" for e, t in took.items())
          + "   (* with a snapshot)")
    print(f"epochs (medians): with a snapshot {snapped:.2f} s, the next {beside:.2f} s, clean {clean:.2f} s")
    print(f"overhead per snapshot: {100 * by_kind:.1f}% of a clean epoch (medians by kind), "
          f"{100 * by_triple:.1f}% (median over {len(triples)} triples)   snapshot size: {size / 1e6:.2f} MB")
    direct = hooks + statistics.median(callback)
    print(f"direct costs: capture hooks {hooks:.2f} s + spectra, CKA, file and logging "
          f"{statistics.median(callback):.2f} s = {direct:.2f} s per snapshot, {100 * direct / clean:.1f}% of a clean epoch")


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
