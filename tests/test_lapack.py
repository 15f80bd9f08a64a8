"""dsc.core.lapack: SciPy's BLAS/LAPACK through their C pointers, against SciPy's own wrappers."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from scipy import linalg
from scipy.linalg import blas

from dsc.core import lapack


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (5, 5), (40, 90), (90, 40), (300, 310)])
@pytest.mark.parametrize("fortran", [False, True])
def test_bit_for_bit_what_scipy_computes(shape, fortran):
    rng = np.random.default_rng(sum(shape))
    a = rng.standard_normal(shape).astype(np.float32)
    a = np.asfortranarray(a) if fortran else a
    ref_gram = blas.ssyrk(1.0, a) if a.flags.f_contiguous else blas.ssyrk(1.0, a.T, trans=1)
    gram = lapack.gram_upper(a)
    assert gram.flags.f_contiguous and gram.dtype == np.float32
    np.testing.assert_array_equal(np.triu(gram), np.triu(ref_gram))
    assert not np.tril(gram, -1).any()  # the lower triangle is never written
    ref = linalg.eigvalsh(ref_gram, lower=False, driver="evr", check_finite=False)
    np.testing.assert_array_equal(lapack.eigvalsh_upper(gram), ref)


def test_known_eigenvalues_and_a_strided_input():
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((6, 6)))
    s = np.array([3.0, 2.0, 1.5, 1.0, 0.5, 0.25])
    w = (q * s) @ q.T  # singular values s
    wide = np.zeros((6, 12), np.float32)
    wide[:, ::2] = w  # a non-contiguous view goes through a copy
    evals = lapack.eigvalsh_upper(lapack.gram_upper(wide[:, ::2]))
    np.testing.assert_allclose(evals, np.sort(s**2), rtol=1e-5)


def test_threads_solve_side_by_side_with_the_same_answers():
    """Released GIL: results from several threads at once equal the serial ones."""
    rng = np.random.default_rng(1)
    mats = [rng.standard_normal((120, 150)).astype(np.float32) for _ in range(4)]
    serial = [lapack.eigvalsh_upper(lapack.gram_upper(m)) for m in mats]
    out = [None] * 4

    def solve(i):
        out[i] = lapack.eigvalsh_upper(lapack.gram_upper(mats[i]))

    threads = [threading.Thread(target=solve, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(serial, out):
        np.testing.assert_array_equal(a, b)


def test_wrong_inputs_are_refused():
    with pytest.raises(ValueError, match="float32"):
        lapack.gram_upper(np.ones((3, 3)))
    with pytest.raises(ValueError, match="Fortran-ordered"):
        lapack.eigvalsh_upper(np.ones((3, 3), np.float32))  # C order
    with pytest.raises(ValueError, match="square"):
        lapack.eigvalsh_upper(np.ones((3, 2), np.float32, order="F"))
    assert lapack.eigvalsh_upper(np.zeros((0, 0), np.float32, order="F")).shape == (0,)
