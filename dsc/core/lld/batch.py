"""Logistic learning decompositions of many curves at once, in worker processes.

Each curve is fitted with N = 1..K logistic components by :func:`dsc.core.lld.select` (N
chosen by BIC) and summarised as plain, picklable types, so that fits travel between processes
and need nothing but NumPy to read. :func:`fit_stream` consumes its curves lazily and yields
each fit as it finishes, so that a caller can read curves and use results while later chunks
fit.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import numpy as np

from dsc.core import lld

# Starting the pool costs about as much as fitting a curve: it and the pipeline only pay off
# beyond a handful of curves.
MIN_PARALLEL_RUNS = 4
MAX_CHUNK = 8  # small chunks: results come back (and are used) while later chunks fit


def fit_curve(t: np.ndarray, y: np.ndarray, max_components: int) -> dict[str, Any]:
    """Fits with N = 1..max_components to one curve, as plain types (picklable, no MLflow).

    Parameters
    ----------
    t, y : ndarray, shape (n,)
        Epochs and metric values; non-finite points are dropped by :func:`dsc.core.lld.select`.
    max_components : int

    Returns
    -------
    dict
        ``n`` (chosen N), ``reason``, ``fits`` (one dict per N = 1..K: ``n_components``,
        ``success``, ``message``, ``n_points``, ``r2``, ``aic``, ``bic``, ``constant``,
        ``constant_stderr``, ``components`` (list of dicts), ``degenerate``) and ``curve``:
        the chosen fit's ``t``, ``y``, ``curve`` (n,), ``component_curves`` (N, n), ``constant``
        and ``r2``, for plotting.
    """
    sel = lld.select(t, y, max_components)
    best = sel.best
    return {
        "n": sel.n,
        "reason": sel.reason,
        "fits": [_summary(sel.fits[n]) for n in range(1, max_components + 1)],
        "curve": {
            "t": best.t,
            "y": best.y,
            "curve": best.curve,
            "component_curves": best.component_curves,
            "constant": best.constant,
            "r2": best.r2,
        },
    }


def _summary(res: lld.LLDResult) -> dict[str, Any]:
    return {
        "n_components": res.n_components,
        "success": res.success,
        "message": res.message,
        "n_points": int(res.t.size),
        "r2": res.r2,
        "aic": res.aic,
        "bic": res.bic,
        "constant": res.constant,
        "constant_stderr": res.constant_stderr,
        "components": [dict(c) for c in res.components],
        "degenerate": list(res.degenerate),
    }


def _fit_chunk(
    chunk: list[tuple[int, np.ndarray, np.ndarray]], max_components: int
) -> list[tuple[int, dict[str, Any]]]:
    """Worker task: ``(index, t, y)`` in, ``(index, fit_curve(...))`` out."""
    return [(i, fit_curve(t, y, max_components)) for i, t, y in chunk]


def fit_curves(
    curves: Sequence[tuple[np.ndarray, np.ndarray]], max_components: int = 3, jobs: int = 0
) -> list[dict[str, Any]]:
    """:func:`fit_curve` over many curves, in ``jobs`` processes (0: every CPU).

    Parameters
    ----------
    curves : ``(t, y)`` pairs, each two arrays of shape (n_i,).
    max_components : K, the most logistic components fitted to a curve.
    jobs : worker processes; 0 for every CPU, 1 for none (fits in this process).

    Returns
    -------
    list of :func:`fit_curve` results, in the order of ``curves``.
    """
    out: list[dict[str, Any]] = [{}] * len(curves)
    indexed = ((i, t, y) for i, (t, y) in enumerate(curves))
    with workers(jobs, len(curves)) as pool:
        for i, fit in fit_stream(indexed, len(curves), max_components, pool):
            out[i] = fit
    return out


@contextlib.contextmanager
def workers(jobs: int, n: int) -> Iterator[ProcessPoolExecutor | None]:
    """A pool of ``jobs`` processes (0: every CPU, at most ``n``) for ``n`` curves.

    Yields None where fitting in this process is as fast: one process, or a handful of curves.
    The pool is shut down on leaving, its pending tasks cancelled.
    """
    size = min(cpu_count() if jobs == 0 else jobs, n)
    if size <= 1 or n < MIN_PARALLEL_RUNS:
        yield None
        return
    pool = ProcessPoolExecutor(max_workers=size)
    try:
        yield pool
    finally:
        pool.shutdown(cancel_futures=True)


def fit_stream(
    curves: Iterable[tuple[int, np.ndarray, np.ndarray]], n: int, max_components: int, pool: ProcessPoolExecutor | None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(index, fit)`` as fits finish, in no fixed order.

    ``curves`` holds ``(index, t, y)`` with ``t`` and ``y`` of shape (n_i,), ``n`` of them;
    it is consumed lazily, a chunk at a time, so reading a curve overlaps earlier fits.
    Without a pool, the curves are fitted here, in order.
    """
    if pool is None:
        for i, t, y in curves:
            yield i, fit_curve(t, y, max_components)
        return
    size = max(1, min(MAX_CHUNK, n // 16))
    rest = iter(curves)
    chunks = iter(lambda: list(itertools.islice(rest, size)), [])
    futures = [pool.submit(_fit_chunk, chunk, max_components) for chunk in chunks]
    for future in as_completed(futures):
        yield from future.result()


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
