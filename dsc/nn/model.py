"""The paper's network (DenseVGG) and torchvision's VGG-11 adapted to C classes.

Every weight layer has a stable name (``conv1``..``convD``, ``fc1``, ``fc2``, ``out``) that
metrics, snapshot artifacts and figures use.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterator

import torch
from torch import nn

from dsc.nn import conv3
from dsc.settings import ModelConfig


def _pool_matrix(size: int, out: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(out, size) averaging matrix of adaptive pooling along one axis.

    Row i averages input positions floor(i*size/out) .. ceil((i+1)*size/out) - 1, the windows of
    ``torch.nn.AdaptiveAvgPool2d``.
    """
    i = torch.arange(out, device=device)
    start = torch.div(i * size, out, rounding_mode="floor")
    end = -torch.div(-(i + 1) * size, out, rounding_mode="floor")
    j = torch.arange(size, device=device)
    inside = (j >= start[:, None]) & (j < end[:, None])
    return inside.to(dtype) / (end - start)[:, None].to(dtype)


class GridAvgPool2d(nn.AdaptiveAvgPool2d):
    """``nn.AdaptiveAvgPool2d`` computed as two small matrix products, P_h X P_w^T.

    The same windows and the same result (up to float rounding). Torch's own kernel is written
    for many channels; on the 3-channel channels_last maps of DenseVGG its forward plus
    backward takes several times as long as the two batched matmuls, which keep the NHWC
    layout. Without gradients, NCHW maps (those of :mod:`dsc.nn.conv3`) go to torch's kernel,
    which is the faster there.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:  # unbatched (C, H, W), as nn.AdaptiveAvgPool2d accepts
            return self.forward(x.unsqueeze(0)).squeeze(0)
        if not torch.is_grad_enabled() and x.is_contiguous():
            return super().forward(x)  # forward alone on NCHW maps: torch's kernel is the faster
        n, c, h, w = x.shape
        oh, ow = self.output_size if isinstance(self.output_size, tuple) else (self.output_size,) * 2
        oh, ow = oh or h, ow or w  # None keeps that side
        ph = _pool_matrix(h, oh, x.dtype, x.device)
        pw = _pool_matrix(w, ow, x.dtype, x.device)
        if c > 1 and x.is_contiguous(memory_format=torch.channels_last):
            rows = torch.matmul(ph, x.permute(0, 2, 3, 1).reshape(n, h, w * c))  # (n, oh, w*c)
            return torch.einsum("jw,niwc->ncij", pw, rows.reshape(n, oh, w, c))
        return torch.matmul(torch.matmul(ph, x), pw.T)  # (n, c, oh, ow)


class DenseVGG(nn.Module):
    """Five 3->3 channel 3x3 convolutions at full resolution, then a 2-layer MLP.

    With the defaults and 5 classes: 2,284,969 trainable parameters, as in the paper's table.
    Input (B, 3, H, W) float; output (B, C) logits.
    """

    def __init__(
        self,
        num_classes: int = 5,
        depth: int = 5,
        filters: int = 3,
        kernel_size: int = 3,
        pool_size: int = 20,
        hidden: int = 1024,
        dropout: float = 0.5,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        layers: list[tuple[str, nn.Module]] = []
        channels = in_channels
        for i in range(1, depth + 1):
            layers.append((f"conv{i}", nn.Conv2d(channels, filters, kernel_size, padding=kernel_size // 2)))
            layers.append((f"relu{i}", nn.ReLU(inplace=True)))
            channels = filters
        self.features = nn.Sequential(OrderedDict(layers))
        self.pool = GridAvgPool2d(pool_size)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(filters * pool_size * pool_size, hidden)
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, hidden)
        self.drop2 = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, num_classes)
        self.conv_kernel = "auto"  # or "dsc", "torch": who runs the convs (uses_conv3)
        self._tap: tuple[int | None, Callable[[str, torch.Tensor], None]] | None = None  # (tapping)

    @contextlib.contextmanager
    def tapping(self, grid: int | None, sink: Callable[[str, torch.Tensor], None]) -> Iterator[None]:
        """Within it, each forward pass hands every conv layer's post-ReLU maps to ``sink(name, maps)``.

        ``maps`` (B, C, grid, grid) is the layer's output average-pooled as
        ``adaptive_avg_pool2d(out, grid)``, or the whole map where ``grid`` is None or not
        narrower than the map. Under ``no_grad`` with :mod:`dsc.nn.conv3` the kernel pools the
        maps while they are in cache (activation capture without hooks on the layers); other
        passes pool torch's outputs.
        """
        self._tap = (grid, sink)
        try:
            yield
        finally:
            self._tap = None

    def _tap_size(self, x: torch.Tensor) -> tuple[int, int]:
        assert self._tap is not None  # called within tapping
        grid = self._tap[0]
        return (x.shape[-2], x.shape[-1]) if grid is None or grid >= x.shape[-1] else (grid, grid)

    def _give_taps(self, maps: list[torch.Tensor]) -> None:
        """Pool each conv layer's map (in layer order) to the tap size and hand it to the sink."""
        assert self._tap is not None  # called within tapping
        sink = self._tap[1]
        for i, m in enumerate(maps, 1):
            size = self._tap_size(m)
            sink(f"conv{i}", m if size == tuple(m.shape[-2:]) else nn.functional.adaptive_avg_pool2d(m, size))

    def uses_conv3(self, device: torch.device, dtype: torch.dtype = torch.float32, pixels: int = 128 * 128) -> bool:
        """Whether passes over maps of ``pixels`` pixels run the convs through :mod:`dsc.nn.conv3`.

        Needs CPU, float32 or float64 and the paper's 3 -> 3 channel 3x3 layers, and then
        ``conv_kernel``: "dsc" always, "auto" from ``conv3.MIN_PIXELS`` (64x64) up, "torch"
        never. Where it holds, training-mode passes and passes without gradients (evaluation,
        activation capture) run the kernel; an eval-mode pass that records gradients, a traced
        pass and a pass with hooks on a conv (or, in training, on any layer of the conv stack)
        run torch's layers.
        """
        if self.conv_kernel == "torch" or (self.conv_kernel == "auto" and pixels < conv3.MIN_PIXELS):
            return False
        return all(conv3.supports(m, device, dtype) for m in self._convs())

    def _convs(self) -> list[nn.Conv2d]:
        return [m for m in self.features if isinstance(m, nn.Conv2d)]

    def _runs_conv3(self, x: torch.Tensor) -> bool:
        """Whether this forward pass over ``x`` (B, C, H, W) runs the conv stack through the kernel."""
        if x.dim() != 4 or not self.uses_conv3(x.device, x.dtype, x.shape[-2] * x.shape[-1]):
            return False
        if torch.is_grad_enabled():
            return self.training and not any(m._forward_hooks or m._forward_pre_hooks for m in self.features)
        # A traced pass (torch.export, torch.compile) keeps torch's layers: the kernel runs on
        # NumPy views, which a tracer's fake tensors do not have.
        return not torch.compiler.is_compiling() and not any(
            m._forward_hooks or m._forward_pre_hooks for m in self._convs()
        )

    def _pool_size(self, x: torch.Tensor) -> tuple[int, int]:
        size = self.pool.output_size
        oh, ow = size if isinstance(size, tuple) else (size, size)
        return oh or x.shape[-2], ow or x.shape[-1]  # None keeps that side

    def _conv3_pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The conv stack through :mod:`dsc.nn.conv3`, then the pooling: (B, 3, H, W) in, (B, 3, P, P) out.

        Without hooks on the stack's layers (in training, :meth:`_runs_conv3` allows none) or on
        the pooling, one kernel call runs all layers and the pooling, image by image, forward
        and backward, and pools the maps :meth:`tapping` asks for. Hooked ReLUs (activation
        capture by hooks) get each layer's map from a call per layer, and a hooked pooling its
        input.
        """
        layers = list(self.features)
        hooked = any(m._forward_hooks or m._forward_pre_hooks for m in layers)
        pool_hooked = bool(self.pool._forward_hooks or self.pool._forward_pre_hooks)
        convs = self._convs()  # layers[::2]: the stack is conv, ReLU, conv, ReLU, ...
        # every conv has a bias: conv3.supports, which let the pass come here, holds for each
        weights, biases = [c.weight for c in convs], [c.bias for c in convs if c.bias is not None]
        if self._tap is not None and not torch.is_grad_enabled() and not hooked and not pool_hooked:
            x, taps = conv3.conv3x3_relu_stack(x, weights, biases, pool=self._pool_size(x), taps=self._tap_size(x))
            for i in range(taps.shape[1]):
                self._tap[1](f"conv{i + 1}", taps[:, i])
            return x
        if self._tap is None and (torch.is_grad_enabled() or not hooked):
            if pool_hooked:
                return self.pool(conv3.conv3x3_relu_stack(x, weights, biases))
            return conv3.conv3x3_relu_stack(x, weights, biases, pool=self._pool_size(x))
        maps = []
        for weight, bias, relu in zip(weights, biases, layers[1::2]):
            x = conv3.conv3x3_relu_forward(x, weight, bias)
            if relu._forward_hooks or relu._forward_pre_hooks:
                # The kernel applied the ReLU; the module still runs where it is hooked (activation
                # capture), so that its hooks see what torch's layers give them: in place, its
                # input is its output, and on a map that is already rectified it changes nothing.
                x = relu(x)
            if self._tap is not None:
                maps.append(x)
        if self._tap is not None:
            self._give_taps(maps)
        return self.pool(x)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """The conv stack through torch's layers, tapped where :meth:`tapping` asks."""
        if self._tap is None:
            return self.features(x)
        maps = []
        for m in self.features:
            x = m(x)
            if isinstance(m, nn.ReLU):
                maps.append(x)  # an in-place ReLU rewrote its conv's output, which nothing reuses
        self._give_taps(maps)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._conv3_pooled(x) if self._runs_conv3(x) else self.pool(self._features(x))
        x = self.flatten(x)  # (B, filters * pool^2)
        x = self.drop1(torch.relu(self.fc1(x)))  # (B, hidden)
        x = self.drop2(torch.relu(self.fc2(x)))  # (B, hidden)
        return self.out(x)  # (B, C)


def vgg11(num_classes: int, dropout: float = 0.5) -> nn.Module:
    """torchvision's VGG-11 (random init, no download) with a C-way classifier.

    Its weight layers are renamed to the project's scheme through :func:`named_layers`.
    """
    from torchvision.models import vgg11 as tv_vgg11

    return tv_vgg11(weights=None, num_classes=num_classes, dropout=dropout)


def min_image_size(cfg: ModelConfig) -> int:
    """The smallest image side (pixels) the architecture accepts.

    VGG-11 halves the side at each of its max-poolings (five, read from torchvision's layer
    list) and needs at least one pixel after the last; DenseVGG keeps the side through its
    convolutions and pools adaptively, so any size fits.
    """
    if cfg.arch == "vgg11":
        from torchvision.models.vgg import cfgs

        return 2 ** cfgs["A"].count("M")
    return 1


def build_model(cfg: ModelConfig) -> nn.Module:
    """A freshly initialised network for ``cfg``: :func:`vgg11` or :class:`DenseVGG`.

    Parameters
    ----------
    cfg : ModelConfig
        ``arch`` picks the network; VGG-11 reads only ``num_classes`` and ``dropout``, DenseVGG
        every field.

    Returns
    -------
    nn.Module
        Input (B, ``in_channels``, H, W) float; output (B, ``num_classes``) logits.
    """
    if cfg.arch == "vgg11":
        return vgg11(cfg.num_classes, cfg.dropout)
    return DenseVGG(
        num_classes=cfg.num_classes,
        depth=cfg.depth,
        filters=cfg.filters,
        kernel_size=cfg.kernel_size,
        pool_size=cfg.pool_size,
        hidden=cfg.hidden,
        dropout=cfg.dropout,
        in_channels=cfg.in_channels,
    )


def named_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The model's weight layers by stable name, in forward order.

    Convs are ``conv1``.. in order; linears are ``fc1``, ``fc2``, ... and the last one ``out``.
    """
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    names: dict[str, nn.Module] = {f"conv{i}": m for i, m in enumerate(convs, 1)}
    names.update({f"fc{i}": m for i, m in enumerate(linears[:-1], 1)})
    if linears:
        names["out"] = linears[-1]
    return names


def count_parameters(model: nn.Module) -> int:
    """The number of trainable scalars in ``model`` (parameters with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
