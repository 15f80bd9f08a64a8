"""The numba kernels behind :mod:`dsc.nn.conv3`: 3->3 channel 3x3 convolutions (padding 1) and their ReLU.

oneDNN, which torch calls for CPU convolutions, vectorises over channels; with 3 channels its
vector lanes are mostly idle, and these five layers took most of a DenseVGG training step. The
kernels here vectorise over the image width instead (a row of 128 pixels fills AVX-512 lanes)
and compute the three output channels from one read of each input row; the ReLU is fused
into the forward pass and into the backward pass's mask. They work image by image on
zero-padded maps that stay in the core's cache: a whole stack of layers (and the adaptive
average pooling after it) forward, then backward with the masks, the data gradient and the
weight and bias sums. Two loops over the batch, one forward and one backward, serve any
number of layers, one included: each loop takes seconds to compile. They are compiled by numba
on first use (:func:`compiled`, cached on disk beside this file) and run over the batch on as
many threads as torch uses.

Plain functions over NumPy arrays; :mod:`dsc.nn.conv3` wraps them for torch.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import Any

import numpy as np

# Reassociation and contraction let LLVM vectorise the row sums and use FMA; no "nnan"/"ninf",
# so a NaN or infinity (a diverging run) propagates exactly as through torch's kernels.
_FAST = {"reassoc", "contract", "nsz", "arcp"}


@functools.cache
def compiled() -> SimpleNamespace:
    """The compiled kernels (numba, on first use; cached on disk beside this file)."""
    import numba

    globals()["prange"] = numba.prange  # the kernels' loops over images become parallel loops
    options: dict[str, Any] = {"fastmath": _FAST, "cache": True, "nogil": True, "boundscheck": False}
    # The loops over images compile against the module's per-image helpers: their compiled forms.
    helpers = "_conv_padded _zero_border _pad_into _weight_grad_padded _flipped _stack_image _mask_into"
    for name in [*helpers.split(), "_pool_image", "_unpool_masked"]:
        globals()[name] = numba.njit(**options)(globals()[name])
    jit = numba.njit(parallel=True, **options)
    loops = ("conv_stack", "stack_backward")  # the parallel loops over images
    return SimpleNamespace(numba=numba, **{name: jit(globals()[f"_{name}"]) for name in loops})


prange = range  # replaced by numba.prange when the kernels are compiled (see compiled)

# The kernels work on zero-padded maps, (3, H + 2, W + 2) per image: every output column then
# reads its three taps from the same three rows, so the loops over a row have no border cases
# and vectorise over the whole width. Indices inside the loops start at 0 and only grow (numba
# adds a wrap-around test to any index it cannot prove non-negative, which stops LLVM from
# vectorising), hence the row slices.
RELU, LINEAR, MASKED = 0, 1, 2  # what _conv_padded does with a sum before it stores it
PLAIN, PADDED = 0, 1  # the offset of a map's pixels in it: a plain map, or a padded map's interior
# The loops pass these through int(): numba types a constant argument as a literal and compiles
# the callee anew for each value it is called with, where int() gives a plain int64 and one
# compiled helper serves every call (each compile of a helper costs seconds on a first run).


def _conv_padded(xp, w, b, out, oy, ox, mode, mask):  # pragma: no cover - compiled
    """out[co, oy + y, ox + i] = f(b[co] + sum_{ci, dy, dx} w[co, ci, dy, dx] xp[ci, y + dy, i + dx]).

    xp (3, H + 2, W + 2) is a zero-padded map; out is (3, H, W) (oy = ox = 0) or the interior
    of a padded map (oy = ox = 1). f: RELU, ``0 if s < 0 else s`` (a NaN passes, as in
    torch); LINEAR, the sum; MASKED, ``0 if mask[co, 1 + y, 1 + i] <= 0 else s`` (torch's
    threshold_backward against the padded map ``mask``).
    """
    _, h2, w2 = xp.shape
    h, wd = h2 - 2, w2 - 2
    a0 = np.empty(wd, xp.dtype)
    a1 = np.empty(wd, xp.dtype)
    a2 = np.empty(wd, xp.dtype)
    for y in range(h):
        a0[:] = b[0]
        a1[:] = b[1]
        a2[:] = b[2]
        for ci in range(3):
            # The three rows under the kernel and the 27 weights that read them (k: out
            # channel, dy, dx); each pass over the row does 27 multiply-adds per column.
            p, q, r = xp[ci, y], xp[ci, y + 1], xp[ci, y + 2]
            k000, k001, k002 = w[0, ci, 0, 0], w[0, ci, 0, 1], w[0, ci, 0, 2]
            k010, k011, k012 = w[0, ci, 1, 0], w[0, ci, 1, 1], w[0, ci, 1, 2]
            k020, k021, k022 = w[0, ci, 2, 0], w[0, ci, 2, 1], w[0, ci, 2, 2]
            k100, k101, k102 = w[1, ci, 0, 0], w[1, ci, 0, 1], w[1, ci, 0, 2]
            k110, k111, k112 = w[1, ci, 1, 0], w[1, ci, 1, 1], w[1, ci, 1, 2]
            k120, k121, k122 = w[1, ci, 2, 0], w[1, ci, 2, 1], w[1, ci, 2, 2]
            k200, k201, k202 = w[2, ci, 0, 0], w[2, ci, 0, 1], w[2, ci, 0, 2]
            k210, k211, k212 = w[2, ci, 1, 0], w[2, ci, 1, 1], w[2, ci, 1, 2]
            k220, k221, k222 = w[2, ci, 2, 0], w[2, ci, 2, 1], w[2, ci, 2, 2]
            for i in range(wd):
                p0, p1, p2 = p[i], p[i + 1], p[i + 2]
                q0, q1, q2 = q[i], q[i + 1], q[i + 2]
                r0, r1, r2 = r[i], r[i + 1], r[i + 2]
                a0[i] += (
                    k000 * p0
                    + k001 * p1
                    + k002 * p2
                    + k010 * q0
                    + k011 * q1
                    + k012 * q2
                    + k020 * r0
                    + k021 * r1
                    + k022 * r2
                )
                a1[i] += (
                    k100 * p0
                    + k101 * p1
                    + k102 * p2
                    + k110 * q0
                    + k111 * q1
                    + k112 * q2
                    + k120 * r0
                    + k121 * r1
                    + k122 * r2
                )
                a2[i] += (
                    k200 * p0
                    + k201 * p1
                    + k202 * p2
                    + k210 * q0
                    + k211 * q1
                    + k212 * q2
                    + k220 * r0
                    + k221 * r1
                    + k222 * r2
                )
        o0, o1, o2 = out[0, oy + y, ox : ox + wd], out[1, oy + y, ox : ox + wd], out[2, oy + y, ox : ox + wd]
        if mode == RELU:
            for i in range(wd):
                o0[i] = 0 if a0[i] < 0 else a0[i]
                o1[i] = 0 if a1[i] < 0 else a1[i]
                o2[i] = 0 if a2[i] < 0 else a2[i]
        elif mode == LINEAR:
            o0[:] = a0
            o1[:] = a1
            o2[:] = a2
        else:
            m0, m1, m2 = mask[0, y + 1, 1 : wd + 1], mask[1, y + 1, 1 : wd + 1], mask[2, y + 1, 1 : wd + 1]
            for i in range(wd):
                o0[i] = 0 if m0[i] <= 0 else a0[i]
                o1[i] = 0 if m1[i] <= 0 else a1[i]
                o2[i] = 0 if m2[i] <= 0 else a2[i]


def _zero_border(m):  # pragma: no cover - compiled
    """Zero the one-pixel frame of the padded map m (3, H + 2, W + 2)."""
    _, h2, w2 = m.shape
    for c in range(3):
        m[c, 0, :] = 0
        m[c, h2 - 1, :] = 0
        for y in range(1, h2 - 1):
            m[c, y, 0] = 0
            m[c, y, w2 - 1] = 0


def _pad_into(x, m):  # pragma: no cover - compiled
    """The padded map m (3, H + 2, W + 2) of x (3, H, W), or of x (1, H, W) replicated to 3 channels."""
    ch, h, wd = x.shape
    _zero_border(m)
    for c in range(3):
        src = x[c if ch == 3 else 0]
        for y in range(h):
            row, out = src[y], m[c, y + 1]
            for i in range(wd):
                out[i + 1] = row[i]


def _mask_into(gy, y, m):  # pragma: no cover - compiled
    """The padded map m of ``0 if y <= 0 else gy`` (torch's threshold_backward(gy, y, 0)); (3, H, W) each."""
    _, h, wd = gy.shape
    _zero_border(m)
    for c in range(3):
        for r in range(h):
            g, v, o = gy[c, r], y[c, r], m[c, r + 1, 1 : wd + 1]
            for i in range(wd):
                o[i] = 0 if v[i] <= 0 else g[i]


def _weight_grad_padded(gp, xp, acc):  # pragma: no cover - compiled
    """acc[co, ci, dy, dx] = sum_{y, i} g[co, y, i] x[ci, y + dy - 1, i + dx - 1], x zero outside.

    gp and xp are the padded maps of g and x (3, H + 2, W + 2), gp zero on its frame. Read as
    flat arrays, each sum is one dot product of gp with xp shifted by (dy - 1) rows and
    (dx - 1) columns over the frame's inner rows: the frame's zeros drop the columns that
    would wrap from one row to the next, and the loop runs the whole map in one go.
    """
    _, h2, w2 = xp.shape
    g = gp.reshape((3, h2 * w2))
    x = xp.reshape((3, h2 * w2))
    lo, hi = w2 + 1, (h2 - 1) * w2 - 1  # from the first inner pixel to the last
    n = hi - lo
    g0, g1, g2 = g[0, lo:hi], g[1, lo:hi], g[2, lo:hi]
    zero = np.zeros(1, acc.dtype)[0]  # a zero of the array's type (a literal 0.0 would be float64)
    for ci in range(3):
        for dy in range(3):
            s = lo + (dy - 1) * w2 - 1
            row = x[ci, s : s + n + 2]
            # Nine sums (output channel x horizontal tap) from one pass.
            t00 = t01 = t02 = t10 = t11 = t12 = t20 = t21 = t22 = zero
            for k in range(n):
                r0, r1, r2 = row[k], row[k + 1], row[k + 2]
                a, b, c = g0[k], g1[k], g2[k]
                t00 += a * r0
                t01 += a * r1
                t02 += a * r2
                t10 += b * r0
                t11 += b * r1
                t12 += b * r2
                t20 += c * r0
                t21 += c * r1
                t22 += c * r2
            acc[0, ci, dy, 0], acc[0, ci, dy, 1], acc[0, ci, dy, 2] = t00, t01, t02
            acc[1, ci, dy, 0], acc[1, ci, dy, 1], acc[1, ci, dy, 2] = t10, t11, t12
            acc[2, ci, dy, 0], acc[2, ci, dy, 1], acc[2, ci, dy, 2] = t20, t21, t22


def _flipped(w):  # pragma: no cover - compiled
    """The data gradient's kernel: w flipped in space, input and output channels swapped."""
    wt = np.empty_like(w)
    for co in range(3):
        for ci in range(3):
            for dy in range(3):
                for dx in range(3):
                    wt[ci, co, dy, dx] = w[co, ci, 2 - dy, 2 - dx]
    return wt


def _pool_image(m, off, pooled, win):  # pragma: no cover - compiled
    """pooled (3, OH, OW) = adaptive average pooling of the map m (3, H + 2 off, W + 2 off).

    ``off`` 1 reads a padded map's interior, 0 a plain map. ``win`` = (row starts, row ends,
    column starts, column ends, ...) of the windows, as ``nn.AdaptiveAvgPool2d`` sets them
    (``dsc.nn.conv3.pool_windows``). Each window row's sum over its rows is one vector
    pass per row; the column windows then sum a few values each.
    """
    ys, ye, xs, xe = win[0], win[1], win[2], win[3]
    oh, ow = ys.shape[0], xs.shape[0]
    wd = m.shape[2] - 2 * off
    zero = np.zeros(1, m.dtype)[0]
    rows = np.empty(wd, m.dtype)  # one window row's sums over its rows, by column
    for c in range(3):
        for i in range(oh):
            rows[:] = zero
            for y in range(ys[i], ye[i]):
                row = m[c, y + off, off : off + wd]
                for k in range(wd):
                    rows[k] += row[k]
            for j in range(ow):
                t = zero
                for k in range(xs[j], xe[j]):
                    t += rows[k]
                pooled[c, i, j] = t / ((ye[i] - ys[i]) * (xe[j] - xs[j]))


def _unpool_masked(gp, m, g, win):  # pragma: no cover - compiled
    """The padded map g of the pooling's gradient (from gp (3, OH, OW)) through the ReLU mask of m.

    g[c, 1 + y, 1 + i] = 0 where m's interior is <= 0, else the sum of gp / window area over
    the windows that hold (y, i); ``win[4:6]`` give, per row, the range of window rows that
    hold it. Each window row's gradient is spread over the columns once; a map row is then
    the sum of one or two of those, masked, in vector passes.
    """
    ys, ye, xs, xe, ilo, ihi = win
    oh, ow = ys.shape[0], xs.shape[0]
    _, h2, w2 = m.shape
    h, wd = h2 - 2, w2 - 2
    zero = np.zeros(1, m.dtype)[0]
    spread = np.empty((oh, wd), m.dtype)  # window row i's gradient at each column
    acc = np.empty(wd, m.dtype)
    _zero_border(g)
    for c in range(3):
        for i in range(oh):
            spread[i, :] = zero
            for j in range(ow):
                share = gp[c, i, j] / ((ye[i] - ys[i]) * (xe[j] - xs[j]))
                for k in range(xs[j], xe[j]):
                    spread[i, k] += share
        for y in range(h):
            acc[:] = spread[ilo[y]]
            for i in range(ilo[y] + 1, ihi[y]):
                row = spread[i]
                for k in range(wd):
                    acc[k] += row[k]
            mask, out = m[c, y + 1, 1 : wd + 1], g[c, y + 1, 1 : wd + 1]
            for k in range(wd):
                out[k] = 0 if mask[k] <= 0 else acc[k]


def _stack_image(x, w, b, out, maps, keep, win, taps, twin):  # pragma: no cover - compiled
    """out = x through L layers relu(conv2d(., w[l], b[l], padding=1)), x (3, H, W).

    maps holds each layer's padded input where ``keep`` (for the backward pass), and, when
    pooling, the last layer's padded output after them; otherwise the two maps that
    alternate. With pooling windows (``win[0]`` not empty) out (3, OH, OW) is the pooled
    map, else (3, H, W) the last layer's. With tap windows (``twin[0]`` not empty) taps[l]
    (3, TH, TW) receives layer l's output pooled by them (activation capture).
    """
    depth = w.shape[0]
    pool, tap = win[0].shape[0] > 0, twin[0].shape[0] > 0
    _pad_into(x, maps[0])
    for layer in range(depth):
        src = maps[layer if keep else layer % 2]
        if layer == depth - 1 and not pool:
            _conv_padded(src, w[layer], b[layer], out, int(PLAIN), int(PLAIN), int(RELU), src)
            if tap:
                _pool_image(out, int(PLAIN), taps[layer], twin)
        else:
            dst = maps[layer + 1 if keep else (layer + 1) % 2]
            _zero_border(dst)
            _conv_padded(src, w[layer], b[layer], dst, int(PADDED), int(PADDED), int(RELU), src)
            if tap:
                _pool_image(dst, int(PADDED), taps[layer], twin)
    if pool:
        _pool_image(maps[depth if keep else depth % 2], int(PADDED), out, win)


def _conv_stack(x, w, b, out, maps, keep, win, taps, twin):  # pragma: no cover - compiled
    """out[n] = x[n] through L layers relu(conv2d(., w[l], b[l], padding=1)), then pooled where
    ``win`` has windows; w (L, 3, 3, 3, 3), b (L, 3); taps (N, L, 3, TH, TW) where ``twin`` has.

    One image goes through every layer before the next starts: its inner maps stay in the
    core's cache instead of making a round trip through memory per layer, as a call per
    layer over the batch makes them. ``keep``: maps (N, L (+ 1 when pooling), 3, H + 2, W + 2)
    receives each layer's padded input (and the last output), for :func:`_stack_backward`;
    otherwise maps is not used.
    """
    n_img, _, h, wd = x.shape
    tap = twin[0].shape[0] > 0  # else taps is a one-image placeholder
    for n in prange(n_img):
        t = n if tap else n - n  # (n - n: 0 of n's type; a literal 0 would unify with it as a float)
        m = maps[n] if keep else np.empty((2, 3, h + 2, wd + 2), x.dtype)
        _stack_image(x[n], w, b, out[n], m, keep, win, taps[t], twin)


def _stack_backward(gy, maps, out, w, gx, need_gx, gw_part, gb_part, win):  # pragma: no cover - compiled
    """The gradients of :func:`_conv_stack` (kept maps), image by image, last layer first.

    gy (N, 3, H, W), or (N, 3, OH, OW) when pooling (``win`` has windows); out (N, 3, H, W)
    the last layer's output (not read when pooling: maps holds it); maps as the forward pass
    kept them; gw_part (N, L, 3, 3, 3, 3) and gb_part (N, L, 3) receive each image's sums;
    gx (N, 3, H, W) the input's gradient where ``need_gx``. The gradient of a layer's output
    goes to the layer below through the ReLU mask of that layer's own output (the padded
    input kept for this layer), without leaving the kernel.
    """
    n_img, depth = maps.shape[0], w.shape[0]
    h, wd = maps.shape[3] - 2, maps.shape[4] - 2
    pool = win[0].shape[0] > 0
    nobias = np.zeros(3, gy.dtype)
    flipped = np.empty_like(w)
    for layer in range(depth):
        flipped[layer] = _flipped(w[layer])
    for n in prange(n_img):
        g = np.empty((2, 3, h + 2, wd + 2), gy.dtype)
        if pool:
            _unpool_masked(gy[n], maps[n, depth], g[0], win)
        else:
            _mask_into(gy[n], out[n], g[0])
        for layer in range(depth - 1, -1, -1):
            cur = g[(depth - 1 - layer) % 2]
            _weight_grad_padded(cur, maps[n, layer], gw_part[n, layer])
            for c in range(3):
                gb_part[n, layer, c] = cur[c].sum()
            if layer > 0:
                below = g[(depth - layer) % 2]
                _zero_border(below)
                _conv_padded(cur, flipped[layer], nobias, below, int(PADDED), int(PADDED), int(MASKED), maps[n, layer])
            elif need_gx:
                _conv_padded(cur, flipped[layer], nobias, gx[n], int(PLAIN), int(PLAIN), int(LINEAR), cur)
