"""What a rank correlation test over n runs can detect: the smallest Spearman rho at a given power.

Spearman's rho is tested through Fisher's z: ``atanh(rho)`` is close to normal with standard
error ``1.06 / sqrt(n - 3)`` (Fieller, Hartley & Pearson 1957; the 1.06 is Spearman's
inflation over Pearson's ``1 / sqrt(n - 3)``). A two-sided test at level ``alpha`` detects a
true rho with probability ``power`` when ``atanh(rho) >= (z_{1-alpha/2} + z_power) * se``.
"""

from __future__ import annotations

import math

from scipy import stats

SPEARMAN_SE = 1.06  # Fieller, Hartley & Pearson's factor on 1 / sqrt(n - 3)

__all__ = ["SPEARMAN_SE", "detectable_rho"]


def detectable_rho(n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest |rho| that a two-sided Spearman test over ``n`` runs detects at ``power``.

    Parameters
    ----------
    n : runs in the test; NaN for fewer than 4 (the approximation needs n > 3).
    alpha : two-sided level.
    power : probability of rejecting at that rho.

    Examples
    --------
    >>> round(detectable_rho(40), 2)
    0.45
    """
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"alpha and power must lie in (0, 1), got {alpha!r} and {power!r}")
    if n < 4:
        return math.nan
    z = (stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * SPEARMAN_SE / math.sqrt(n - 3)
    return math.tanh(z)
