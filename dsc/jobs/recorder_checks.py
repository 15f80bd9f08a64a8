"""The Recorder's checks of what a user gives it: counts, class names, labels and metrics.

Each wrong value is one :class:`~dsc.errors.ConfigError` line saying what to give instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from dsc.errors import ConfigError, TrainingDiverged

__all__ = ["check_counts", "class_names", "user_metrics"]


def check_counts(**values: int | None) -> None:
    """Each keyword a whole number >= 1 (>= 0 for the two periods; None allowed where it means 'all')."""
    for name, value in values.items():
        allowed_zero = name in ("snapshot_every", "checkpoint_every")
        if value is None and name in ("probe_size", "grid", "epochs"):
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < (0 if allowed_zero else 1):
            low = 0 if allowed_zero else 1
            raise ConfigError(f"{name}={value!r}: give a whole number >= {low}")


def class_names(names: list[str] | None, n_out: int, labels: np.ndarray) -> list[str]:
    """The class names, one per logit (``0..C-1`` when None), with the probe's labels checked against them."""
    names = [str(i) for i in range(n_out)] if names is None else [str(n) for n in names]
    if len(names) != n_out:
        raise ConfigError(
            f"class_names has {len(names)} names but the model gives {n_out} logits; give one name per output"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"class_names repeat a name ({names}); give each class its own")
    bad = labels[(labels < 0) | (labels >= n_out)]
    if bad.size:
        raise ConfigError(
            f"probe labels must lie in 0..{n_out - 1} (the model gives {n_out} logits), found {int(bad[0])}"
        )
    if len(np.unique(labels)) < 2:
        raise ConfigError("the probe holds one class only; give it images of at least two classes")
    return names


def user_metrics(metrics: Mapping[str, float], epoch: int) -> dict[str, float]:
    """The user's metrics as floats; a non-finite ``loss*`` is a diverged run."""
    out = {}
    for key, value in metrics.items():
        try:
            v = float(value.item() if hasattr(value, "item") else value)
        except (TypeError, ValueError):
            raise ConfigError(f"metric {key!r} at epoch {epoch} is {type(value).__name__}, not a number") from None
        if not math.isfinite(v) and key.startswith("loss"):
            raise TrainingDiverged(f"{key} is {v} at epoch {epoch}: training diverged; lower the learning rate")
        out[key] = v
    return out
