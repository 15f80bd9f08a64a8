"""The training loop: evaluate at epoch 0, train, evaluate after every epoch, report to a callback.

Knows nothing of MLflow: the tracking edge passes a callback that logs what it is given.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from dsc.core.scores import probe_metrics
from dsc.data.dataset import Prepared
from dsc.errors import ConfigError, Interrupted, TrainingDiverged
from dsc.settings import TrainConfig


@dataclass(frozen=True)
class EpochReport:
    """What one epoch leaves: scalar metrics named as MLflow shows them, and the live objects.

    ``optimizer`` is None where no training step ran (a snapshot recomputed from a checkpoint).
    """

    epoch: int
    metrics: dict[str, float]
    model: nn.Module
    optimizer: torch.optim.Optimizer | None


def pick_device(name: str = "auto") -> torch.device:
    """CUDA when present (for "auto"), else CPU; a named device that is absent is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available here; use --device auto or cpu")
    return dev


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam or SGD over the model's parameters, with torch's fused kernel where it has one.

    The fused kernel updates every parameter in one pass (same update rule as torch's default
    per-tensor loop, different rounding); on CPU it makes Adam a small share of a training
    step instead of a noticeable one. Call after the model is on its device.
    """
    params = list(model.parameters())
    fused = (bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)) or None
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=fused)


KEPT_BLOCK_BYTES = 32 << 20  # freed blocks up to this size are reused (keep_freed_memory)


@torch.no_grad()
def logits(model: nn.Module, data: Prepared, idx: np.ndarray, device: torch.device, cfg: TrainConfig) -> np.ndarray:
    """The model's outputs (len(idx), C), float32, in eval mode; restores the train flag.

    Where :func:`uses_conv3` holds, the passes run dsc's kernel on NCHW batches of up to
    ``cfg.eval_batch_size`` images, split so that one layer's maps stay within
    ``KEPT_BLOCK_BYTES``; otherwise they are sized by :func:`micro_batch_size`.
    """
    was_training = model.training
    model.eval()
    outs = []
    shape = tuple(data.x.shape[1:])
    fused = uses_conv3(model, cfg, device, shape, data.x.dtype)
    if fused and not cfg.micro_batch:
        # The kernel favours long passes, up to maps larger than the blocks glibc keeps for
        # reuse (keep_freed_memory), whose pages every pass would fault in anew.
        step = _pass_size(cfg.eval_batch_size, shape, KEPT_BLOCK_BYTES)
    else:
        step = micro_batch_size(cfg, shape, device, batch=cfg.eval_batch_size)
    channels_last = cfg.channels_last and not fused  # dsc.nn.conv3 reads and writes NCHW
    for start in range(0, len(idx), step):
        xb, _ = data.batch(idx[start : start + step], device, channels_last, expanded=fused)
        outs.append(model(xb).float().cpu())
    model.train(was_training)
    return torch.cat(outs).numpy() if outs else np.empty((0, len(data.classes)), dtype=np.float32)


def evaluate(
    model: nn.Module, data: Prepared, idx: np.ndarray, device: torch.device, cfg: TrainConfig
) -> tuple[float, float, np.ndarray]:
    """Mean loss, accuracy and predictions (len(idx),) in eval mode (:func:`logits`)."""
    out = logits(model, data, idx, device, cfg)
    labels = data.y[idx].numpy()
    if not len(idx):
        return 0.0, float("nan"), np.empty(0, dtype=np.int64)
    m = probe_metrics(out, labels, data.classes, split="")
    return m["loss/"], m["acc/"], out.argmax(1)


def epoch_metrics(
    model: nn.Module,
    data: Prepared,
    device: torch.device,
    cfg: TrainConfig,
    val_context: contextlib.AbstractContextManager | None = None,
) -> dict[str, float]:
    """``loss/train``, ``acc/train``, and the validation split's :func:`dsc.core.scores.probe_metrics`
    (``loss/val``, ``acc/val``, ``acc_class/<name>``, ``prob_class/<name>``).

    ``val_context`` is entered around the validation pass (activation capture rides on it).
    """
    tl, ta, *_ = evaluate(model, data, data.train_idx, device, cfg)
    with val_context or contextlib.nullcontext():
        val = logits(model, data, data.val_idx, device, cfg)
    return {"loss/train": tl, "acc/train": ta, **probe_metrics(val, data.y[data.val_idx].numpy(), data.classes)}


@functools.cache
def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed blocks of up to 32 MB for reuse; True if it took effect.

    PyTorch's CPU tensors come straight from malloc. A training step of DenseVGG allocates and
    frees a few dozen 6 MB activation and gradient buffers; by default glibc serves blocks this
    size with mmap or trims them off the heap when freed, and the kernel faults the pages back
    in, zero-filled, at the next step. Pinning the mmap and trim thresholds (``mallopt``, the
    same knobs as the ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` environment
    variables) lets the next step reuse them, which gives more images per second to dsc's loop
    and more still to a plain NCHW loop (``bench/train_throughput.py --keep-freed-memory``, see
    the benchmark page, docs/benchmarks.md).
    This is the no-dependency form of the caching allocator (jemalloc, tcmalloc) that
    PyTorch's CPU tuning guides recommend. Process-wide and idempotent; a no-op elsewhere
    than glibc. Peak memory is unchanged; freed memory stays with the process.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's <malloc.h>
    return bool(mallopt(m_mmap_threshold, KEPT_BLOCK_BYTES)) and bool(mallopt(m_trim_threshold, 1 << 30))


def flush_denormals() -> bool:
    """Flush subnormal float results and inputs to zero on this CPU thread (FTZ and DAZ); True if it took effect.

    Adam keeps a first moment per weight that decays by 0.9 a step once a weight's gradient
    dies away; it then spends many steps in float32's subnormal range (below 1.2e-38), where
    x86 arithmetic is up to a hundred times slower. In the default run many moments turn
    subnormal over the first epochs, and the optimizer's steps then take a growing share of
    each training epoch; with this set, later epochs take as long as early ones.
    Threads inherit the setting when they are created, so a training process sets it
    before its first parallel torch or numba loop (:func:`dsc.jobs.train.train_job`); GPUs
    are not affected. Flushing changes results only where a value would be subnormal,
    and the same way in a run and in its resumption.
    """
    return bool(torch.set_flush_denormal(True))


def _check_finite(loss: torch.Tensor, epoch: int, step: int, cfg: TrainConfig) -> None:
    if not torch.isfinite(loss):
        raise TrainingDiverged(
            f"loss became {float(loss.detach())} at epoch {epoch}, batch {step}: training diverged; "
            f"lower --lr (now {cfg.lr:g}) or switch --optimizer"
        )


MICRO_BATCH_BYTES = 4 << 20  # auto micro-batches keep one layer's input maps within this


def micro_batch_size(
    cfg: TrainConfig, image_shape: tuple[int, ...], device: torch.device, batch: int | None = None, conv3: bool = False
) -> int:
    """Images per forward/backward pass inside one optimizer step of ``cfg.batch_size`` images.

    A step sums the gradients of its micro-batches (each loss is summed and divided by the
    whole batch's size) before the update, so the update is the full batch's, up to float
    rounding, and dropout draws one mask per image as before. On CPU, ``micro_batch`` 0 (auto)
    splits the batch into the fewest equal parts whose input maps (3 x H x W float32 per image)
    fit in 4 MB: at 128x128 a batch of 32 runs as two passes of 16, whose maps stay in the
    CPU caches between the layers of a pass, which gives more images per second than one pass
    of 32. On CUDA, auto keeps the whole batch.

    ``batch`` (default ``cfg.batch_size``) sizes other passes by the same rule: evaluation
    with torch's convolutions splits its ``eval_batch_size`` batches of 256 into passes of 22
    at 128x128.

    ``conv3``: the passes' convolutions run through :mod:`dsc.nn.conv3` (DenseVGG training on
    CPU), whose fixed cost per call favours one pass: auto keeps the whole batch, which trains
    faster there than passes of 16 or 8 (the training passes of ``bench/epoch_throughput.py``
    on the benchmark page, docs/benchmarks.md).
    """
    batch = cfg.batch_size if batch is None else batch
    if cfg.micro_batch:
        return min(cfg.micro_batch, batch)
    if device.type != "cpu" or conv3:
        return batch
    return _pass_size(batch, image_shape, MICRO_BATCH_BYTES)


def _pass_size(batch: int, image_shape: tuple[int, ...], limit_bytes: int) -> int:
    """Images per pass of ``batch`` split into the fewest equal parts whose input maps
    (3 x H x W float32 per image, for ``image_shape`` (C, H, W)) fit in ``limit_bytes``."""
    channels = 3 if image_shape[0] == 1 else image_shape[0]  # grey is replicated to 3
    per_image = channels * int(np.prod(image_shape[1:])) * 4
    parts = max(1, math.ceil(batch * per_image / limit_bytes))
    return math.ceil(batch / parts)


def uses_conv3(
    model: nn.Module,
    cfg: TrainConfig,
    device: torch.device,
    image_shape: tuple[int, ...],
    dtype: torch.dtype = torch.float32,
) -> bool:
    """Whether ``model``'s training passes run its convs through :mod:`dsc.nn.conv3`.

    Applies ``cfg.conv_kernel`` to a model that has the choice (DenseVGG); others: False.
    ``image_shape`` (C, H, W) is the input's; "auto" decides by its pixel count.
    """
    if not hasattr(model, "uses_conv3"):
        return False
    chooser: Any = model  # DenseVGG, or any model with its conv_kernel and uses_conv3
    chooser.conv_kernel = cfg.conv_kernel
    return chooser.uses_conv3(device, dtype, int(np.prod(image_shape[1:])))


def _stop_if_asked(stop: Callable[[], bool] | None, epoch: int) -> None:
    """Raise :class:`Interrupted` (``epoch``: the first epoch left incomplete) when ``stop()`` says so."""
    if stop is not None and stop():
        raise Interrupted(f"training stopped before epoch {epoch} was complete", epoch)


def steps_per_epoch(cfg: TrainConfig, n_train: int) -> int:
    """Optimizer steps in one full pass over ``n_train`` training images."""
    return math.ceil(n_train / cfg.batch_size)


def epochs_to_train(cfg: TrainConfig, n_train: int) -> int:
    """``cfg.epochs``, or with ``cfg.steps`` the epochs that hold that many steps (the last may be partial)."""
    if not cfg.steps:
        return cfg.epochs
    return math.ceil(cfg.steps / max(steps_per_epoch(cfg, n_train), 1))


def steps_after(cfg: TrainConfig, n_train: int, epoch: int) -> int:
    """Optimizer steps taken by the end of ``epoch`` (0 at epoch 0), within ``cfg.steps`` if set."""
    done = epoch * steps_per_epoch(cfg, n_train)
    return min(done, cfg.steps) if cfg.steps else done


def train_one_epoch(
    model: nn.Module,
    data: Prepared,
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    epoch: int,
    device: torch.device,
    progress: bool = False,
    stop: Callable[[], bool] | None = None,
) -> None:
    """One pass over the training split in a batch order fixed by (seed, epoch).

    With ``cfg.steps`` the pass ends once the run's step budget is spent (a partial last
    epoch: its first batches in the same order as a full one).
    ``stop()`` is asked after every optimizer step; when it answers True the pass ends there
    with :class:`Interrupted` (the epoch's partial updates are then to be discarded: a resumed
    run repeats the epoch from its checkpoint).
    """
    model.train()
    n_train = len(data.train_idx)
    gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
    order = torch.from_numpy(data.train_idx)[torch.randperm(n_train, generator=gen)]
    budget = steps_after(cfg, n_train, epoch) - steps_after(cfg, n_train, epoch - 1)
    batches = tqdm(
        range(0, budget * cfg.batch_size, cfg.batch_size),
        desc=f"epoch {epoch}",
        unit="batch",
        leave=False,
        disable=not progress,
    )
    fused = uses_conv3(model, cfg, device, tuple(data.x.shape[1:]), data.x.dtype)
    chunk = micro_batch_size(cfg, tuple(data.x.shape[1:]), device, conv3=fused)
    channels_last = cfg.channels_last and not fused  # dsc.nn.conv3 reads and writes NCHW
    for step, start in enumerate(batches):
        idx = order[start : start + cfg.batch_size]
        optimizer.zero_grad(set_to_none=True)
        for part in idx.split(chunk):
            xb, yb = data.batch(part, device, channels_last, expanded=fused)
            loss = nn.functional.cross_entropy(model(xb), yb, reduction="sum") / len(idx)
            _check_finite(loss, epoch, step, cfg)
            loss.backward()
        optimizer.step()
        _stop_if_asked(stop, epoch)


def train(
    model: nn.Module,
    data: Prepared,
    cfg: TrainConfig,
    on_epoch: Callable[[EpochReport], None] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    start_epoch: int = 0,
    progress: bool = True,
    val_context: Callable[[int], contextlib.AbstractContextManager] | None = None,
    optimizer_state: dict | None = None,
    stop: Callable[[], bool] | None = None,
) -> nn.Module:
    """Train ``model`` in place for E epochs, calling ``on_epoch`` at 0, 1, ..., E.

    E is ``cfg.epochs``, or with ``cfg.steps`` :func:`epochs_to_train`. Every report carries
    ``train/steps``, the optimizer steps taken so far.

    ``val_context(epoch)``, if given, wraps each epoch's validation pass. ``stop()``, if given,
    is asked after every optimizer step and every report: True ends training there with
    :class:`Interrupted`, whose ``epoch`` is the first one not reported.
    ``start_epoch`` > 0 continues from a checkpoint: the model's weights restored, the
    optimizer's state given as ``optimizer_state`` (loaded once the model is on its device) and
    torch's generators reset by the caller. The batch order of each epoch depends only on
    (seed, epoch), so a continued run matches an uninterrupted one.
    """
    device = pick_device(cfg.device)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=fmt)  # type: ignore[call-overload]  # torch's stubs lack memory_format
    optimizer = optimizer or make_optimizer(model, cfg)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    report = on_epoch or (lambda r: None)
    context = val_context or (lambda epoch: contextlib.nullcontext())
    n_train, last = len(data.train_idx), epochs_to_train(cfg, len(data.train_idx))
    if start_epoch == 0:
        _stop_if_asked(stop, 0)
        metrics = epoch_metrics(model, data, device, cfg, context(0)) | {"train/steps": 0.0}
        report(EpochReport(0, metrics, model, optimizer))
    epochs = tqdm(
        range(start_epoch + 1, last + 1),
        desc="epochs",
        unit="ep",
        disable=not progress,
        initial=start_epoch,
        total=last,
    )
    for epoch in epochs:
        _stop_if_asked(stop, epoch)
        train_one_epoch(model, data, optimizer, cfg, epoch, device, progress, stop)
        metrics = epoch_metrics(model, data, device, cfg, context(epoch))
        metrics["train/steps"] = float(steps_after(cfg, n_train, epoch))
        if not all(math.isfinite(metrics[k]) for k in ("loss/train", "loss/val")):
            raise TrainingDiverged(
                f"loss became non-finite after epoch {epoch} (train {metrics['loss/train']}, "
                f"val {metrics['loss/val']}): lower --lr (now {cfg.lr:g})"
            )
        epochs.set_postfix(acc_val=f"{metrics['acc/val']:.3f}", loss=f"{metrics['loss/train']:.3f}")
        report(EpochReport(epoch, metrics, model, optimizer))
    return model
