"""Logistic learning decomposition (LLD): a learning curve as a sum of logistic processes.

`decompose` fits one curve (:func:`fit` for one N, :func:`select` for N chosen by BIC),
`results` holds what they return, `search` is the fast multi-start search behind them, `model`
lmfit's model of record and the final fit, and `batch` fits many curves in worker processes.
"""

from dsc.core.lld.decompose import DIRECTIONS, MIN_AMPLITUDE_FRACTION, fit, select
from dsc.core.lld.results import LLDResult, Selection

__all__ = ["DIRECTIONS", "MIN_AMPLITUDE_FRACTION", "LLDResult", "Selection", "fit", "select"]
