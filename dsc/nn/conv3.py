"""The paper's layer on CPU for torch: 3->3 channel 3x3 convolutions (padding 1) with their ReLU.

oneDNN, which torch calls for CPU convolutions, vectorises over channels, and with 3 its
vector lanes idle; :mod:`dsc.nn.conv3_kernels` vectorises over the image width instead, on
zero-padded maps, image by image. This module wraps those kernels for torch:

- :func:`conv3x3_relu`, one layer, differentiable (the stack below, of one layer), matching
  ``torch.relu(nn.functional.conv2d(x, w, b, padding=1))`` in values and gradients for
  float32 and float64; :func:`conv3x3_relu_forward`, its values without a graph;
- :func:`conv3x3_relu_stack`, L layers in one call, each image through all of them (and
  through the adaptive average pooling after them) while its maps are in cache:
  differentiable (DenseVGG's training passes, forward and backward), or without a graph
  (evaluation), where it can also tap every layer's pooled map (activation capture).

:func:`supports` says when they apply.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from types import SimpleNamespace
from typing import ClassVar, overload

import numpy as np
import torch
from torch import nn

from dsc.nn import conv3_kernels as kernels

# numba is a dependency, imported on first use (once per process, not cheap); without it (an odd
# install) DenseVGG keeps torch's convolution.
HAVE_NUMBA = importlib.util.find_spec("numba") is not None

# Below this many pixels per map the fully connected layers dominate a DenseVGG step and torch's
# convolutions are as fast (the design notes of the benchmark page, docs/benchmarks.md), so
# "auto" leaves small images to torch and saves the kernels' start-up (importing numba and
# loading the compiled code, once a process).
MIN_PIXELS = 64 * 64


def supports(conv: nn.Conv2d, device: torch.device, dtype: torch.dtype = torch.float32) -> bool:
    """Whether :func:`conv3x3_relu` computes ``relu(conv(x))`` for this layer on inputs of
    ``dtype`` on ``device``: CPU, float32 or float64, 3 -> 3 channels, 3x3, stride 1, padding 1."""
    return (
        HAVE_NUMBA
        and device.type == "cpu"
        and conv.weight.device.type == "cpu"
        and dtype in (torch.float32, torch.float64)
        and conv.weight.dtype == dtype
        and conv.in_channels == 3
        and conv.out_channels == 3
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.padding == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and conv.bias is not None
    )


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


def _threads() -> SimpleNamespace:
    """The kernels, set to run on as many threads as torch uses here."""
    k = kernels.compiled()
    k.numba.set_num_threads(max(1, min(torch.get_num_threads(), k.numba.config.NUMBA_NUM_THREADS)))
    return k


def _sum_parts(part: np.ndarray) -> torch.Tensor:
    """The batch's gradient from the per-image sums: a fixed order over images, so deterministic."""
    return torch.from_numpy(part.sum(0))


def pool_windows(size: int, out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Adaptive average pooling's windows along one axis of ``size`` pixels into ``out`` cells.

    Returns (start, end, first, last): cell i averages pixels start[i] .. end[i] - 1 (floor(i
    size / out) .. ceil((i + 1) size / out) - 1, as ``nn.AdaptiveAvgPool2d``), and pixel p lies
    in cells first[p] .. last[p] - 1. int64 arrays.
    """
    i = np.arange(out, dtype=np.int64)
    start = (i * size) // out
    end = -((-(i + 1) * size) // out)
    p = np.arange(size, dtype=np.int64)
    return start, end, np.searchsorted(end, p, side="right"), np.searchsorted(start, p, side="right")


def _windows(shape: tuple[int, int], pool: tuple[int, int] | None) -> tuple[np.ndarray, ...]:
    """The kernels' pooling argument for maps of ``shape`` (H, W): (row starts, row ends, column
    starts, column ends, each row's first and last + 1 window row), six index arrays, empty for none."""
    if pool is None:
        return tuple(np.empty(0, np.int64) for _ in range(6))
    ys, ye, ilo, ihi = pool_windows(shape[0], pool[0])
    xs, xe, _, _ = pool_windows(shape[1], pool[1])
    return ys, ye, xs, xe, ilo, ihi


class _Lease:
    """A workspace tensor lent to one autograd graph, back in the free list when the graph is freed.

    The maps a training pass keeps for its backward pass (six of 3 x 130 x 130 float32 per
    image, 39 MB for a batch of 32) are larger than the blocks glibc's malloc recycles (at
    most 32 MB, ``dsc.nn.train.keep_freed_memory``): allocated anew, their pages would be
    faulted in, zero-filled, at every step, a large share of the step. The free list keeps two
    per shape: the graph of step k is still alive while step k + 1 runs its forward pass.
    Returned only when the graph lets go of it (so ``retain_graph`` stays safe).
    """

    KEEP = 2
    _free: ClassVar[dict[tuple, list[torch.Tensor]]] = {}  # one free list for every lease

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        self.key = (tuple(shape), dtype)
        try:
            self.tensor = self._free.get(self.key, []).pop()
        except IndexError:  # none free (or another thread took the last one)
            self.tensor = torch.empty(shape, dtype=dtype)

    def __del__(self) -> None:
        free = self._free.setdefault(self.key, [])
        if len(free) < self.KEEP:
            free.append(self.tensor)


class _Conv3x3ReLUStack(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weights, biases, pool):
        x = _kernel_input(x)
        n, _, h, wd = x.shape
        w, b = weights.detach().contiguous(), biases.detach().contiguous()
        win = _windows((h, wd), pool)
        # Each layer's padded input, and when pooling the last layer's padded output after them.
        ctx.maps = _Lease((n, w.shape[0] + (pool is not None), 3, h + 2, wd + 2), x.dtype)
        y = x.new_empty((n, 3, *(pool or (h, wd))))
        _threads().conv_stack(_np(x), _np(w), _np(b), _np(y), _np(ctx.maps.tensor), True, win, *_no_taps(_np(x).dtype))
        ctx.win = win
        ctx.save_for_backward(w, y)
        return y

    @staticmethod
    def backward(ctx, gy):
        w, y = ctx.saved_tensors
        maps = ctx.maps.tensor
        n, depth, dtype = y.shape[0], w.shape[0], _np(y).dtype
        h, wd = maps.shape[-2] - 2, maps.shape[-1] - 2
        gx = y.new_empty((n, 3, h, wd)) if ctx.needs_input_grad[0] else None
        gw, gb = np.empty((n, depth, 3, 3, 3, 3), dtype), np.empty((n, depth, 3), dtype)
        unused = np.empty((1, 3, 1, 1), dtype)
        _threads().stack_backward(
            _np(gy.contiguous()),
            _np(maps),
            _np(y),
            _np(w),
            _np(gx) if gx is not None else unused,
            gx is not None,
            gw,
            gb,
            ctx.win,
        )
        return gx, _sum_parts(gw), _sum_parts(gb), None


def conv3x3_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``relu(conv2d(x, weight, bias, padding=1))`` for x (N, 3, H, W), weight (3, 3, 3, 3).

    CPU, float32 or float64; the result is NCHW-contiguous whatever x's memory format.
    Differentiable: :func:`conv3x3_relu_stack` of one layer.
    """
    return conv3x3_relu_stack(x, [weight], [bias])


def conv3x3_relu_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The values of :func:`conv3x3_relu` without an autograd graph, for passes under ``no_grad``.

    x (N, 3, H, W), weight (3, 3, 3, 3), bias (3,); returns (N, 3, H, W), NCHW-contiguous. The
    same arithmetic as :func:`conv3x3_relu`'s forward, bit for bit; nothing is kept for a
    backward pass.
    """
    return _stack_values(x, weight.detach().unsqueeze(0), bias.detach().unsqueeze(0), None, None)[0]


def _replicated(x: torch.Tensor) -> bool:
    """Whether x (N, 3, H, W) is one channel expanded to three (channel stride 0, as grey images are)."""
    return x.dim() == 4 and x.shape[1] == 3 and x.stride(1) == 0


def _kernel_input(x: torch.Tensor) -> torch.Tensor:
    """x as the kernels read it: NCHW-contiguous, or its one channel (N, 1, H, W) where it is replicated."""
    # select + unsqueeze: x[:, :1] would keep the channel stride 0, which numba misreads
    return x.select(1, 0).contiguous().unsqueeze(1) if _replicated(x) else x.contiguous()


def _no_taps(dtype: np.dtype) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """The kernels' taps arguments when no layer's map is to be tapped: a one-image placeholder
    (which also stands for the kept maps of a pass without a graph) and no windows."""
    return np.empty((1, 1, 3, 1, 1), dtype), _windows((0, 0), None)


@overload
def conv3x3_relu_stack(
    x: torch.Tensor,
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor],
    pool: tuple[int, int] | None = None,
    taps: None = None,
) -> torch.Tensor:
    """Without ``taps``: the output maps alone."""


@overload
def conv3x3_relu_stack(
    x: torch.Tensor,
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor],
    pool: tuple[int, int] | None = None,
    *,
    taps: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """With ``taps``: the output maps and every layer's tapped maps."""


def conv3x3_relu_stack(
    x: torch.Tensor,
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor],
    pool: tuple[int, int] | None = None,
    taps: tuple[int, int] | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """:func:`conv3x3_relu` through L layers in turn, each image through all of them at once.

    x (N, 3, H, W); ``weights`` L tensors (3, 3, 3, 3) and ``biases`` L tensors (3,), in layer
    order; returns (N, 3, H, W), NCHW-contiguous, equal bit for bit to L calls of
    :func:`conv3x3_relu_forward`. No inner map leaves the kernel. ``pool`` (OH, OW): the last
    map is average-pooled as ``nn.AdaptiveAvgPool2d((OH, OW))`` does (to float rounding) before
    it leaves, and the result is (N, 3, OH, OW).

    ``taps`` (TH, TW), in passes without gradients only: every layer's map is also pooled so
    (activation capture without a round trip of each map through memory), and the result is
    (output, taps (N, L, 3, TH, TW)); (H, W) taps the maps whole.

    Differentiable where grad mode is on and an input requires it: the forward pass then keeps
    each layer's input for the backward pass, which runs image by image through all layers too
    (the pooling's gradient, the ReLU masks, the data gradient and the weight and bias sums
    from one read of each map); the gradients match torch's layers to float rounding.
    Otherwise no autograd graph.
    """
    w = torch.stack(list(weights))  # (L, 3, 3, 3, 3)
    b = torch.stack(list(biases))  # (L, 3)
    pool = None if pool is None else (int(pool[0]), int(pool[1]))
    if not _replicated(x) and x.shape[1] != 3:
        raise ValueError(f"conv3x3_relu_stack: x must have 3 channels, got shape {tuple(x.shape)}")
    if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad or b.requires_grad):
        if taps is not None:
            raise ValueError("conv3x3_relu_stack: taps are for passes without gradients (torch.no_grad)")
        return _Conv3x3ReLUStack.apply(x, w, b, pool)
    y, tapped = _stack_values(x, w, b, pool, taps)
    return y if tapped is None else (y, tapped)


def _stack_values(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, pool: tuple[int, int] | None, taps: tuple[int, int] | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`conv3x3_relu_stack` without an autograd graph, w (L, 3, 3, 3, 3) and b (L, 3): the
    output and the tapped maps (None without ``taps``)."""
    x = _kernel_input(x.detach())
    y = x.new_empty((x.shape[0], 3, *(pool or x.shape[-2:])))
    unused, twin = _no_taps(_np(x).dtype)
    tapped = None
    if taps is not None:
        taps = (int(taps[0]), int(taps[1]))
        tapped = x.new_empty((x.shape[0], w.shape[0], 3, *taps))
        twin = _windows((x.shape[-2], x.shape[-1]), taps)
    _threads().conv_stack(
        _np(x),
        _np(w.detach().contiguous()),
        _np(b.detach().contiguous()),
        _np(y),
        unused,
        False,
        _windows((x.shape[-2], x.shape[-1]), pool),
        unused if tapped is None else _np(tapped),
        twin,
    )
    return y, tapped
