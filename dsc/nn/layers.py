"""Which layers of any PyTorch model are recorded, by the names the user knows them by.

A model's layers are its ``named_modules()``, with the prefixes that wrappers add stripped
(``module.`` of DistributedDataParallel and DataParallel, ``_orig_mod.`` of ``torch.compile``),
so that a wrapped model is recorded under the names of the model it wraps.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from dsc.errors import ConfigError
from dsc.nn.probe import quiet_pass

WRAPPERS = {"DistributedDataParallel": "module", "DataParallel": "module", "OptimizedModule": "_orig_mod"}
WRAPPER_ATTRS = ("module", "_orig_mod")  # the prefixes their state dicts and module names add
WEIGHT_TYPES = (nn.Linear, nn.Conv2d)
LayerSpec = None | Sequence[str] | Mapping[str, nn.Module] | Callable[[str, nn.Module], bool]


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel, DataParallel and ``torch.compile`` wrappers."""
    while type(model).__name__ in WRAPPERS:
        model = getattr(model, WRAPPERS[type(model).__name__])
    return model


def leaf_weights(model: nn.Module) -> dict[str, nn.Module]:
    """Every ``Linear`` and ``Conv2d`` of the (unwrapped) model, by name, in registration order."""
    return {n: m for n, m in unwrap(model).named_modules() if isinstance(m, WEIGHT_TYPES) and n}


def resolve_layers(model: nn.Module, layers: LayerSpec = None) -> dict[str, nn.Module]:
    """The modules to record, ``{name: module}``, in the model's registration order.

    Parameters
    ----------
    model : nn.Module
        Wrappers (DDP, DataParallel, ``torch.compile``) are looked through.
    layers : None, list of str, mapping or callable
        None: every ``Linear`` and ``Conv2d`` leaf. A list: ``named_modules()`` names or glob
        patterns (``"layer3.*"``); each must match something. A mapping: the names to record
        under and their modules, as given. A callable ``f(name, module) -> bool``: the modules
        it accepts.

    Raises
    ------
    ConfigError
        A name or pattern that matches nothing (the line lists what there is), or an empty choice.
    """
    inner = unwrap(model)
    if isinstance(layers, Mapping):
        chosen = dict(layers)
    else:
        named = {n: m for n, m in inner.named_modules() if n}
        if layers is None:
            chosen = {n: m for n, m in named.items() if isinstance(m, WEIGHT_TYPES)}
        elif callable(layers):
            chosen = {n: m for n, m in named.items() if layers(n, m)}
        elif isinstance(layers, str):
            raise ConfigError(f"layers={layers!r}: give a list of names or patterns, e.g. [{layers!r}]")
        else:
            chosen = {}
            for pattern in layers:
                hits = {n: m for n, m in named.items() if fnmatch.fnmatchcase(n, _strip(pattern))}
                if not hits:
                    raise ConfigError(
                        f"layers: {pattern!r} matches no module of {type(inner).__name__}; "
                        f"it has {_some(list(named))} (see dsc.list_layers(model))"
                    )
                chosen.update(hits)
            chosen = {n: m for n, m in named.items() if n in chosen}  # model order, each once
    if not chosen:
        raise ConfigError(
            f"no layer of {type(inner).__name__} to record: give layers= names or patterns (see dsc.list_layers(model))"
        )
    return chosen


def _strip(name: str) -> str:
    """A layer name without the prefixes wrappers add."""
    for prefix in (f"{a}." for a in WRAPPER_ATTRS):
        while name.startswith(prefix):
            name = name[len(prefix) :]
    return name


def _some(names: list[str], shown: int = 12) -> str:
    more = f", ... ({len(names)} in all)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more if names else "no named modules"


def output_shapes(model: nn.Module, modules: Mapping[str, nn.Module], example: torch.Tensor) -> dict[str, tuple]:
    """Per-image output shape of each module on one pass of ``example`` (:func:`dsc.nn.probe.quiet_pass`).

    Modules whose output is not a tensor are left out; the model's train flag is restored.
    """
    shapes: dict[str, tuple] = {}

    def keep(name: str):
        def hook(module, inputs, out) -> None:
            if isinstance(out, torch.Tensor) and name not in shapes:
                shapes[name] = tuple(out.shape[1:])

        return hook

    handles = [m.register_forward_hook(keep(n)) for n, m in modules.items()]
    try:
        with quiet_pass(model) as device:
            model(example.to(device))
    finally:
        for h in handles:
            h.remove()
    return shapes


def list_layers(model: nn.Module, example: torch.Tensor | None = None, echo: bool = True) -> list[dict]:
    """The model's modules that can be recorded, with their types and shapes; printed unless ``echo`` is False.

    Parameters
    ----------
    model : nn.Module
    example : tensor, optional
        A batch of inputs (its first image is used): adds each module's output shape per image.

    Returns
    -------
    rows : list of dict
        ``name``, ``type``, ``weight`` (shape or None), ``output`` (per-image shape or None) and
        ``default`` (whether ``layers=None`` records it), in registration order.
    """
    inner = unwrap(model)
    named = {n: m for n, m in inner.named_modules() if n}
    outs = output_shapes(inner, named, example[:1]) if example is not None else {}
    rows = []
    for name, m in named.items():
        w = getattr(m, "weight", None)
        rows.append(
            {
                "name": name,
                "type": type(m).__name__,
                "weight": tuple(w.shape) if isinstance(w, torch.Tensor) else None,
                "output": outs.get(name),
                "default": isinstance(m, WEIGHT_TYPES),
            }
        )
    if echo:
        width = max([len(r["name"]) for r in rows] + [4])
        print(f"{'name':<{width}}  {'type':<18} {'weight':<22} {'output':<18} default")
        for r in rows:
            print(
                f"{r['name']:<{width}}  {r['type']:<18} {_shape(r['weight']):<22} {_shape(r['output']):<18} "
                f"{'yes' if r['default'] else ''}"
            )
    return rows


def _shape(shape: tuple | None) -> str:
    return "-" if shape is None else "x".join(map(str, shape))


def per_image_values(shape: tuple, grid: int | None) -> int:
    """Values one image leaves of a map of per-image ``shape`` pooled to ``grid`` (None: whole)."""
    if len(shape) == 3 and grid is not None and grid < shape[-1]:
        return shape[0] * grid * grid
    return math.prod(shape)
