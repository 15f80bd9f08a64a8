"""When each class is learned: by behaviour (its validation recall) and by representation
(a linear probe of each layer).

Two rules, one per reading of "a class emerges":

- **Behaviour** (`behavioural_emergence`): a class emerges at the first epoch from which its
  validation recall stays above halfway between chance (1/C) and its final value for
  ``patience`` epochs (or up to the last epoch). Halfway is the level a logistic rise
  crosses at its centre, and the final value is the run's own ceiling for that class, so the
  rule needs no absolute threshold. A class whose final recall is below halfway between chance
  and 1 is not learned and has no epoch; one whose final recall is >= 0.9 always has one (its
  last epoch is above the level, and a window that reaches the end of the run counts).
- **Representation** (`probe_scores`, `representational_emergence`): at each snapshot a
  cross-validated one-vs-rest linear probe (scikit-learn's ``RidgeClassifierCV``, one ridge
  regression onto each class's +-1 indicator, with its exact leave-one-out decisions) reads
  the class from the layer's probe activations, reduced by PCA to a few dozen whitened
  components. A class's score is the
  smallest, over the other classes, of the ROC AUC with which its out-of-fold decision ranks
  its own images above that class's: 1 once it is linearly apart from every other class, 0.5
  while it is mixed with one of them (the one-vs-rest AUC would credit a class already apart
  from some classes). The class emerges in the layer at the first snapshot from which the
  score stays, for ``patience`` snapshots, above its first-snapshot (epoch 0) value by at
  least ``gain`` of that value's gap to 1: a random network already separates some classes
  from pixels alone, so only what training adds counts.

Why these choices: PCA fitted on all probe images uses no label (no leak into the held-out
image) and keeps the probe's cost independent of the layer's width; whitening makes the ridge
penalty mean the same in every layer and epoch; leave-one-out is a fold split that is fixed by
construction (no seed, the same in every layer and epoch, so a change between snapshots is the
representation's), and ridge regression has it in closed form, one fit per snapshot. With
p > n an unreduced probe would separate the classes at random initialisation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import RidgeClassifierCV

LEARNED_FRACTION = 0.5  # a class is learned once its final recall is halfway from chance to 1
PROBE_ALPHA = 1.0  # ridge penalty on whitened components: light next to n ~ hundreds of images
# Two power iterations give the leading subspace to well within what a probe can tell apart,
# at a third of the cost of scikit-learn's default seven.
PCA_POWER_ITERATIONS = 2
MIN_PROBE_IMAGES = 2  # a class needs an image besides the one held out


@dataclass(frozen=True)
class Behaviour:
    """Behavioural emergence of each class; dicts keyed by class name.

    Attributes
    ----------
    chance : 1 / C
    patience : epochs the recall must stay above the level
    final, level : the last recall and halfway between chance and it (NaN without a curve)
    epochs : the emergence epoch, or None (not learned, or no curve)
    notes : why a class has no epoch, in words
    """

    chance: float
    patience: int
    final: dict[str, float]
    level: dict[str, float]
    epochs: dict[str, int | None]
    notes: dict[str, str]


@dataclass(frozen=True)
class Representation:
    """Representational emergence of each class in one layer.

    Attributes
    ----------
    layer : the layer's name
    epochs : (E,) snapshot epochs
    scores : (E, C) the probe's worst pairwise AUC per class, NaN for a class without probe images
    start, level : (C,) the first snapshot's score and the level to reach
    emergence : class name -> epoch, or None (never, or no probe images)
    """

    layer: str
    epochs: np.ndarray
    scores: np.ndarray
    start: np.ndarray
    level: np.ndarray
    emergence: dict[str, int | None]


def first_sustained(above: np.ndarray, patience: int) -> np.ndarray:
    """Per column of ``above`` (E, C), the first row from which it stays True for ``patience``
    rows, or to the last row when fewer remain; -1 where there is none. Shape (C,)."""
    above = np.asarray(above, dtype=bool)
    rows = len(above)
    run = np.zeros((rows + 1, above.shape[1]), dtype=int)  # True rows in a row from each row on
    for i in range(rows - 1, -1, -1):
        run[i] = (run[i + 1] + 1) * above[i]
    needed = np.minimum(patience, rows - np.arange(rows))[:, None]
    ok = run[:rows] >= needed
    return np.where(ok.any(axis=0), ok.argmax(axis=0), -1)


def behavioural_emergence(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], classes: Sequence[str], patience: int = 3
) -> Behaviour:
    """First epoch each class's recall stays above halfway from chance to its final value.

    Parameters
    ----------
    curves : class name -> (epochs (n,), recall (n,)); non-finite points are dropped. A class
        missing here has no epoch.
    classes : every class name, C >= 2 (chance is 1/C)
    patience : int >= 1

    Raises
    ------
    ValueError
        For fewer than two classes or a patience below 1.
    """
    if len(classes) < 2:
        raise ValueError(f"class emergence needs at least 2 classes, got {list(classes)}")
    if isinstance(patience, bool) or not isinstance(patience, (int, np.integer)) or patience < 1:
        raise ValueError(f"patience must be an int >= 1, got {patience!r}")
    chance = 1.0 / len(classes)
    bar = chance + LEARNED_FRACTION * (1 - chance)
    final: dict[str, float] = {}
    level: dict[str, float] = {}
    epochs: dict[str, int | None] = {}
    notes: dict[str, str] = {}
    no_curve: tuple[list[float], list[float]] = ([], [])
    for name in classes:
        t, y = (np.asarray(v, dtype=float) for v in curves.get(name, no_curve))
        keep = np.isfinite(t) & np.isfinite(y)
        t, y = t[keep], y[keep]
        order = np.argsort(t, kind="stable")
        t, y = t[order], y[order]
        if not y.size:
            final[name], level[name], epochs[name] = np.nan, np.nan, None
            notes[name] = "no validation recall curve"
            continue
        final[name] = float(y[-1])
        level[name] = (chance + final[name]) / 2
        if final[name] < bar:
            epochs[name] = None
            notes[name] = f"never learned: final recall {final[name]:.2f} < {bar:.2f} (halfway from chance to 1)"
            continue
        first = first_sustained((y > level[name])[:, None], patience)[0]
        epochs[name] = int(t[first])
    return Behaviour(chance, int(patience), final, level, epochs, notes)


def probe_rows(labels: np.ndarray) -> np.ndarray:
    """Positions (m,) of the probe images that take part: those of classes with at least
    MIN_PROBE_IMAGES images; empty when fewer than two classes qualify."""
    labels = np.asarray(labels)
    counts = np.bincount(labels) if labels.size else np.zeros(0, int)
    usable = np.flatnonzero(counts >= MIN_PROBE_IMAGES)
    return np.flatnonzero(np.isin(labels, usable)) if usable.size >= 2 else np.zeros(0, int)


def pairwise_auc(decision: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Per class c, the smallest over classes d != c of the ROC AUC of ``decision[:, c]``
    between c's images (positive) and d's; ties count one half. NaN for a class without images.

    ``decision`` is (n, C) and ``labels`` (n,). The pairs are few and small, so the AUC is
    counted directly instead of through ``sklearn.metrics.roc_auc_score`` (a test checks one
    against the other).
    """
    out = np.full(n_classes, np.nan)
    for c in range(n_classes):
        pos = decision[labels == c, c]
        if not pos.size:
            continue
        aucs = []
        for d in range(n_classes):
            neg = decision[labels == d, c]
            if d != c and neg.size:
                diff = pos[:, None] - neg[None, :]
                aucs.append((diff > 0).mean() + 0.5 * (diff == 0).mean())
        out[c] = min(aucs) if aucs else np.nan
    return out


def probe_scores(
    acts: np.ndarray, labels: np.ndarray, n_classes: int, n_components: int = 32, seed: int = 0
) -> np.ndarray:
    """The probe's per-class score at each epoch (see the module docstring).

    Parameters
    ----------
    acts : array, shape (E, n, ...)
        One layer's probe activations at each snapshot (trailing dimensions are units).
    labels : int array, shape (n,), in 0..n_classes-1
    n_classes : C
    n_components : PCA components kept (fewer when the layer or the probe set is smaller)
    seed : seeds the randomized PCA

    Returns
    -------
    ndarray, shape (E, C)
        Worst pairwise AUC per class; NaN for a class with fewer than MIN_PROBE_IMAGES images,
        0.5 for every class of an epoch whose activations are constant.
    """
    labels = np.asarray(labels)
    rows = probe_rows(labels)
    scores = np.full((len(acts), n_classes), np.nan)
    if not rows.size:
        return scores
    y = labels[rows]
    present = np.unique(y)
    for e, x in enumerate(acts):
        x = np.asarray(x, dtype=np.float32).reshape(len(labels), -1)[rows]
        if not np.ptp(x, axis=0).any():  # a constant layer tells no class apart
            scores[e, present] = 0.5
            continue
        k = min(n_components, x.shape[1], len(rows) - 1)
        pca = PCA(k, svd_solver="randomized", iterated_power=PCA_POWER_ITERATIONS, random_state=seed)
        z = pca.fit_transform(x)
        sd = z.std(axis=0)
        keep = sd > 1e-6 * sd.max()
        # A scorer makes scikit-learn keep the leave-one-out decisions (not their errors).
        probe = RidgeClassifierCV(alphas=[PROBE_ALPHA], scoring="accuracy", store_cv_results=True)
        loo = probe.fit(z[:, keep] / sd[keep], y).cv_results_[..., 0]  # (m, C) or (m, 1)
        if loo.shape[1] == 1:  # two classes: one decision, positive for the second
            loo = np.hstack([-loo, loo])
        full = np.full((len(y), n_classes), np.nan)
        full[:, present] = loo
        scores[e] = pairwise_auc(full, y, n_classes)
    return scores


def representational_emergence(
    layer: str, epochs: Sequence[int], scores: np.ndarray, classes: Sequence[str], gain: float = 0.5, patience: int = 3
) -> Representation:
    """Emergence epochs from `probe_scores` (E, C) at the snapshot ``epochs`` (E,).

    A class emerges at the first snapshot from which its score stays above
    ``start + gain * (1 - start)`` (and above ``start``) for ``patience`` snapshots or to the
    last one; ``start`` is its score at the first snapshot.
    """
    if not 0 < gain <= 1:
        raise ValueError(f"gain must be in (0, 1], got {gain!r}")
    scores = np.asarray(scores, dtype=float)
    at = np.asarray(epochs)
    start = scores[0] if len(scores) else np.full(len(classes), np.nan)
    level = start + gain * (1 - start)
    with np.errstate(invalid="ignore"):
        above = (scores >= level) & (scores > start)
    first = first_sustained(above, patience) if len(scores) else np.full(len(classes), -1)
    when = {name: (int(at[i]) if i >= 0 else None) for name, i in zip(classes, first)}
    return Representation(layer, at, scores, start, level, when)


__all__ = [
    "Behaviour",
    "Representation",
    "behavioural_emergence",
    "first_sustained",
    "pairwise_auc",
    "probe_rows",
    "probe_scores",
    "representational_emergence",
]
