"""Per-epoch snapshots: probe activations, weight spectra and layer similarity, computed.

A snapshot is computed from plain arrays (activations by layer, weights by layer) by
:func:`compute`, or computed and written as one ``.npz`` per epoch by :func:`record`. The
files and their layout are :mod:`dsc.core.snapshot_files` (re-exported here: :func:`read_dir`
reads them back by epoch, ``dsc.tracking.snapshot.load`` a tracked run's).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from dsc.core.similarity import cka_of_units, same_probes, successive_correlation, unit_gram
from dsc.core.snapshot_files import (
    DEFAULT_OUTPUT,
    EPOCH_FMT,
    METRIC_PREFIX,
    SPECTRAL_KEYS,
    Snapshot,
    Snapshots,
    pack_array,
    read,
    read_dir,
    write,
    write_into,
    write_probe,
)
from dsc.core.spectra import esd, spectrum_of_esd

__all__ = [
    "DEFAULT_OUTPUT",
    "EPOCH_FMT",
    "METRIC_PREFIX",
    "SPECTRAL_KEYS",
    "Snapshot",
    "Snapshots",
    "compute",
    "read",
    "read_dir",
    "record",
    "write",
    "write_probe",
]


def compute(
    epoch: int, activations: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray], threads: int = 2
) -> Snapshot:
    """A snapshot from probe activations (n, ...) and weights by layer.

    Every weight gets a spectrum (``weight_layers``, in ``weights`` order); every activation
    takes part in the CKA table and the successive correlations (``layers``, in
    ``activations`` order). A dsc model records the same layers in both.

    The layers' spectra (largest weights first), the CKA table and the successive
    correlations are computed side by side on ``threads`` threads, each with a one-thread
    BLAS: the eigensolvers and Gram matrices of these sizes gain less from a second BLAS
    thread than from a second task. The eigensolvers release the GIL (:mod:`dsc.core.lapack`),
    so the tasks do overlap. The results do not depend on ``threads``.
    """
    with _workers(threads) as pool:
        return _submit(epoch, activations, weights, pool, {})()


def record(
    epoch: int,
    activations: Mapping[str, np.ndarray],
    weights: Mapping[str, np.ndarray],
    directory: str | os.PathLike,
    threads: int = 2,
) -> tuple[Snapshot, Path]:
    """`compute` then `write`, with the activations deflated beside the spectra and CKA.

    The activations' entries (most of the file) do not wait for the spectra: they are packed
    on the same ``threads`` threads, between the computations, so that the file is ready
    about when the numbers are, sooner than with `compute` then `write` (the snapshot's cost
    in an epoch is the third arm of ``bench/epoch_throughput.py`` on the benchmark page,
    docs/benchmarks.md). The file is byte for byte what `write` makes of the snapshot, except
    for the zip's time stamps.
    """
    with _workers(threads) as pool:
        early: dict[str, Future] = {}
        snap = _submit(epoch, activations, weights, pool, early)()
        return snap, write_into(snap, Path(directory), pool, early)


@contextlib.contextmanager
def _workers(threads: int) -> Iterator[ThreadPoolExecutor]:
    """``threads`` worker threads, each with a one-thread BLAS when there are several."""
    limit = _blas().limit(limits=1, user_api="blas") if threads > 1 else contextlib.nullcontext()
    with limit, ThreadPoolExecutor(max(1, threads)) as pool:
        yield pool


def _submit(
    epoch: int,
    activations: Mapping[str, np.ndarray],
    weights: Mapping[str, np.ndarray],
    pool: ThreadPoolExecutor,
    packed: dict[str, Future] | None,
) -> Callable[[], Snapshot]:
    """Queue a snapshot's computations on ``pool``; returns the function that waits for them.

    With ``packed`` (a dict), the activations' file entries are queued too, into it.
    """
    layers, weight_layers = list(activations), list(weights)

    def spectrum(name: str) -> tuple[np.ndarray, dict]:
        eig = esd(weights[name])  # one decomposition per layer, reused for its scalars
        return eig, spectrum_of_esd(eig, *_esd_shape(weights[name]))

    same_probes({n: activations[n] for n in layers})
    # Largest tasks first, so that the threads finish together: the largest eigensolver, each
    # layer's Gram matrix for the CKA table (rows in ``layers`` order), the second eigensolver,
    # the activations' entries if packed here, then the small rest.
    by_size = sorted(weight_layers, key=lambda n: -weights[n].size)
    jobs = {n: pool.submit(spectrum, n) for n in by_size[:1]}
    grams = [pool.submit(unit_gram, activations[n], n) for n in layers]
    jobs |= {n: pool.submit(spectrum, n) for n in by_size[1:2]}
    if packed is not None:
        packed |= {
            f"act__{n}": pool.submit(pack_array, activations[n])
            for n in sorted(layers, key=lambda n: -activations[n].size)
        }
    jobs |= {n: pool.submit(spectrum, n) for n in by_size[2:]}
    corr = pool.submit(_successive, activations, layers)

    def finish() -> Snapshot:
        done = {n: jobs[n].result() for n in weight_layers}
        cka_table = cka_of_units([g.result() for g in grams])
        eigs, specs = {n: done[n][0] for n in weight_layers}, [done[n][1] for n in weight_layers]
        spectra = {k: np.array([s[k] for s in specs], dtype=np.float64) for k in SPECTRAL_KEYS}
        return Snapshot(
            epoch=epoch,
            layers=layers,
            activations={n: activations[n] for n in layers},
            eigenvalues={n: e.astype(np.float32) for n, e in eigs.items()},
            spectra=spectra,
            phases=[s["phase"] for s in specs],
            cka=cka_table,
            corr=corr.result(),
            weight_layers=weight_layers,
            weight_shapes={n: _esd_shape(weights[n]) for n in weight_layers},
        )

    return finish


@functools.cache
def _blas():
    """threadpoolctl's view of the loaded BLAS libraries (found once: the search reads every library)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _esd_shape(W: np.ndarray) -> tuple[int, int]:
    """(N, M) of the matrices whose ESD :func:`esd` pools: the weight, or one kernel slice."""
    return (W.shape[0], W.shape[1])


def _successive(activations: Mapping[str, np.ndarray], layers: Sequence[str]) -> dict[str, float]:
    """Pearson correlation of each pair of successive layers whose activations share a shape."""
    out: dict[str, float] = {}
    for a, b in itertools.pairwise(layers):
        if activations[a].shape == activations[b].shape:
            out.update(successive_correlation(activations, [a, b]))
    return out
