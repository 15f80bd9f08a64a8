"""The probe: a fixed set of labelled inputs that the recorder passes through any model each epoch.

A probe is a pair of tensors ``(inputs, labels)`` or an iterable of such pairs (a DataLoader
that does not shuffle). Its pass runs in eval mode under ``no_grad`` on the model's own device,
draws nothing from torch's global generators (they are forked around it), and restores the
model's train flag: the training it watches goes on exactly as without it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from dsc.errors import ConfigError


@dataclass
class Probe:
    """A validated probe: ``labels`` (n,) int64, and either ``inputs`` (n, ...) or ``loader``."""

    labels: np.ndarray
    inputs: torch.Tensor | None = None
    loader: Iterable | None = None
    batch_size: int = 256

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The probe's (inputs, labels) batches, in probe order."""
        if self.inputs is not None:
            for start in range(0, len(self.labels), self.batch_size):
                stop = start + self.batch_size
                yield self.inputs[start:stop], torch.from_numpy(self.labels[start:stop])
            return
        assert self.loader is not None  # a probe has inputs or a loader
        for item in self.loader:
            yield _pair(item)

    def head(self, n: int) -> torch.Tensor:
        """The first ``n`` probe inputs (a batch), for shapes and a logged model's example."""
        if self.inputs is not None:
            return self.inputs[:n]
        assert self.loader is not None  # a probe has inputs or a loader
        return _pair(next(iter(self.loader)))[0][:n]


def _pair(item: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(item, (tuple, list)) or len(item) < 2 or not isinstance(item[0], torch.Tensor):
        raise ConfigError(
            f"probe: each batch must be a pair (inputs, labels) of tensors, got {type(item).__name__}; "
            "pass probe=(x_val, y_val) or a DataLoader yielding such pairs"
        )
    return item[0], _labels(item[1])


def _labels(y: Any) -> torch.Tensor:
    y = torch.as_tensor(y)
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise ConfigError(
            f"probe labels must be integer class indices, got dtype {y.dtype}; "
            "pass y.long() (one-hot labels: y.argmax(1))"
        )
    if y.ndim != 1:
        raise ConfigError(
            f"probe labels must be one class index per input, shape (n,), got {tuple(y.shape)}; "
            "for one-hot labels pass y.argmax(1)"
        )
    return y.long()


def as_probe(probe: Any, batch_size: int = 256) -> Probe:
    """Check a user's probe and read its labels once (a DataLoader is iterated for them).

    Raises
    ------
    ConfigError
        Not a pair or loader of pairs, labels that are not integers, unequal lengths, or an empty probe.
    """
    if isinstance(probe, (tuple, list)) and len(probe) == 2 and isinstance(probe[0], torch.Tensor):
        x, y = probe[0], _labels(probe[1])
        if len(x) != len(y):
            raise ConfigError(f"probe: {len(x)} inputs but {len(y)} labels; pass one label per input")
        out = Probe(y.cpu().numpy().astype(np.int64), inputs=x, batch_size=batch_size)
    elif isinstance(probe, Iterable) and not isinstance(probe, (tuple, list, str, torch.Tensor)):
        labels = [y for _, y in (_pair(b) for b in probe)]
        out = Probe(
            torch.cat(labels).cpu().numpy().astype(np.int64) if labels else np.empty(0, np.int64),
            loader=probe,
            batch_size=batch_size,
        )
    else:
        raise ConfigError(
            f"probe must be a pair (inputs, labels) of tensors or a DataLoader of such pairs, "
            f"got {type(probe).__name__}"
        )
    if not len(out):
        raise ConfigError("probe is empty: give it at least one labelled input per class")
    return out


def model_device(model: nn.Module) -> torch.device:
    """Where the model's parameters (else buffers) live; CPU for a model with neither."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def quiet_pass(model: nn.Module) -> Iterator[torch.device]:
    """Eval mode, no grad, torch's generators forked; the train flag restored after. Yields the device."""
    device = model_device(model)
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    )
    was_training = model.training
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            model.eval()
            yield device
    finally:
        model.train(was_training)


def logits_of(
    model: nn.Module,
    probe: Probe,
    n_classes: int | None = None,
    context: contextlib.AbstractContextManager | None = None,
) -> np.ndarray:
    """The model's outputs on every probe input, float32 (n, C), in probe order.

    ``context`` is entered around the pass (activation capture rides on it). A loader whose
    labels differ from those read first (it shuffles), or outputs that are not (batch, C)
    logits, are one-line errors.
    """
    outs, seen = [], 0
    with quiet_pass(model) as device, context or contextlib.nullcontext():
        for xb, yb in probe.batches():
            out = model(xb.to(device, non_blocking=True))
            check_logits(out, len(xb), n_classes)
            if probe.loader is not None and not np.array_equal(yb.numpy(), probe.labels[seen : seen + len(yb)]):
                raise ConfigError(
                    "probe: the DataLoader gave other labels than on its first pass "
                    "(it shuffles); build it with shuffle=False"
                )
            seen += len(xb)
            outs.append(out.detach().float().cpu())
    if seen != len(probe):
        raise ConfigError(
            f"probe: the DataLoader gave {seen} inputs, {len(probe)} on its first pass; "
            "it must give the same inputs every time"
        )
    return torch.cat(outs).numpy()


def check_logits(out: Any, batch: int, n_classes: int | None) -> None:
    """One line when a model's output is not a (batch, C) tensor of logits."""
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
    if shape is None or len(shape) != 2 or shape[0] != batch or (n_classes and shape[1] != n_classes):
        what = f"shape {shape}" if shape is not None else f"a {type(out).__name__}"
        want = f"({batch}, {n_classes})" if n_classes else f"({batch}, classes)"
        raise ConfigError(
            f"the model's output is {what}, not {want} logits: the recorder reads class scores; "
            "wrap the model so that forward returns logits (e.g. out.logits)"
        )
