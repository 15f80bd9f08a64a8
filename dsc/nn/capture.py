"""Activation capture: forward hooks that record every named layer on the probe images.

We use hooks rather than torchvision's ``create_feature_extractor`` because the capture must
ride along the validation pass that training already does (no second forward), and must work
on any model that :func:`dsc.nn.model.named_layers` understands (DenseVGG and VGG-11 alike).
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterator, Mapping
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from dsc.nn.layers import output_shapes
from dsc.nn.model import named_layers

BYTES_F16 = 2


def plan_grids(
    model: nn.Module,
    sample: torch.Tensor,
    n_probe: int,
    budget_bytes: float,
    sites: Mapping[str, tuple[nn.Module, bool]] | None = None,
) -> dict[str, int | None]:
    """The side of the average-pooling grid of each conv layer (None = full resolution).

    ``sites`` (default :func:`activation_sites` of a dsc model) are the modules read. Flat
    layers are kept whole; what remains of the budget is shared equally by the conv layers,
    and a conv map is pooled to the largest square grid that fits its share.
    """
    sites = activation_sites(model) if sites is None else sites
    shapes = output_shapes(model, {n: m for n, (m, _) in sites.items()}, sample[:1])
    return grids_for(shapes, n_probe, budget_bytes)


def grids_for(shapes: Mapping[str, tuple], n_probe: int, budget_bytes: float) -> dict[str, int | None]:
    """:func:`plan_grids` from the per-image output shapes ``{layer: shape}``."""
    flat = sum(math.prod(s) for s in shapes.values() if len(s) != 3)
    convs = [n for n, s in shapes.items() if len(s) == 3]
    full = sum(math.prod(shapes[n]) for n in convs)
    per_image = budget_bytes / max(n_probe, 1) / BYTES_F16
    if flat + full <= per_image or not convs:
        return {n: None for n in shapes}
    share = max(per_image - flat, 0) / len(convs)
    grids: dict[str, int | None] = {n: None for n in shapes}
    for n in convs:
        c, h, _ = shapes[n]
        grids[n] = max(1, min(h, int(math.sqrt(share / c))))
    return grids


def activation_sites(model: nn.Module) -> dict[str, tuple[nn.Module, bool]]:
    """Where each named layer's post-activation output can be read: ``{name: (module, relu)}``.

    A layer followed by an ``nn.ReLU`` module in its ``nn.Sequential`` (every conv of DenseVGG
    and VGG-11) is read at that ReLU's output, which costs nothing; otherwise (the linears,
    whose ReLU is functional) at the layer's output, with ``relu`` = True asking the hook to
    apply it. ``out`` gives logits.
    """
    following: dict[nn.Module, nn.Module] = {}
    for parent in model.modules():
        if isinstance(parent, nn.Sequential):
            children = list(parent)
            following.update(itertools.pairwise(children))
    sites: dict[str, tuple[nn.Module, bool]] = {}
    for name, layer in named_layers(model).items():
        nxt = following.get(layer)
        if name != "out" and isinstance(nxt, nn.ReLU):
            sites[name] = (nxt, False)
        else:
            sites[name] = (layer, name != "out")
    return sites


class ActivationCapture:
    """Records post-activation outputs (ReLU applied, except ``out``: logits) as float16.

    Use :meth:`recording` around forward passes over the probe images, in probe order; then
    :meth:`take` returns ``{layer: (n, ...) float16 array}`` and clears the buffers.
    """

    def __init__(
        self,
        model: nn.Module,
        grids: dict[str, int | None],
        sites: Mapping[str, tuple[nn.Module, bool]] | None = None,
        rows: np.ndarray | None = None,
    ) -> None:
        sites = activation_sites(model) if sites is None else sites
        self.sites = {n: site for n, site in sites.items() if n in grids}
        self.layers = list(self.sites)
        self.grids = grids
        # Only these positions of the pass (ascending) are kept: a probe larger than the snapshot's
        # share is evaluated whole, its activations kept for the snapshot's rows alone.
        self.rows = None if rows is None else np.unique(np.asarray(rows, dtype=np.int64))
        self._seen = dict.fromkeys(self.layers, 0)
        self._buf: dict[str, list[torch.Tensor]] = {n: [] for n in self.layers}
        self.model = model
        # A model that taps its own conv maps (DenseVGG: pooled inside dsc.nn.conv3's kernel, with
        # no map leaving the cache) records them, where every conv is captured at one grid.
        convs = [n for n in named_layers(model) if n.startswith("conv")]
        self.tapped = bool(
            hasattr(model, "tapping")
            and convs
            and all(n in grids for n in convs)
            and len({grids[n] for n in convs}) == 1
        )
        self.tap_grid = grids[convs[0]] if self.tapped else None

    def _keep(self, name: str, out: torch.Tensor) -> None:
        if self.rows is not None:
            start = self._seen[name]
            self._seen[name] = start + len(out)
            lo, hi = np.searchsorted(self.rows, [start, start + len(out)])
            if lo == hi:
                return
            out = out[torch.from_numpy(self.rows[lo:hi] - start).to(out.device)]
        kept = out.to("cpu", torch.float16)
        # A map already float16 on the CPU comes back as itself: copied, as an in-place op may follow.
        self._buf[name].append(kept.clone() if kept.data_ptr() == out.data_ptr() else kept.contiguous())

    def _hook(self, name: str):
        grid = self.grids[name]
        relu = self.sites[name][1]

        def hook(module, inputs, out: torch.Tensor) -> None:
            out = out.detach()
            if relu:
                out = torch.relu(out)
            if out.ndim == 4 and grid is not None and grid < out.shape[-1]:
                out = nn.functional.adaptive_avg_pool2d(out, grid)  # (B, C, g, g)
            self._keep(name, out)

        return hook

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        hooked = {n: site for n, site in self.sites.items() if not (self.tapped and n.startswith("conv"))}
        handles = [m.register_forward_hook(self._hook(n)) for n, (m, _) in hooked.items()]
        try:
            tapper: Any = self.model  # DenseVGG where self.tapped: it has tapping
            with tapper.tapping(self.tap_grid, self._keep) if self.tapped else contextlib.nullcontext():
                yield
        finally:
            for h in handles:
                h.remove()

    def take(self, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The recorded activations (optionally only ``rows``), and empty buffers."""
        acts = {n: torch.cat(b).numpy() for n, b in self._buf.items() if b}
        self._buf = {n: [] for n in self.layers}
        self._seen = dict.fromkeys(self.layers, 0)
        return {n: a[rows] if rows is not None else a for n, a in acts.items()}


def layer_weights(model: nn.Module, modules: Mapping[str, nn.Module] | None = None) -> dict[str, np.ndarray]:
    """Each weight layer's weight as float32 NumPy: (out, in) or (out, in, kh, kw).

    ``modules`` (default: the named layers of a dsc model) names the layers.
    """
    modules = named_layers(model) if modules is None else modules
    # nn.Module's attributes are typed Tensor | Module; a weight layer's weight is a tensor
    return {n: cast(torch.Tensor, m.weight).detach().float().cpu().numpy() for n, m in modules.items()}


def user_sites(modules: Mapping[str, nn.Module]) -> dict[str, tuple[nn.Module, bool]]:
    """Capture sites of any model's chosen modules: each read at its own output, as it is."""
    return {n: (m, False) for n, m in modules.items()}
