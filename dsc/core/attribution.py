"""Which classes make each learning process: per-class decompositions and their attribution.

Each class's validation recall curve is decomposed by `dsc.core.lld.select` like the overall
curve. A class's **main rise** is the component of its chosen fit with the largest amplitude
(none when it selects N = 0, no fit succeeds, or that component's centre lies outside the
data, which says nothing about when the class rose; a rise sharper than one epoch, a width at
its lower bound, still has a well-placed centre). Attribution rule: a class makes the overall
component whose centre its main rise's centre lies within ``TOLERANCE`` widths of, the width
being the larger of the component's and the class's own (a sharp overall step still takes a
class whose noisier curve gives a broader rise); where several qualify, the nearest centre
wins. A component no class falls within is a process of no single class (the paper's
"back-fill"); a class that falls within none is reported as unattributed.

The overall accuracy is the class-weighted mean of the per-class recalls, with weights the
classes' shares of the validation images; `attribute` reports how well the same weighted sum
of the per-class *fitted* curves reproduces the overall curve (R^2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from dsc.core import lld

TOLERANCE = 2.0  # widths: a logistic rises from 12% to 88% within two widths of its centre


@dataclass(frozen=True)
class Attribution:
    """The overall components and the classes that make each.

    Attributes
    ----------
    classes : class names, in the order of ``weights``
    selections : class name -> its `lld.Selection`
    main : class name -> its main rise (a component dict: amplitude, center, width, ...) or None
    components : the overall curve's chosen components (dicts, by centre)
    members : one list of class names per overall component
    unattributed : classes learned (N >= 1) but with a main rise inside no component, or none
        resolved (a centre outside the data)
    weights : class name -> weight in the overall curve
    t, y : (n,) the overall curve's finite points
    reconstruction : (n,) the weighted sum of the per-class fitted curves on ``t``
    r2 : R^2 of ``reconstruction`` against ``y``; NaN when a class has no fitted curve
    identity_r2 : R^2 of the weighted sum of the raw per-class curves (1 when the weights and
        curves are those behind the overall one)
    """

    classes: list[str]
    selections: dict[str, lld.Selection]
    main: dict[str, dict[str, float] | None]
    components: list[dict[str, float]]
    members: list[list[str]]
    unattributed: list[str]
    weights: dict[str, float]
    t: np.ndarray
    y: np.ndarray
    reconstruction: np.ndarray
    r2: float
    identity_r2: float

    def component_of(self, name: str) -> int | None:
        """Index of the overall component class ``name`` makes, or None."""
        return next((k for k, m in enumerate(self.members) if name in m), None)


def main_rise(selection: lld.Selection) -> dict[str, float] | None:
    """The chosen fit's largest-amplitude component, or None (N = 0, no fit, or a centre outside the data)."""
    best = selection.best
    if not best.success or not best.components:
        return None
    rise = max(best.components, key=lambda c: abs(c["amplitude"]))
    return rise if best.t[0] <= rise["center"] <= best.t[-1] else None


def assign(rise: dict[str, float], components: list[dict[str, float]], tolerance: float = TOLERANCE) -> int | None:
    """Index of the component ``rise`` falls within (the rule above), or None."""
    best, where = np.inf, None
    for k, comp in enumerate(components):
        gap = abs(rise["center"] - comp["center"])
        if gap <= tolerance * max(comp["width"], rise["width"]) and gap < best:
            best, where = gap, k
    return where


def r_squared(y: np.ndarray, fitted: np.ndarray) -> float:
    """1 - SS_res / SS_tot, NaN when ``fitted`` has a non-finite value or y is constant."""
    y, fitted = np.asarray(y, dtype=float), np.asarray(fitted, dtype=float)
    total = float(np.sum((y - y.mean()) ** 2)) if y.size else 0.0
    if not np.isfinite(fitted).all() or total <= 0:
        return float("nan")
    return 1.0 - float(np.sum((y - fitted) ** 2)) / total


def attribute(
    overall: lld.Selection,
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    weights: Mapping[str, float],
    max_components: int = 3,
    tolerance: float = TOLERANCE,
) -> Attribution:
    """Decompose each class's curve and attribute the overall components to classes.

    Parameters
    ----------
    overall : the overall curve's `lld.select` result
    curves : class name -> (epochs (n_c,), recall (n_c,))
    weights : class name -> weight (normalised here to sum to 1)
    max_components : K of each per-class `lld.select`
    tolerance : widths, see the module docstring
    """
    classes = list(curves)
    total = sum(weights[c] for c in classes)
    if not classes or total <= 0:
        raise ValueError(f"need at least one class curve and positive weights, got {dict(weights)}")
    w = {c: float(weights[c]) / total for c in classes}
    selections = {c: lld.select(*curves[c], max_components=max_components) for c in classes}
    main = {c: main_rise(s) for c, s in selections.items()}
    components = list(overall.best.components) if overall.best.success else []
    members: list[list[str]] = [[] for _ in components]
    unattributed = []
    for c in classes:
        rise = main[c]
        where = assign(rise, components, tolerance) if rise is not None else None
        if where is None:
            unattributed += [c] if selections[c].n > 0 and selections[c].best.success else []
        else:
            members[where].append(c)
    t, y = overall.best.t, overall.best.y
    recon = np.asarray(sum(w[c] * selections[c].best.evaluate(t) for c in classes), dtype=float)
    raw = sum(w[c] * np.interp(t, *_sorted(*curves[c]), left=np.nan, right=np.nan) for c in classes)
    return Attribution(
        classes,
        selections,
        main,
        components,
        members,
        unattributed,
        w,
        t,
        y,
        recon,
        r_squared(y, recon),
        r_squared(y, raw),
    )


def _sorted(t: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t, y = np.asarray(t, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(t) & np.isfinite(y)
    order = np.argsort(t[keep], kind="stable")
    return t[keep][order], y[keep][order]


__all__ = ["TOLERANCE", "Attribution", "assign", "attribute", "main_rise", "r_squared"]
