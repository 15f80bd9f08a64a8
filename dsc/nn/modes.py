"""The final model with some layers' weights cut to k singular modes: loss and accuracy as k grows.

`ModeEvaluator` scores a model with replaced weights while reusing the work the replacement
leaves unchanged; `mode_sweep` runs the leading-against-random sweep of every layer (Li & Huang)
and fits the two-segment power laws of `dsc.core.modes` to it.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Hashable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from dsc.core.modes import (
    MODE_CHOICES,
    ModeDecomposition,
    PowerLawFit,
    fit_two_segment_power_law,
    k_grid,
)
from dsc.nn.model import DenseVGG, named_layers

MEMO_TOTAL_BYTES = 512e6  # outputs of modified prefixes kept for reuse, at most

# A replacement weight: the full tensor, or for a linear layer the factors (a (out, k), b (k, in))
# of a rank-k weight a @ b, applied as two thin products (far cheaper for small k).
Weight = torch.Tensor | tuple[torch.Tensor, torch.Tensor]
Mods = Mapping[str, tuple[Hashable, Weight]]  # layer -> (key naming the replacement, weight)


class Cancelled(Exception):
    """The analysis stopped while a background computation was still running."""


def _full(w: Weight) -> torch.Tensor:
    return w[0] @ w[1] if isinstance(w, tuple) else w


def _apply(module: nn.Module, t: torch.Tensor, w: Weight) -> torch.Tensor:
    if isinstance(w, tuple):
        bias = module.bias
        assert bias is None or isinstance(bias, torch.Tensor)  # a weight layer's bias
        return nn.functional.linear(nn.functional.linear(t, w[1]), w[0], bias)
    return functional_call(module, {"weight": w}, (t,))


class ModeEvaluator:
    """Loss and accuracy of a model with some layers' weights replaced, reusing unchanged work.

    DenseVGG runs as a chain of stages (conv+ReLU ..., pool+flatten, fc1+ReLU, fc2+ReLU, out;
    dropout is the identity in eval mode). The input of each stage under the full model is kept
    (within ``cache_bytes``), so replacing layer j reruns stages j.. only; stage outputs of a
    modified prefix are memoised by the replacements' keys (small ones only), so sweeps that
    repeat the conv replacements under new fc ones rerun only the fc head. Other models run
    whole (``torch.func.functional_call``: weights swapped without touching the module).

    Parameters
    ----------
    model : the network, put in eval mode
    x : tensor, shape (n, C, H, W); y : int tensor, shape (n,)
        The images it is scored on, and their labels.
    batch : images per forward pass
    stop : when set, the next `score` raises `Cancelled`
    """

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        batch: int = 64,
        cache_bytes: float = 1.5e9,
        memo_bytes: float = 16e6,
        stop: threading.Event | None = None,
        params: Mapping[str, str] | None = None,
    ) -> None:
        self.model = model
        with contextlib.suppress(NotImplementedError):  # an exported program's module is always in eval mode
            model.eval()
        self.stop = stop
        self.y = y
        self.layers = named_layers(model) if params is None else {}
        self.params = weight_params(model) if params is None else dict(params)
        self.memo_bytes = memo_bytes
        self.n = len(x)
        self.batches = [x[s : s + batch] for s in range(0, len(x), batch)]
        self.memo_used = 0.0
        self.stages = self._stages()
        if not self._chain_matches(x[:4]):
            self.stages = [(None, self._whole)]
        self.memo: dict[tuple, list[torch.Tensor]] = {(0, ()): self.batches}
        self._fill_cache(cache_bytes)

    def _whole(self, t: torch.Tensor, mods: Mods) -> torch.Tensor:
        params = {self.params[name]: _full(w) for name, (_, w) in mods.items()}
        return functional_call(self.model, params, (t,))

    def _stages(self) -> list[tuple[str | None, Callable]]:
        if not isinstance(self.model, DenseVGG) or not self.layers:
            return [(None, self._whole)]

        def layer(name: str, relu: bool) -> tuple[str, Callable]:
            module = self.layers[name]

            def run(t: torch.Tensor, mods: Mods) -> torch.Tensor:
                out = _apply(module, t, mods[name][1]) if name in mods else module(t)
                return out.relu_() if relu else out  # out is fresh: in place saves a pass over memory

            return name, run

        m = self.model
        convs = [layer(n, True) for n in self.layers if n.startswith("conv")]
        pool = (None, lambda t, mods: m.flatten(m.pool(t)))
        return [*convs, pool, layer("fc1", True), layer("fc2", True), layer("out", False)]

    @torch.no_grad()
    def _chain_matches(self, x: torch.Tensor) -> bool:
        h = x
        for _, run in self.stages:
            h = run(h, {})
        ref = self.model(x)
        return h.shape == ref.shape and torch.allclose(h, ref, atol=1e-4, rtol=1e-4)

    @torch.no_grad()
    def _fill_cache(self, cache_bytes: float) -> None:
        """One pass of the full model, keeping stage inputs: the last ones first, within budget."""
        h, sizes = self.batches[0][:1], []
        for _, run in self.stages:
            h = run(h, {})
            sizes.append(h.numel() * h.element_size() * self.n)  # bytes of stage j + 1's input
        keep, used = {len(self.stages)}, 0.0
        for j in range(len(self.stages) - 1, 0, -1):
            if used + sizes[j - 1] <= cache_bytes:
                keep.add(j)
                used += sizes[j - 1]
        self.sizes = [0.0, *sizes]
        for j, batches in self._run(self.batches, 0, {}, keep)[1].items():
            self.memo[(j, ())] = batches

    def _run(
        self, inputs: list[torch.Tensor], start: int, mods: Mods, keep: set[int]
    ) -> tuple[list[torch.Tensor], dict[int, list[torch.Tensor]]]:
        """Run the batches of stage ``start``'s input depth first (a batch's maps stay in the CPU
        cache); returns the logits batches and the inputs of the stages in ``keep``."""
        kept: dict[int, list[torch.Tensor]] = {j: [] for j in keep}
        out = []
        for b in inputs:
            for s in range(start, len(self.stages)):
                b = self.stages[s][1](b, mods)
                if s + 1 in kept:
                    kept[s + 1].append(b)
            out.append(b)
        return out, kept

    @torch.no_grad()
    def logits(self, mods: Mods) -> torch.Tensor:
        """(n, C) logits with the given layers replaced."""
        stage_of = {name: j for j, (name, _) in enumerate(self.stages) if name}
        where = {name: (stage_of.get(name, 0), key) for name, (key, _) in mods.items()}
        sig = [tuple(sorted((n, k) for n, (j, k) in where.items() if j < s)) for s in range(len(self.stages) + 1)]
        start = max(s for s in range(len(self.stages) + 1) if (s, sig[s]) in self.memo)
        keep = {
            j
            for j in range(start + 1, len(self.stages) + 1)
            if (j, sig[j]) not in self.memo
            and self.sizes[j] <= self.memo_bytes
            and self.memo_used + self.sizes[j] <= MEMO_TOTAL_BYTES
        }
        out, kept = self._run(self.memo[(start, sig[start])], start, mods, keep)
        for j, batches in kept.items():
            self.memo[(j, sig[j])] = batches
            self.memo_used += self.sizes[j]
        return torch.cat(out)

    def score(self, mods: Mods) -> tuple[float, float]:
        """(accuracy, mean cross-entropy loss) with the given layers replaced."""
        if self.stop is not None and self.stop.is_set():
            raise Cancelled("mode sweep cancelled")
        logits = self.logits(mods)
        loss = float(nn.functional.cross_entropy(logits, self.y))
        return float((logits.argmax(1) == self.y).float().mean()), loss


def _truncated(dec: ModeDecomposition, svd: tuple, k: int, mode: str, rng: list[int], shape: torch.Size) -> Weight:
    """Rank-k weight from the decomposition in float32: factors for a linear layer when cheaper."""
    u, s, vt = svd
    idx = torch.from_numpy(dec.modes(k, mode, rng))
    a, b = (u[:, idx] * s[idx]).contiguous(), vt[idx].contiguous()  # (m, k), (k, n)
    m, n = a.shape[0], b.shape[1]
    if len(shape) == 2 and k * (m + n) < m * n:
        return a, b
    return (a @ b).reshape(shape).contiguous()


@dataclass(frozen=True)
class ModeCurve:
    """Validation accuracy (fraction) and mean cross-entropy loss (nats) at each k, shape (m,)."""

    acc: tuple[float, ...]
    loss: tuple[float, ...]


@dataclass(frozen=True)
class KeptModes:
    """One sweep over k: k leading modes kept against k random ones, and the power-law fits.

    Attributes
    ----------
    k : tuple of int, length m
    leading, random : ModeCurve
    fit_error, fit_loss : PowerLawFit
        Two-segment power laws of error(k) - error(full) and loss(k) - loss(full), leading modes.
    """

    k: tuple[int, ...]
    leading: ModeCurve
    random: ModeCurve
    fit_error: PowerLawFit
    fit_loss: PowerLawFit

    @property
    def by_mode(self) -> dict[str, ModeCurve]:
        """The curves by `MODE_CHOICES` name."""
        return {"leading": self.leading, "random": self.random}

    def to_dict(self) -> dict[str, Any]:
        return {
            "k": list(self.k),
            **{m: asdict(c) for m, c in self.by_mode.items()},
            "fit_error": asdict(self.fit_error),
            "fit_loss": asdict(self.fit_loss),
        }


@dataclass(frozen=True)
class ModeSweep:
    """What `mode_sweep` measured.

    Attributes
    ----------
    n_images : images scored
    full_acc, full_loss : the model with every mode kept
    k : tuple of int
        The shared k axis: the union of every layer's `k_grid` and its number of modes.
    n_modes : dict of layer name to int
        min(out, in) of each layer's weight matrix.
    layers : dict of layer name to KeptModes
        One layer cut at a time, on the k of ``k`` up to its number of modes.
    together : KeptModes
        Every layer at once, indexed by k of the widest layer.
    fraction : tuple of float
        ``together.k`` as a share of the widest layer's modes.
    """

    n_images: int
    full_acc: float
    full_loss: float
    k: tuple[int, ...]
    n_modes: dict[str, int]
    layers: dict[str, KeptModes]
    together: KeptModes
    fraction: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        """The layout of the summary's ``modes`` entry."""
        together = self.together.to_dict()
        return {
            "n_images": self.n_images,
            "full": {"acc": self.full_acc, "loss": self.full_loss},
            "k": list(self.k),
            "layers": {n: {"n_modes": self.n_modes[n], **r.to_dict()} for n, r in self.layers.items()},
            "all": {"k": together.pop("k"), "fraction": list(self.fraction), **together},
        }


def weight_params(model: nn.Module) -> dict[str, str]:
    """``{layer: weight parameter's name}`` of a dsc model's named layers (:func:`named_layers`)."""
    qual = {m: n for n, m in model.named_modules()}
    return {name: f"{qual[m]}.weight" for name, m in named_layers(model).items()}


def mode_sweep(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    points: int,
    seed: int,
    stop: threading.Event | None = None,
    params: Mapping[str, str] | None = None,
) -> ModeSweep:
    """Accuracy and loss as k singular modes are kept: each layer alone, then all together.

    Each layer is evaluated on the union of every layer's `k_grid` (up to its own number of
    modes), so all layers share one k axis; "all" keeps the same fraction of each layer's
    modes (at least one), indexed by k of the layer with the most modes. Random modes are
    drawn with the seed ``[seed, layer index, k]``. Setting ``stop`` raises `Cancelled` at the
    next evaluation.

    Parameters
    ----------
    x : tensor, shape (n, C, H, W); y : int tensor, shape (n,)
    points : values of k per layer (`k_grid`)
    params : mapping, optional
        ``{layer: parameter name}`` of the weights to cut (any model, by ``get_parameter``);
        default: a dsc model's named layers.
    """
    ev = ModeEvaluator(model, x, y, stop=stop, params=params)
    weights = {n: model.get_parameter(p).detach() for n, p in ev.params.items()}
    decs = {n: ModeDecomposition(w.cpu().numpy()) for n, w in weights.items()}
    svds = {n: tuple(torch.from_numpy(a).float() for a in (d.u_, d.s_, d.vt_)) for n, d in decs.items()}
    full_acc, full_loss = ev.score({})

    def cut(i: int, name: str, k: int, mode: str) -> tuple[Hashable, Weight]:
        dec = decs[name]
        return (k, mode), _truncated(dec, svds[name], k, mode, [seed, i, k], weights[name].shape)

    def sweep(ks: list[int], mods_for: Callable[[int, str], Mods]) -> KeptModes:
        curves = {}
        for mode in MODE_CHOICES:
            scores = [ev.score(mods) if (mods := mods_for(k, mode)) else (full_acc, full_loss) for k in ks]
            curves[mode] = ModeCurve(*(tuple(s) for s in zip(*scores)))
        err = full_acc - np.asarray(curves["leading"].acc)  # (1 - acc(k)) - (1 - acc(full))
        dloss = np.asarray(curves["leading"].loss) - full_loss
        return KeptModes(
            tuple(ks),
            curves["leading"],
            curves["random"],
            fit_two_segment_power_law(np.asarray(ks), err),
            fit_two_segment_power_law(np.asarray(ks), dloss),
        )

    union = sorted(set().union(*([*k_grid(d.n_modes, points).tolist(), d.n_modes] for d in decs.values())))
    layers = {}
    for i, (name, dec) in enumerate(decs.items()):

        def alone(k: int, mode: str, i: int = i, name: str = name, n: int = dec.n_modes) -> Mods:
            return {name: cut(i, name, k, mode)} if k < n else {}  # all n modes: the full model's score

        layers[name] = sweep([k for k in union if k <= dec.n_modes], alone)

    widest = max(d.n_modes for d in decs.values())
    ks_all = k_grid(widest, points).tolist()

    def together(k: int, mode: str) -> Mods:
        share = {name: max(1, math.ceil(k / widest * dec.n_modes - 1e-9)) for name, dec in decs.items()}
        return {
            name: cut(i, name, share[name], mode)
            for i, (name, dec) in enumerate(decs.items())
            if share[name] < dec.n_modes
        }

    return ModeSweep(
        n_images=len(y),
        full_acc=full_acc,
        full_loss=full_loss,
        k=tuple(union),
        n_modes={n: d.n_modes for n, d in decs.items()},
        layers=layers,
        together=sweep(ks_all, together),
        fraction=tuple(k / widest for k in ks_all),
    )
