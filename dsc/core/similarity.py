"""How alike the representations of two layers are, over a fixed set of probe inputs.

- `linear_cka`, `cka_matrix`: linear centred kernel alignment (Kornblith et al. 2019), invariant
  to orthogonal transforms and isotropic scaling of either layer's units; `unit_gram` and
  `cka_of_units` are `cka_matrix`'s two halves (`same_probes` its check on the layers), for
  callers that build the layers' Gram matrices side by side.
- `successive_correlation`, `pearson`: the paper's Fig. 17 measure, the Pearson correlation
  between the activations of successive layers of the same shape, over all probes and units.

Activations come as arrays of shape (n, ...) with one row per probe input; trailing dimensions
are flattened into units. Everything accumulates in float64, so float16 snapshots are fine.
Degenerate inputs (a layer constant over the probes) give NaN, never an exception.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np

# Columns (units) cast to float64 at a time: bounds the copy of a wide conv map to ~n * 4096.
_COL_BLOCK = 4096
# Elements per chunk of the Pearson sums (8 MB of float64).
_PEARSON_CHUNK = 1 << 20
# A centred layer whose norm is below this fraction of its raw norm is constant.
_DEGENERATE_RTOL = 1e-12


def linear_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Linear CKA between two representations of the same n probes.

    ``CKA = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)`` on column-centred X and Y. The
    sample-space form ``<K, L>_F / (||K||_F ||L||_F)`` with Gram matrices ``K = X X^T``,
    ``L = Y Y^T`` gives the same number; the cheaper of the two is used (the Gram form when
    units outnumber probes, as for conv maps of 49152 units over ~600 probes).

    Parameters
    ----------
    X : array, shape (n, p1) or (n, ...)
    Y : array, shape (n, p2) or (n, ...)

    Returns
    -------
    float
        In [0, 1]; NaN when either layer is constant over the probes.

    Examples
    --------
    >>> X = np.random.default_rng(0).standard_normal((50, 8))
    >>> round(linear_cka(X, 3.0 * X), 12)
    1.0
    """
    X, Y = _as_rows(X, "X"), _as_rows(Y, "Y")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X and Y must hold the same probes (rows), got {X.shape[0]} and {Y.shape[0]}")
    n, p1, p2 = X.shape[0], X.shape[1], Y.shape[1]
    if n * n * (p1 + p2) <= n * (p1 * p2 + p1 * p1 + p2 * p2):
        return _gram_cka(_centred_gram(X), _centred_gram(Y))
    Xc, Yc = _centred(X), _centred(Y)
    if Xc is None or Yc is None:
        return np.nan
    cross = np.linalg.norm(Yc.T @ Xc) ** 2
    return float(cross / (np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc)))


def cka_matrix(acts: Mapping[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    """Linear CKA between every pair of layers.

    Each layer's centred Gram matrix (n x n) is computed once and scaled to unit Frobenius
    norm (`unit_gram`); the L x L table is then one product of the stacked matrices
    (`cka_of_units`).

    Parameters
    ----------
    acts : mapping of str to array, shape (n, ...)
        Activations of each layer over the same n probes, in the order wanted.

    Returns
    -------
    names : list of str, length L
    cka : float64 array, shape (L, L)
        Symmetric, 1 on the diagonal; NaN in the row and column of a constant layer.
    """
    names = list(acts)
    if not names:
        raise ValueError("acts is empty: give at least one layer's activations")
    rows = {name: _as_rows(a, name) for name, a in acts.items()}
    same_probes(rows)
    return names, cka_of_units([_unit(rows[name]) for name in names])


def same_probes(acts: Mapping[str, np.ndarray]) -> None:
    """Raise ValueError unless every layer's activations hold the same number of probes (rows)."""
    sizes = {name: len(a) for name, a in acts.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"every layer must hold the same probes (rows), got {sizes}")


def unit_gram(a: np.ndarray, name: str = "activations") -> np.ndarray | None:
    """The centred Gram matrix (n x n, float64) of one layer's activations (n, ...), of unit
    Frobenius norm; None when the layer is constant over the probes."""
    return _unit(_as_rows(a, name))


def _unit(rows: np.ndarray) -> np.ndarray | None:
    """`unit_gram` of activations already checked and viewed as (n, p) by `_as_rows`."""
    K = _centred_gram(rows)
    if K is None:
        return None
    norm = np.linalg.norm(K)
    if not norm > 0:
        return None
    K /= norm
    return K


def cka_of_units(units: Sequence[np.ndarray | None]) -> np.ndarray:
    """The (L, L) linear CKA table of L layers from their `unit_gram` matrices (NaN for None).

    The inner products of every pair are one matrix product of the stacked, flattened Gram
    matrices, instead of L^2 / 2 passes over n^2 entries each.
    """
    out = np.full((len(units), len(units)), np.nan)
    live = [i for i, u in enumerate(units) if u is not None]
    if live:
        stacked = np.stack([u.ravel() for u in units if u is not None])  # the rows of ``live``
        out[np.ix_(live, live)] = stacked @ stacked.T
        out[live, live] = 1.0  # exactly: each unit matrix against itself
    return out


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation between all the values of two arrays of the same size.

    Two passes (means, then centred sums) over chunks in float64: exact for float16 input and
    no full float64 copy of a large activation tensor.

    Parameters
    ----------
    a, b : array, any shapes of equal size
        Flattened in C order.

    Returns
    -------
    float
        In [-1, 1]; NaN when either array is constant.
    """
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if a.size != b.size:
        raise ValueError(f"a and b must have the same size, got {a.size} and {b.size}")
    if a.size < 2:
        return np.nan
    mean_a, mean_b = a.mean(dtype=np.float64), b.mean(dtype=np.float64)
    saa = sbb = sab = 0.0
    for start in range(0, a.size, _PEARSON_CHUNK):
        da = a[start : start + _PEARSON_CHUNK].astype(np.float64) - mean_a
        db = b[start : start + _PEARSON_CHUNK].astype(np.float64) - mean_b
        saa += float(da @ da)
        sbb += float(db @ db)
        sab += float(da @ db)
    # A constant array leaves only the rounding of its mean in saa (~1e-32 * size * mean^2).
    floor = _DEGENERATE_RTOL**2 * a.size
    if saa <= floor * mean_a**2 or sbb <= floor * mean_b**2 or saa == 0.0 or sbb == 0.0:
        return np.nan
    return float(np.clip(sab / np.sqrt(saa * sbb), -1.0, 1.0))


def successive_correlation(acts: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, float]:
    """Pearson correlation between each layer's activations and the next one's (Fig. 17).

    Parameters
    ----------
    acts : mapping of str to array, shape (n, ...)
        Activations over the same probes; successive layers must have the same shape (the
        paper's conv1..conv5 maps are all 3 x 128 x 128).
    names : sequence of str, length L
        The layers, in network order.

    Returns
    -------
    dict
        ``"conv1-conv2" -> r`` for each of the L - 1 successive pairs, in order.
    """
    missing = [name for name in names if name not in acts]
    if missing:
        raise ValueError(f"no activations for {missing}; available: {sorted(acts)}")
    out = {}
    for first, second in itertools.pairwise(names):
        a, b = np.asarray(acts[first]), np.asarray(acts[second])
        if a.shape != b.shape:
            raise ValueError(
                f"successive layers must have the same shape to be correlated unit by unit: "
                f"{first} {a.shape} vs {second} {b.shape}"
            )
        out[f"{first}-{second}"] = pearson(a, b)
    return out


def _as_rows(a: np.ndarray, name: str) -> np.ndarray:
    """View activations as (n, p) with p the flattened trailing dims; no dtype copy."""
    a = np.asarray(a)
    if a.ndim < 2 or a.shape[0] < 2:
        raise ValueError(f"{name} must have shape (n, ...) with n >= 2 probes, got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds NaN or inf activations")
    return a.reshape(a.shape[0], -1)


def _centred(X: np.ndarray) -> np.ndarray | None:
    """Column-centred float64 copy of X, shape (n, p); None if X is constant over rows."""
    X = X.astype(np.float64)
    raw = np.linalg.norm(X)
    X -= X.mean(axis=0)
    return X if np.linalg.norm(X) > _DEGENERATE_RTOL * raw else None


def _centred_gram(X: np.ndarray) -> np.ndarray | None:
    """Gram matrix of the column-centred X, shape (n, n), built over blocks of columns.

    Returns None if X is constant over its rows (the centred Gram is then zero).
    """
    n, p = X.shape
    K = np.zeros((n, n))
    raw = 0.0
    for start in range(0, p, _COL_BLOCK):
        block = X[:, start : start + _COL_BLOCK].astype(np.float64)
        raw += float(np.einsum("ij,ij->", block, block))
        block -= block.mean(axis=0)
        K += block @ block.T
    # trace(K) is the centred squared norm: rounding residue of a constant layer is tiny.
    return K if np.trace(K) > _DEGENERATE_RTOL**2 * raw and np.trace(K) > 0 else None


def _gram_cka(K: np.ndarray | None, L: np.ndarray | None) -> float:
    """CKA from two centred Gram matrices; NaN if either is None."""
    if K is None or L is None:
        return np.nan
    return float(np.vdot(K, L) / (np.linalg.norm(K) * np.linalg.norm(L)))
