"""What a probe's logits say: loss, accuracy, and each class's recall and true-class probability.

The metric names are those every training run logs with step = epoch (``loss/val``,
``acc/val``, ``acc_class/<name>``, ``prob_class/<name>``), whoever ran the pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.special import log_softmax


def probe_metrics(
    logits: np.ndarray, labels: np.ndarray, classes: Sequence[str], split: str = "val"
) -> dict[str, float]:
    """Mean cross-entropy, accuracy and, per class present, recall and mean true-class probability.

    Parameters
    ----------
    logits : array, shape (n, C)
        The model's outputs before the softmax.
    labels : int array, shape (n,)
        Classes in ``0 .. C-1``.
    classes : sequence of C names
    split : str
        The metric names' suffix (``loss/<split>``, ``acc/<split>``).

    Returns
    -------
    metrics : dict
        ``loss/<split>``, ``acc/<split>``; ``acc_class/<name>`` (the share of the class's images
        predicted as it) and ``prob_class/<name>`` (the mean softmax probability of the true class
        over the class's images: smooth, near 1/C for every class before training) for each class
        with images. Computed in float64.

    Examples
    --------
    >>> m = probe_metrics(np.array([[2.0, 0.0], [0.0, 0.0]]), np.array([0, 1]), ["a", "b"])
    >>> m["acc/val"], m["acc_class/b"], round(m["prob_class/b"], 3)
    (0.5, 0.0, 0.5)
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0] or logits.shape[1] != len(classes):
        raise ValueError(f"logits must be (n, {len(classes)}) for {labels.shape[0]} labels, got {logits.shape}")
    if not len(labels):
        return {}
    logp = log_softmax(logits, axis=1)
    true = logp[np.arange(len(labels)), labels]
    pred = logits.argmax(axis=1)
    out = {f"loss/{split}": float(-true.mean()), f"acc/{split}": float((pred == labels).mean())}
    p_true = np.exp(true)
    for c, name in enumerate(classes):
        mask = labels == c
        if mask.any():
            out[f"acc_class/{name}"] = float((pred[mask] == c).mean())
            out[f"prob_class/{name}"] = float(p_true[mask].mean())
    return out
