"""A CPU kernel for the paper's layer: a 3->3 channel 3x3 convolution (padding 1) and its ReLU.

oneDNN, which torch calls for CPU convolutions, vectorises over channels; with 3 channels its
vector lanes are mostly idle, and these five layers took 65% of a DenseVGG training step. The
kernels here vectorise over the image width instead (a row of 128 pixels fills AVX-512 lanes)
and compute the three output channels from one read of each input row; the ReLU is fused
into the forward pass and into the backward pass's mask. They are compiled by numba on first
use (cached on disk) and run over the batch on as many threads as torch uses.

:func:`conv3x3_relu` is differentiable (a ``torch.autograd.Function``) and matches
``torch.relu(nn.functional.conv2d(x, w, b, padding=1))`` in values and gradients, for float32
and float64 on CPU; :func:`supports` says when it applies. DenseVGG uses it in training mode,
and :func:`conv3x3_relu_forward` (the same values, no autograd graph) or
:func:`conv3x3_relu_stack` (all layers per image in one call) in passes without gradients:
evaluation and activation capture.
"""
from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

# numba is a dependency, imported on first use (a second per process); without it (an odd
# install) DenseVGG keeps torch's convolution.
HAVE_NUMBA = importlib.util.find_spec("numba") is not None

# Reassociation and contraction let LLVM vectorise the row sums and use FMA; no "nnan"/"ninf",
# so a NaN or infinity (a diverging run) propagates exactly as through torch's kernels.
_FAST = {"reassoc", "contract", "nsz", "arcp"}


@functools.cache
def _kernels() -> SimpleNamespace:
    """The compiled kernels (numba, on first use; cached on disk beside this file)."""
    import numba

    globals()["prange"] = numba.prange  # the kernels' loops over images become parallel loops
    options = {"fastmath": _FAST, "cache": True, "nogil": True, "boundscheck": False}
    # The loops over images compile against the module's _conv_image: its compiled form.
    globals()["_conv_image"] = numba.njit(**options)(_conv_image)
    jit = numba.njit(parallel=True, **options)
    return SimpleNamespace(numba=numba, conv_rows=jit(_conv_rows), conv_stack=jit(_conv_stack),
                           weight_grad=jit(_weight_grad))


prange = range  # replaced by numba.prange when the kernels are compiled (see _kernels)


def _conv_image(x, w, b, out, relu):  # pragma: no cover - compiled
    """out = (relu)(conv2d(x, w, b, padding=1)) of one image: x, out (3, H, W) of 3 channels."""
    _, h, wd = x.shape
    a0 = np.empty(wd, x.dtype)
    a1 = np.empty(wd, x.dtype)
    a2 = np.empty(wd, x.dtype)
    blank = np.zeros(wd, x.dtype)  # the zero padding above the first and below the last row
    for y in range(h):
        a0[:] = b[0]
        a1[:] = b[1]
        a2[:] = b[2]
        for ci in range(3):
            # The three rows under the kernel and the 27 weights that read them (k: out
            # channel, dy, dx); each pass over the row does 27 multiply-adds per column.
            p = x[ci, y - 1] if y > 0 else blank
            q = x[ci, y]
            r = x[ci, y + 1] if y + 1 < h else blank
            k000, k001, k002 = w[0, ci, 0, 0], w[0, ci, 0, 1], w[0, ci, 0, 2]
            k010, k011, k012 = w[0, ci, 1, 0], w[0, ci, 1, 1], w[0, ci, 1, 2]
            k020, k021, k022 = w[0, ci, 2, 0], w[0, ci, 2, 1], w[0, ci, 2, 2]
            k100, k101, k102 = w[1, ci, 0, 0], w[1, ci, 0, 1], w[1, ci, 0, 2]
            k110, k111, k112 = w[1, ci, 1, 0], w[1, ci, 1, 1], w[1, ci, 1, 2]
            k120, k121, k122 = w[1, ci, 2, 0], w[1, ci, 2, 1], w[1, ci, 2, 2]
            k200, k201, k202 = w[2, ci, 0, 0], w[2, ci, 0, 1], w[2, ci, 0, 2]
            k210, k211, k212 = w[2, ci, 1, 0], w[2, ci, 1, 1], w[2, ci, 1, 2]
            k220, k221, k222 = w[2, ci, 2, 0], w[2, ci, 2, 1], w[2, ci, 2, 2]
            for i in range(1, wd - 1):  # interior columns: all three taps
                p0, p1, p2 = p[i - 1], p[i], p[i + 1]
                q0, q1, q2 = q[i - 1], q[i], q[i + 1]
                r0, r1, r2 = r[i - 1], r[i], r[i + 1]
                a0[i] += (k000 * p0 + k001 * p1 + k002 * p2 + k010 * q0 + k011 * q1 + k012 * q2
                          + k020 * r0 + k021 * r1 + k022 * r2)
                a1[i] += (k100 * p0 + k101 * p1 + k102 * p2 + k110 * q0 + k111 * q1 + k112 * q2
                          + k120 * r0 + k121 * r1 + k122 * r2)
                a2[i] += (k200 * p0 + k201 * p1 + k202 * p2 + k210 * q0 + k211 * q1 + k212 * q2
                          + k220 * r0 + k221 * r1 + k222 * r2)
            for i in range(0, wd, max(wd - 1, 1)):  # border columns 0 and wd - 1: taps inside
                for dx in range(3):
                    j = i + dx - 1
                    if 0 <= j < wd:
                        a0[i] += w[0, ci, 0, dx] * p[j] + w[0, ci, 1, dx] * q[j] + w[0, ci, 2, dx] * r[j]
                        a1[i] += w[1, ci, 0, dx] * p[j] + w[1, ci, 1, dx] * q[j] + w[1, ci, 2, dx] * r[j]
                        a2[i] += w[2, ci, 0, dx] * p[j] + w[2, ci, 1, dx] * q[j] + w[2, ci, 2, dx] * r[j]
        o0, o1, o2 = out[0, y], out[1, y], out[2, y]
        if relu:
            for i in range(wd):  # "v < 0" (not "v <= 0", not max): NaN passes as in torch
                o0[i] = 0 if a0[i] < 0 else a0[i]
                o1[i] = 0 if a1[i] < 0 else a1[i]
                o2[i] = 0 if a2[i] < 0 else a2[i]
        else:
            o0[:] = a0
            o1[:] = a1
            o2[:] = a2


def _conv_rows(x, w, b, out, relu):  # pragma: no cover - compiled
    """out[n] = (relu)(conv2d(x[n], w, b, padding=1)) for 3 input and 3 output channels."""
    for n in prange(x.shape[0]):
        _conv_image(x[n], w, b, out[n], relu)


def _conv_stack(x, w, b, out):  # pragma: no cover - compiled
    """out[n] = x[n] through L layers relu(conv2d(., w[l], b[l], padding=1)); w (L, 3, 3, 3, 3), b (L, 3).

    One image goes through every layer before the next starts: its inner maps (two of
    3 x H x W, reused) stay in the core's cache instead of making a round trip through memory
    per layer, as a call per layer over the batch makes them.
    """
    n_img, _, h, wd = x.shape
    depth = w.shape[0]
    for n in prange(n_img):
        maps = np.empty((2, 3, h, wd), x.dtype)
        src = x[n]
        for layer in range(depth):
            dst = out[n] if layer == depth - 1 else maps[layer % 2]
            _conv_image(src, w[layer], b[layer], dst, True)
            src = dst


def _weight_grad(g, x, part):  # pragma: no cover - compiled
    """part[n, co, ci, dy, dx] = sum_{y, i} g[n, co, y, i] * x[n, ci, y + dy - 1, i + dx - 1]."""
    n_img, _, h, wd = x.shape
    for n in prange(n_img):
        acc = np.zeros((3, 3, 3, 3), part.dtype)
        zero = acc[0, 0, 0, 0]  # a zero of the array's type (a literal 0.0 would be float64)
        for y in range(h):
            g0, g1, g2 = g[n, 0, y], g[n, 1, y], g[n, 2, y]
            for ci in range(3):
                for dy in range(3):
                    yy = y + dy - 1
                    if yy < 0 or yy >= h:
                        continue
                    row = x[n, ci, yy]
                    # Nine sums (output channel x horizontal tap) from one pass over the row.
                    t00 = t01 = t02 = t10 = t11 = t12 = t20 = t21 = t22 = zero
                    for i in range(1, wd - 1):
                        r0, r1, r2 = row[i - 1], row[i], row[i + 1]
                        a, b, c = g0[i], g1[i], g2[i]
                        t00 += a * r0
                        t01 += a * r1
                        t02 += a * r2
                        t10 += b * r0
                        t11 += b * r1
                        t12 += b * r2
                        t20 += c * r0
                        t21 += c * r1
                        t22 += c * r2
                    t01 += g0[0] * row[0]  # column 0 has no left neighbour
                    t11 += g1[0] * row[0]
                    t21 += g2[0] * row[0]
                    if wd > 1:
                        t02 += g0[0] * row[1]
                        t12 += g1[0] * row[1]
                        t22 += g2[0] * row[1]
                        e = wd - 1  # the last column has no right neighbour
                        t00 += g0[e] * row[e - 1]
                        t01 += g0[e] * row[e]
                        t10 += g1[e] * row[e - 1]
                        t11 += g1[e] * row[e]
                        t20 += g2[e] * row[e - 1]
                        t21 += g2[e] * row[e]
                    acc[0, ci, dy, 0] += t00
                    acc[0, ci, dy, 1] += t01
                    acc[0, ci, dy, 2] += t02
                    acc[1, ci, dy, 0] += t10
                    acc[1, ci, dy, 1] += t11
                    acc[1, ci, dy, 2] += t12
                    acc[2, ci, dy, 0] += t20
                    acc[2, ci, dy, 1] += t21
                    acc[2, ci, dy, 2] += t22
        part[n] = acc


# Below this many pixels per map the fully connected layers dominate a DenseVGG step and torch's
# convolutions are as fast (training images/s against torch's, 2 cores: 1.02x at 16x16, 0.98x
# at 32x32, 1.11x at 64x64, 1.41x at 128x128), so "auto" leaves small images to torch and saves
# the kernels' start-up (importing numba and loading the compiled code: about 2 s a process).
MIN_PIXELS = 64 * 64


def supports(conv: nn.Conv2d, device: torch.device, dtype: torch.dtype = torch.float32) -> bool:
    """Whether :func:`conv3x3_relu` computes ``relu(conv(x))`` for this layer on inputs of
    ``dtype`` on ``device``: CPU, float32 or float64, 3 -> 3 channels, 3x3, stride 1, padding 1."""
    return (HAVE_NUMBA and device.type == "cpu" and conv.weight.device.type == "cpu"
            and dtype in (torch.float32, torch.float64) and conv.weight.dtype == dtype
            and conv.in_channels == 3 and conv.out_channels == 3 and conv.kernel_size == (3, 3)
            and conv.stride == (1, 1) and conv.padding == (1, 1) and conv.dilation == (1, 1)
            and conv.groups == 1 and conv.padding_mode == "zeros" and conv.bias is not None)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


def _threads() -> SimpleNamespace:
    """The kernels, set to run on as many threads as torch uses here."""
    k = _kernels()
    k.numba.set_num_threads(max(1, min(torch.get_num_threads(), k.numba.config.NUMBA_NUM_THREADS)))
    return k


def _forward(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """relu(conv2d(x, w, bias, padding=1)) of NCHW-contiguous x (N, 3, H, W) and w (3, 3, 3, 3)."""
    y = torch.empty_like(x)
    _threads().conv_rows(_np(x), _np(w), _np(bias), _np(y), True)
    return y


class _Conv3x3ReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        x = x.contiguous()
        w = weight.detach().contiguous()
        y = _forward(x, w, bias)
        ctx.save_for_backward(x, w, y)
        return y

    @staticmethod
    def backward(ctx, gy):
        x, w, y = ctx.saved_tensors
        k = _threads()
        g = torch.ops.aten.threshold_backward(gy, y, 0).contiguous()  # the ReLU's mask, as torch's
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            # The data gradient is the same convolution of g with the kernel flipped in space and
            # with input and output channels swapped (and no bias).
            wt = w.transpose(0, 1).flip(2, 3).contiguous()
            gx = torch.empty_like(x)
            k.conv_rows(_np(g), _np(wt), np.zeros(3, _np(wt).dtype), _np(gx), False)
        if ctx.needs_input_grad[1]:
            part = np.empty((x.shape[0], 3, 3, 3, 3), _np(x).dtype)
            k.weight_grad(_np(g), _np(x), part)
            gw = torch.from_numpy(part.sum(0))  # a fixed order over images: deterministic
        if ctx.needs_input_grad[2]:
            gb = g.sum((0, 2, 3))
        return gx, gw, gb


def conv3x3_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``relu(conv2d(x, weight, bias, padding=1))`` for x (N, 3, H, W), weight (3, 3, 3, 3).

    CPU, float32 or float64; the result is NCHW-contiguous whatever x's memory format.
    """
    return _Conv3x3ReLU.apply(x, weight, bias)


def conv3x3_relu_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The values of :func:`conv3x3_relu` without an autograd graph, for passes under ``no_grad``.

    x (N, 3, H, W), weight (3, 3, 3, 3), bias (3,); returns (N, 3, H, W), NCHW-contiguous. The
    same arithmetic as :func:`conv3x3_relu`'s forward, bit for bit; nothing is kept for a
    backward pass.
    """
    return _forward(x.detach().contiguous(), weight.detach().contiguous(), bias.detach())


def conv3x3_relu_stack(x: torch.Tensor, weights: Sequence[torch.Tensor],
                       biases: Sequence[torch.Tensor]) -> torch.Tensor:
    """:func:`conv3x3_relu_forward` through L layers in turn, each image through all of them at once.

    x (N, 3, H, W); ``weights`` L tensors (3, 3, 3, 3) and ``biases`` L tensors (3,), in layer
    order; returns (N, 3, H, W), NCHW-contiguous, equal bit for bit to L calls of
    :func:`conv3x3_relu_forward`. No autograd graph, and no inner map leaves the kernel: for
    passes under ``no_grad`` that need only the last layer's output.
    """
    x = x.detach().contiguous()
    w = torch.stack([t.detach() for t in weights])  # (L, 3, 3, 3, 3)
    b = torch.stack([t.detach() for t in biases])  # (L, 3)
    y = torch.empty_like(x)
    _threads().conv_stack(_np(x), _np(w), _np(b), _np(y))
    return y
