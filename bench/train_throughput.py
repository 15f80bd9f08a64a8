"""Training throughput: dsc's loop against a plain PyTorch loop, same model, data and process.

The plain loop is what a first script would do: NCHW float32 tensors, a DataLoader with
batch 32, the same network built from torch's stock layers (``StockVGG``), no
memory-format or threading tricks, and the same optimizer as ours (the project default, Adam
at lr 1e-4, in torch's default implementation), so that the two differ only in how the loop
runs. Ours is ``dsc.nn.train.train_one_epoch`` with the project defaults: the convolutions
and the pooling after them through ``dsc.nn.conv3`` (one kernel call per pass of 32, forward
and backward) and fused Adam. Both start from the same weights. The arms
alternate in short rounds (``--round`` images each) and the medians are compared, which
cancels the slow drift of a shared machine. Prints images per second of each and their ratio.

    uv run python bench/train_throughput.py [--round 128] [--rounds 12] [--keep-freed-memory]

``--keep-freed-memory`` first applies ``dsc.nn.train.keep_freed_memory`` (what ``dsc train`` does
at start-up: glibc keeps freed blocks for reuse). It is process-wide, so both arms run under it.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections import OrderedDict

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dsc.data.dataset import load_imageset, prepare
from dsc.nn.model import DenseVGG
from dsc.nn.train import (
    keep_freed_memory,
    make_optimizer,
    micro_batch_size,
    pick_device,
    train_one_epoch,
    uses_conv3,
)
from dsc.settings import DataConfig, TrainConfig


class StockVGG(nn.Module):
    """DenseVGG's layers, names and forward, built only from torch's stock modules."""

    def __init__(self, like: DenseVGG) -> None:
        super().__init__()
        self.features = nn.Sequential(
            OrderedDict(
                (
                    name,
                    nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, padding=m.padding)
                    if isinstance(m, nn.Conv2d)
                    else nn.ReLU(inplace=True),
                )
                for name, m in like.features.named_children()
            )
        )
        self.pool = nn.AdaptiveAvgPool2d(like.pool.output_size)
        self.fc1 = nn.Linear(like.fc1.in_features, like.fc1.out_features)
        self.drop1 = nn.Dropout(like.drop1.p)
        self.fc2 = nn.Linear(like.fc2.in_features, like.fc2.out_features)
        self.drop2 = nn.Dropout(like.drop2.p)
        self.out = nn.Linear(like.out.in_features, like.out.out_features)
        self.load_state_dict(like.state_dict())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.pool(self.features(x)), 1)
        x = self.drop1(torch.relu(self.fc1(x)))
        x = self.drop2(torch.relu(self.fc2(x)))
        return self.out(x)


def plain_epoch(model: nn.Module, loader: DataLoader, opt: torch.optim.Optimizer) -> None:
    model.train()
    for xb, yb in loader:
        loss = nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--round", type=int, default=128, help="training images per timed round of each arm")
    ap.add_argument("--rounds", type=int, default=12, help="alternating rounds (medians compared)")
    ap.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="apply dsc train's allocator setting first (to both arms: it is process-wide)",
    )
    args = ap.parse_args()
    if args.keep_freed_memory and not keep_freed_memory():
        raise SystemExit("--keep-freed-memory: this C library has no mallopt (not glibc)")

    data = prepare(load_imageset(DataConfig()), DataConfig())
    data.train_idx = data.train_idx[: args.round]
    cfg = TrainConfig()
    device = pick_device(cfg.device)
    torch.manual_seed(0)
    base = DenseVGG(num_classes=len(data.classes))

    # The plain reference: NCHW float32, 3 channels materialised, DataLoader batch 32.
    x3 = data.x[data.train_idx].expand(-1, 3, -1, -1).contiguous()
    loader = DataLoader(TensorDataset(x3, data.y[data.train_idx]), batch_size=32, shuffle=True)
    plain = StockVGG(base).to(device)  # the same network and weights in torch's stock layers
    plain_opt = torch.optim.Adam(plain.parameters(), lr=cfg.lr)  # torch's defaults
    ours = copy.deepcopy(base).to(device, memory_format=torch.channels_last)
    opt = make_optimizer(ours, cfg)

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    plain_epoch(plain, loader, plain_opt)  # warm-up: allocator, thread pools, kernels
    train_one_epoch(ours, data, opt, cfg, 0, device)
    t_plain, t_ours = [], []
    for r in range(args.rounds):
        t_plain.append(timed(lambda: plain_epoch(plain, loader, plain_opt)))
        t_ours.append(timed(lambda r=r: train_one_epoch(ours, data, opt, cfg, r + 1, device)))
    ref, fast = args.round / statistics.median(t_plain), args.round / statistics.median(t_ours)
    print(
        f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"allocator {'keeps freed blocks' if args.keep_freed_memory else 'glibc defaults'}, "
        f"{args.rounds} rounds of {args.round} images of 3x{data.x.shape[-2]}x{data.x.shape[-1]} per arm"
    )
    print(f"plain loop (NCHW, DataLoader, batch 32, {cfg.optimizer}): {ref:8.1f} images/s (median round)")
    fused = uses_conv3(ours, cfg, device, tuple(data.x.shape[1:]))
    micro = micro_batch_size(cfg, tuple(data.x.shape[1:]), device, conv3=fused)
    print(
        f"dsc loop (batch {cfg.batch_size} in passes of {micro}, "
        f"{'dsc.nn.conv3 convolutions' if fused else 'channels_last' if cfg.channels_last else 'NCHW'}, "
        f"fused {cfg.optimizer}): "
        f"{fast:8.1f} images/s (median round)"
    )
    print(
        f"ratio: {fast / ref:.2f}x   (per-round ratios {min(p / o for p, o in zip(t_plain, t_ours)):.2f}"
        f"..{max(p / o for p, o in zip(t_plain, t_ours)):.2f})"
    )


if __name__ == "__main__":
    main()
