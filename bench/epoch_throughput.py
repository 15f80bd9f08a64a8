"""Whole epochs, as a user waits for them: dsc's epoch against a plain PyTorch loop's, one process.

dsc's arm is one epoch of ``dsc train`` with the project defaults, part by part as the
training loop and its callbacks run them: the training passes (``train_one_epoch``), the
evaluation of the training and validation splits (``epoch_metrics``, the activation capture
riding on the validation pass), the snapshot (spectra, CKA, the ``.npz`` and its metrics) and
the checkpoint with its upload and the epoch's metrics (``EpochLogger``), into a temporary
SQLite store. The plain arm does the same passes the way a first script would: torch's stock
layers (``StockVGG``, same weights), NCHW float32, a DataLoader, train-mode steps of 32 with
torch's default Adam, then eval-mode passes over both splits in batches of 256; it records
nothing. The arms alternate, ``--epochs-per-arm`` epochs at a time, and the medians of seconds
per epoch are compared, which cancels the slow drift of a shared machine. A third arm, dsc's
epoch without snapshots (``--snapshot-every 0``; its own copy of the model), alternates with
them too: against it, the snapshot overhead of the default run (a snapshot every epoch).
Prints seconds per epoch of each arm, their ratio, each part's share of dsc's epoch, and the
bound that dsc's training passes alone set on the ratio.

Process settings: glibc's freed blocks are kept for both arms (``keep_freed_memory``, which
helps the plain loop more). Subnormal floats are flushed for dsc's arms only, as ``dsc
train`` flushes them and a plain script does not. The flag is per thread and threads inherit
it when they start, so it is switched on this thread before each dsc arm and off before each
plain arm; threads that torch started before (preparing the data) keep computing with
subnormals in every arm, which can only handicap dsc's. Setting the flag once for every
thread of both arms speeds the plain loop's training passes up in this process, though a plain
script on its own gains nothing from it.

    uv run python bench/epoch_throughput.py [--rounds 5] [--epochs-per-arm 2] [--train-images 0]

``--train-images N`` keeps the first N training images (0: all), for a quicker look.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time

import mlflow
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from train_throughput import StockVGG, plain_epoch

from dsc.data.dataset import load_imageset, prepare
from dsc.jobs.checkpoints import EpochLogger
from dsc.jobs.snapshots import SnapshotLogger
from dsc.nn.model import DenseVGG
from dsc.nn.train import (
    EpochReport,
    epoch_metrics,
    flush_denormals,
    keep_freed_memory,
    make_optimizer,
    pick_device,
    train_one_epoch,
)
from dsc.settings import DataConfig, SnapshotConfig, TrackConfig, TrainConfig

PARTS = ("training passes", "evaluations", "snapshot", "checkpoint, upload, metrics")
BARE = 100_000  # the first epoch the arm without snapshots logs (a multiple of --state-every)


@torch.no_grad()
def plain_evaluate(model: nn.Module, loader: DataLoader) -> float:
    """Eval-mode loss over a split, as a plain script computes it."""
    model.eval()
    total = 0.0
    for xb, yb in loader:
        total += float(nn.functional.cross_entropy(model(xb), yb, reduction="sum"))
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="alternating epochs of each arm (medians compared)")
    ap.add_argument("--epochs-per-arm", type=int, default=2, help="consecutive epochs of one arm per turn")
    ap.add_argument("--train-images", type=int, default=0, help="keep the first N training images (0: all)")
    args = ap.parse_args()
    keep_freed_memory()  # as dsc train does at start-up; process-wide, so both arms run under it
    tmp = tempfile.mkdtemp(prefix="dsc-bench-")
    mlflow.set_tracking_uri(f"sqlite:///{os.path.join(tmp, 'mlflow.db')}")
    data = prepare(load_imageset(DataConfig()), DataConfig())
    if args.train_images:
        data.train_idx = data.train_idx[: args.train_images]
    cfg = TrainConfig()
    device = pick_device(cfg.device)
    torch.manual_seed(0)
    base = DenseVGG(num_classes=len(data.classes))

    def split(idx, shuffle: bool, batch: int) -> DataLoader:
        x3 = data.x[idx].expand(-1, 3, -1, -1).contiguous()  # 3 channels materialised, NCHW
        return DataLoader(TensorDataset(x3, data.y[idx]), batch_size=batch, shuffle=shuffle)

    train_loader, evals = (
        split(data.train_idx, True, 32),
        [split(i, False, 256) for i in (data.train_idx, data.val_idx)],
    )
    plain = StockVGG(base).to(device)
    plain_opt = torch.optim.Adam(plain.parameters(), lr=cfg.lr)
    ours = copy.deepcopy(base).to(device, memory_format=torch.channels_last)
    opt = make_optimizer(ours, cfg)

    k = args.epochs_per_arm

    def plain_arm() -> list[float]:
        """Seconds per epoch of the plain loop's training passes and evaluations."""
        torch.set_flush_denormal(False)  # a plain script computes with subnormals (see the module doc)
        train_s = eval_s = 0.0
        for _ in range(k):
            t0 = time.perf_counter()
            plain_epoch(plain, train_loader, plain_opt)
            t1 = time.perf_counter()
            for loader in evals:
                plain_evaluate(plain, loader)
            train_s, eval_s = train_s + (t1 - t0) / k, eval_s + (time.perf_counter() - t1) / k
        return [train_s, eval_s]

    bare = copy.deepcopy(base).to(device, memory_format=torch.channels_last)  # dsc without snapshots
    bare_opt = make_optimizer(bare, cfg)

    with mlflow.start_run():
        snaps = SnapshotLogger.for_data(ours, data, SnapshotConfig(), device, defer_metrics=True)  # as dsc train
        # as `dsc train` records: the optimizer state every --state-every epochs
        logger = EpochLogger({}, last_epoch=10**6, state_every=TrackConfig().state_every)
        # the arm without snapshots logs epochs from BARE on, so that the two never share a step
        bare_logger = EpochLogger({}, last_epoch=10**6, state_every=TrackConfig().state_every)

        def ours_arm(first: int, model, optimizer, epoch_logger, snapshots) -> list[float]:
            """Seconds per epoch of each part, over ``k`` consecutive epochs from ``first``."""
            flush_denormals()  # as dsc train does (see the module doc)
            parts = [0.0] * len(PARTS)
            for epoch in range(first, first + k):
                marks = [time.perf_counter()]
                train_one_epoch(model, data, optimizer, cfg, epoch % BARE, device)
                marks.append(time.perf_counter())
                context = snapshots.context(epoch) if snapshots else None
                report = EpochReport(epoch, epoch_metrics(model, data, device, cfg, context), model, optimizer)
                marks.append(time.perf_counter())
                if snapshots:
                    snapshots(report)
                marks.append(time.perf_counter())
                epoch_logger(report)
                marks.append(time.perf_counter())
                parts = [p + (b - a) / k for p, a, b in zip(parts, marks, marks[1:])]
            return parts

        # warm-up: allocator, thread pools, kernels, the store
        plain_arm(), ours_arm(1, ours, opt, logger, snaps), ours_arm(BARE + 1, bare, bare_opt, bare_logger, None)
        t_plain, t_ours, t_bare = [], [], []
        for r in range(args.rounds):
            t_plain.append(plain_arm())
            t_ours.append(ours_arm(1 + k * (r + 1), ours, opt, logger, snaps))
            t_bare.append(ours_arm(BARE + 1 + k * (r + 1), bare, bare_opt, bare_logger, None))
    total, plain_total = [sum(p) for p in t_ours], [sum(p) for p in t_plain]
    ref, fast = statistics.median(plain_total), statistics.median(total)
    print(
        f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, {args.rounds} x {k} epochs "
        f"per arm of {len(data.train_idx)} train + {len(data.val_idx)} val images of 3x{data.x.shape[-2]}x"
        f"{data.x.shape[-1]}"
    )
    print(f"plain loop (stock layers, NCHW, train + eval of both splits): {ref:7.2f} s per epoch (median)")
    print(f"dsc epoch (train, eval, snapshot, checkpoint, metrics):         {fast:7.2f} s per epoch (median)")
    print(
        f"ratio: {ref / fast:.2f}x   (per-epoch ratios {min(p / o for p, o in zip(plain_total, total)):.2f}"
        f"..{max(p / o for p, o in zip(plain_total, total)):.2f})"
    )
    for i, name in enumerate(PARTS[:2]):
        ours_s, plain_s = statistics.median(p[i] for p in t_ours), statistics.median(p[i] for p in t_plain)
        print(f"  {name}: plain {plain_s:.2f} s, dsc {ours_s:.2f} s, {plain_s / ours_s:.2f}x")
    print(
        "  bound with dsc's training passes alone (all else free): "
        f"{ref / statistics.median(p[0] for p in t_ours):.2f}x"
    )
    for i, name in enumerate(PARTS):
        part = statistics.median(p[i] for p in t_ours)
        print(f"  {name:28s} {part:6.2f} s  {100 * part / fast:5.1f}%")
    bare_total = [sum(p) for p in t_bare]
    over = [(a - b) / b for a, b in zip(total, bare_total)]
    print(
        f"dsc epoch without snapshots (--snapshot-every 0): {statistics.median(bare_total):.2f} s per epoch "
        f"(median); snapshot overhead {100 * statistics.median(over):.1f}% "
        f"(per-round {100 * min(over):.1f}..{100 * max(over):.1f}%)"
    )


if __name__ == "__main__":
    main()
