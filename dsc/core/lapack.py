"""BLAS ``ssyrk`` and LAPACK ``ssyevr``, called without holding the GIL.

SciPy's ``scipy.linalg.blas`` and ``scipy.linalg.lapack`` wrappers (f2py) keep the GIL for the
whole call: two threads each solving an eigenproblem take as long together as one after the
other. SciPy also publishes the same routines as C function pointers
(``scipy.linalg.cython_blas`` / ``cython_lapack``, for Cython users); called through
:mod:`ctypes`, which releases the GIL around a foreign call, they run side by side with other
threads' NumPy work. Same library, same routines, same arguments as ``scipy.linalg``'s
wrappers (``eigvalsh(..., driver="evr")``: RANGE='A', ABSTOL=0, the optimal workspace), so the
results are bit-identical to theirs.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from typing import cast

import numpy as np

__all__ = ["eigvalsh_upper", "gram_upper"]

_P = ctypes.c_void_p


@functools.cache
def _routine(module: str, name: str, nargs: int) -> Callable[..., None]:
    """The C function ``name`` of SciPy's Cython BLAS or LAPACK module, as a ctypes function."""
    import importlib

    capsule = importlib.import_module(f"scipy.linalg.{module}").__pyx_capi__[name]
    api = ctypes.pythonapi
    api.PyCapsule_GetName.restype, api.PyCapsule_GetName.argtypes = ctypes.c_char_p, [ctypes.py_object]
    api.PyCapsule_GetPointer.restype = ctypes.c_void_p
    api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    address = api.PyCapsule_GetPointer(capsule, api.PyCapsule_GetName(capsule))
    return ctypes.CFUNCTYPE(None, *[_P] * nargs)(address)  # CFUNCTYPE: the GIL is released


def _call(fn: Callable[..., None], *args: bytes | int | float | np.ndarray) -> None:
    """``fn`` on pointers to ``args``: characters as strings, ints as C ints (the Cython modules'
    LAPACK integer), floats as float32, arrays in place. Every temporary lives until ``fn`` returns."""
    held = [
        ctypes.c_char_p(a)
        if isinstance(a, bytes)
        else np.array([a], dtype=np.intc if isinstance(a, int) else np.float32)
        if np.isscalar(a)
        else a
        for a in args
    ]
    # what is not a C string is an array: the scalars were wrapped in one above
    fn(*[h if isinstance(h, ctypes.c_char_p) else cast(np.ndarray, h).ctypes.data for h in held])


def gram_upper(a: np.ndarray) -> np.ndarray:
    """``a @ a.T`` of a float32 matrix (n, k), upper triangle only, as a Fortran-ordered (n, n) array.

    BLAS ``ssyrk``; the strictly lower triangle is left 0 (``eigvalsh_upper`` reads the upper one).
    """
    if a.dtype != np.float32 or a.ndim != 2:
        raise ValueError(f"gram_upper takes a 2-D float32 array, got {a.dtype} {a.shape}")
    n, k = a.shape
    if a.flags.f_contiguous:  # column-major a (n, k): C = a a^T, trans='N', lda = n
        trans, lda, src = b"N", max(1, n), a
    else:  # row-major a is column-major a^T (k, n): C = (a^T)^T a^T, trans='T', lda = k
        src = np.ascontiguousarray(a)
        trans, lda = b"T", max(1, k)
    c = np.zeros((n, n), dtype=np.float32, order="F")
    _call(_routine("cython_blas", "ssyrk", 10), b"U", trans, n, k, 1.0, src, lda, 0.0, c, max(1, n))
    return c


def eigvalsh_upper(c: np.ndarray) -> np.ndarray:
    """Eigenvalues (ascending, float32) of the symmetric float32 matrix whose upper triangle ``c`` holds.

    ``c`` must be a Fortran-ordered (n, n) float32 array; it is overwritten. LAPACK ``ssyevr``
    (JOBZ='N', RANGE='A', UPLO='U', ABSTOL=0), with its optimal workspace.
    """
    if c.dtype != np.float32 or c.ndim != 2 or c.shape[0] != c.shape[1] or not c.flags.f_contiguous:
        raise ValueError(f"eigvalsh_upper takes a square Fortran-ordered float32 array, got {c.dtype} {c.shape}")
    n = c.shape[0]
    if n == 0:
        return np.empty(0, np.float32)
    fn = _routine("cython_lapack", "ssyevr", 21)
    m, info = np.zeros(1, np.intc), np.zeros(1, np.intc)
    w, z, isuppz = np.empty(n, np.float32), np.empty(1, np.float32), np.empty(2 * n, np.intc)

    def call(work: np.ndarray, lwork: int, iwork: np.ndarray, liwork: int) -> None:
        # JOBZ RANGE UPLO N A LDA VL VU IL IU ABSTOL M W Z LDZ ISUPPZ WORK LWORK IWORK LIWORK INFO
        _call(fn, b"N", b"A", b"U", n, c, n, 0.0, 0.0, 1, n, 0.0, m, w, z, 1, isuppz, work, lwork, iwork, liwork, info)

    work, iwork = np.zeros(1, np.float32), np.zeros(1, np.intc)
    call(work, -1, iwork, -1)  # workspace query
    lwork, liwork = max(1, int(work[0])), max(1, int(iwork[0]))
    call(np.empty(lwork, np.float32), lwork, np.empty(liwork, np.intc), liwork)
    if info[0] != 0:
        raise np.linalg.LinAlgError(f"LAPACK ssyevr failed (info = {int(info[0])})")
    return w
