"""The recorder's cost per epoch against the same plain loop without it, in one process.

torchvision's ResNet-18 (10 classes) at 32x32, trained by a plain loop on ``--train`` random
images; each epoch of the recorded arm adds ``rec.epoch()``: the probe's forward pass over
``--probe`` images, the snapshot (activations of every Conv2d and Linear, every weight's
spectrum, CKA) and a weights checkpoint, logged into a temporary SQLite store. The two arms
alternate epoch by epoch so that both see the same machine; the ratio printed is the
recorder's seconds over the plain epoch's.

    uv run python bench/recorder_overhead.py            # 10,000 training images, 1,000 probe images
    uv run python bench/recorder_overhead.py --train 2000 --epochs 1   # a quick look
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch
import torchvision
from torch import nn


def plain_epoch(
    model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, batch: int, seed: int
) -> float:
    model.train()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    t0 = time.perf_counter()
    for i in range(0, len(y), batch):
        idx = order[i : i + batch]
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=10_000, help="training images per epoch")
    ap.add_argument("--probe", type=int, default=1_000, help="probe images")
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs (after epoch 0)")
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args()

    os.chdir(tempfile.mkdtemp(prefix="dsc-bench-"))
    os.environ["MLFLOW_TRACKING_URI"] = "sqlite:///mlflow.db"
    from dsc.jobs.recorder import Recorder

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.train, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (args.train,), generator=gen)
    xp, yp = torch.randn(args.probe, 3, 32, 32, generator=gen), torch.arange(args.probe) % 10
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    epochs, records = [], []
    with Recorder(model, probe=(xp, yp), run_name="bench", log_model=False) as rec:
        t0 = time.perf_counter()
        rec.epoch(0)
        print(f"epoch 0 recorded in {time.perf_counter() - t0:.2f} s")
        for e in range(1, args.epochs + 1):
            epochs.append(plain_epoch(model, opt, x, y, args.batch, e))
            t0 = time.perf_counter()
            rec.epoch(e)
            records.append(time.perf_counter() - t0)
            print(
                f"epoch {e}: plain loop {epochs[-1]:.2f} s, recorder {records[-1]:.2f} s "
                f"({records[-1] / epochs[-1]:.1%})"
            )
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.train} training images, "
        f"{args.probe} probe images"
    )
    print(
        f"median: plain epoch {statistics.median(epochs):.2f} s, recorder {statistics.median(records):.2f} s, "
        f"ratio {statistics.median(records) / statistics.median(epochs):.1%} of an epoch"
    )


if __name__ == "__main__":
    main()
