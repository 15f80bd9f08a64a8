"""Training throughput: dsc's loop against a plain PyTorch loop, same model, data and process.

The plain loop is what a first script would do: NCHW float32 tensors, a DataLoader with
batch 32, no memory-format or threading tricks. Ours is ``dsc.train.train_one_epoch`` with the
project defaults. Prints images per second of each and their ratio.

    uv run python bench/train_throughput.py [--images 640] [--repeats 2]
"""
from __future__ import annotations

import argparse
import copy
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dsc.data.dataset import DataConfig, load_imageset, prepare
from dsc.model import DenseVGG
from dsc.train import TrainConfig, make_optimizer, pick_device, train_one_epoch


def plain_epoch(model: nn.Module, loader: DataLoader, lr: float) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    for xb, yb in loader:
        loss = nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=640, help="training images per timed pass")
    ap.add_argument("--repeats", type=int, default=2, help="timed passes of each loop (best kept)")
    args = ap.parse_args()

    data = prepare(load_imageset(DataConfig()), DataConfig())
    data.train_idx = data.train_idx[: args.images]
    cfg = TrainConfig()
    device = pick_device(cfg.device)
    torch.manual_seed(0)
    base = DenseVGG(num_classes=len(data.classes))

    # The plain reference: NCHW float32, 3 channels materialised, DataLoader batch 32.
    x3 = data.x[data.train_idx].expand(-1, 3, -1, -1).contiguous()
    loader = DataLoader(TensorDataset(x3, data.y[data.train_idx]), batch_size=32, shuffle=True)
    plain = copy.deepcopy(base).to(device)
    ours = copy.deepcopy(base).to(device, memory_format=torch.channels_last)
    opt = make_optimizer(ours, cfg)

    def timed(fn) -> float:
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        return len(data.train_idx) / best

    # Interleaved so both see the same machine state; a warm-up pass each first.
    plain_epoch(plain, loader, cfg.lr)
    train_one_epoch(ours, data, opt, cfg, 0, device)
    ref = timed(lambda: plain_epoch(plain, loader, cfg.lr))
    fast = timed(lambda: train_one_epoch(ours, data, opt, cfg, 1, device))
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{len(data.train_idx)} images of 3x{data.x.shape[-2]}x{data.x.shape[-1]}")
    print(f"plain loop (NCHW, batch 32): {ref:8.1f} images/s")
    print(f"dsc loop (batch {cfg.batch_size}, {'channels_last' if cfg.channels_last else 'NCHW'}): {fast:8.1f} images/s")
    print(f"ratio: {fast / ref:.2f}x")


if __name__ == "__main__":
    main()
