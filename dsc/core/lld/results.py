"""What a logistic learning decomposition returns: one fit (:class:`LLDResult`), a choice of N (:class:`Selection`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from lmfit.lineshapes import step

from dsc.core.jsonsafe import jsonable

__all__ = ["LLDResult", "Selection", "component_curves"]


@dataclasses.dataclass(frozen=True, eq=False)
class LLDResult:
    """One logistic decomposition of a curve.

    Attributes
    ----------
    n_components : int
        Number N of logistic components asked for; 0 for the constant alone (`select`'s
        baseline).
    direction : str
        ``"rising"`` (amplitudes >= 0) or ``"falling"`` (amplitudes <= 0), resolved from
        ``"auto"``.
    success : bool
        False when no fit was made (flat curve, too few points) or the optimiser failed.
    message : str
        What happened, in words: the fit quality, degenerate components, or why it failed.
    r2 : float
        ``1 - SS_res / SS_tot`` over the finite points; NaN when no fit was made.
    aic, bic : float
        lmfit's Akaike and Bayesian information criteria (``n log(chi2/n) + penalty``, with
        3N + 1 free parameters), from its ``ModelResult``; NaN when no fit was made.
    constant, constant_stderr : float
        The baseline ``c`` and its standard error (NaN when not estimated).
    components : list of dict
        One dict per component, sorted by centre, with keys ``amplitude``, ``center``,
        ``width`` and ``amplitude_stderr``, ``center_stderr``, ``width_stderr`` (NaN when not
        estimated). Units: those of ``y`` for amplitudes, of ``t`` for centres and widths.
    degenerate : tuple of str
        One reason per degenerate component (amplitude below 2% of the range, width at a
        bound, centre outside the data); empty when none.
    t, y : ndarray, shape (n,)
        The finite points used, sorted by ``t``.
    curve : ndarray, shape (n,)
        Fitted values on ``t``; NaN when no fit was made.
    component_curves : ndarray, shape (N, n)
        Each component's curve on ``t`` (constant excluded); shape (0, n) when no fit was made.
    """

    n_components: int
    direction: str
    success: bool
    message: str
    r2: float
    aic: float
    bic: float
    constant: float
    constant_stderr: float
    components: list[dict[str, float]]
    degenerate: tuple[str, ...]
    t: np.ndarray
    y: np.ndarray
    curve: np.ndarray
    component_curves: np.ndarray

    def evaluate(self, t_new: Any) -> np.ndarray:
        """Fitted curve at new points.

        Parameters
        ----------
        t_new : array_like, shape (m,)
            Points at which to evaluate, in the units of ``t``.

        Returns
        -------
        ndarray, shape (m,)
            ``c + sum_i A_i / (1 + exp(-(t - t_i)/w_i))``; all NaN when no fit was made.
        """
        x = np.asarray(t_new, dtype=float)
        if not self.success:
            return np.full(x.shape, np.nan)
        return self.constant + component_curves(x, self.components).sum(axis=0)

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain JSON types: floats, lists, NaN and inf as None."""
        return jsonable({field.name: getattr(self, field.name) for field in dataclasses.fields(self)})


@dataclasses.dataclass(frozen=True, eq=False)
class Selection:
    """Fits with N = 0..K components and the N chosen by BIC.

    Attributes
    ----------
    n : int
        The chosen number of components; 0 when the constant alone wins (no learning process).
    best : LLDResult
        ``fits[n]``, or ``baseline`` when ``n == 0`` (its ``components`` are ``[]``).
    fits : dict of int to LLDResult
        Every logistic fit, keyed by N = 1..K.
    reason : str
        Why ``n`` was chosen, in words.
    baseline : LLDResult or None
        The N = 0 fit, the constant alone (``success=False`` for a curve of zero variance or
        under two points).
    """

    n: int
    best: LLDResult
    fits: dict[int, LLDResult]
    reason: str
    baseline: LLDResult | None = None

    @property
    def no_process(self) -> bool:
        """True when the constant alone was chosen: the curve has no learning process."""
        return self.n == 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary: ``n``, ``reason``, ``best``, the baseline and every fit (keys as str)."""
        return {
            "n": self.n,
            "reason": self.reason,
            "best": self.best.to_dict(),
            "baseline": None if self.baseline is None else self.baseline.to_dict(),
            "fits": {str(k): v.to_dict() for k, v in self.fits.items()},
        }


def component_curves(t: np.ndarray, components: list[dict[str, float]]) -> np.ndarray:
    """Each component's curve on t, shape (N, len(t)), by lmfit's own logistic step."""
    with np.errstate(over="ignore"):
        rows = [
            step(t, amplitude=c["amplitude"], center=c["center"], sigma=c["width"], form="logistic") for c in components
        ]
    return np.array(rows, dtype=float).reshape(len(components), t.size)
