"""Layer spectra: ``dsc.core.spectra.layer_spectrum`` against WeightWatcher's ``analyze()``.

Same float32 weights, same process: each matrix is wrapped alone in a torch Linear layer for
WeightWatcher (default ``analyze()``: full float64 SVD with scipy, its own power-law fit) and
passed as a NumPy array to ``layer_spectrum`` (float32 Gram matrix + LAPACK ``ssyevr``,
vectorised xmin scan, MP fit and phase). Prints per matrix the best-of-N time of each, their
ratio, where our time goes (``gram``: the float32 Gram matrix, ``ssyrk``; ``eig``: the rest
of `esd`, i.e. the eigensolver; ``fit``: `spectrum_of_esd`, the power-law, MP and phase
fits), WW's SVD alone, both alphas and their difference; then the total-time ratio and the
largest alpha gap on the heavy-tailed matrices. Floors: >= 10x faster overall,
|alpha - alpha_WW| <= 0.05 on heavy-tailed matrices.

WW's time is almost all one float64 SVD (the ``svd ms`` column). Ours is almost all the
eigensolver: an exact full ESD needs a tridiagonal reduction (``ssytrd``: 4/3 n^3 flops, half
of them memory-bound symmetric matrix-vector products) and ``ssterf`` on the result; float32
halves the first and the Gram matrix, but no exact full ESD on one core goes much below
gram + ssytrd + ssterf, which caps the ratio on n ~ 1000 layers (the current reading is the
spectra row of the benchmark page, docs/benchmarks.md).

Fairness: BLAS and OpenMP run on one thread for both sides (``DSC_BENCH_THREADS`` to change;
the variables are set before numpy, scipy and torch load, so they bind scipy's OpenBLAS, which
WW's SVD uses, and ours alike). On a shared machine, OpenBLAS's spinning worker threads make
either side's timings swing tenfold; the calls are interleaved (warm-up call each first) so
both see the same load.

    uv run --group bench python bench/spectra.py [--repeats 2]

Without WeightWatcher (``uv run python bench/spectra.py``) it times our side alone.
"""

from __future__ import annotations

import os

# Before numpy loads OpenBLAS: the thread count is read once, at load time.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, os.environ.get("DSC_BENCH_THREADS", "1"))

import argparse  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import linalg  # noqa: E402
from scipy.linalg import blas  # noqa: E402
from torch import nn  # noqa: E402

from dsc.core.spectra import esd, layer_spectrum, spectrum_of_esd  # noqa: E402

SPEED_FLOOR = 10.0
ALPHA_TOL = 0.05


def _orthonormal(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((n, k)))
    return q * np.sign(np.diag(r))


def matrices(seed: int = 0) -> list[tuple[str, bool, np.ndarray]]:
    """(name, heavy_tailed, float32 weight of shape (out, in)) for each benchmark layer."""
    rng = np.random.default_rng(seed)

    def signed_pareto(a: float, shape: tuple[int, int]) -> np.ndarray:
        return 0.01 * rng.pareto(a, shape) * rng.choice([-1.0, 1.0], size=shape)

    s = np.arange(1, 1025, dtype=float) ** -0.5  # ESD ~ lambda^-2 exactly: alpha = 2
    power = (_orthonormal(rng, 1024, 1024) * s) @ _orthonormal(rng, 1024, 1024).T
    out = [
        ("init 1024x1200", False, rng.uniform(-1, 1, (1024, 1200)) / np.sqrt(1200)),
        ("gauss 1024x1024", False, 0.03 * rng.standard_normal((1024, 1024))),
        ("student-t(2) 1024x1200", True, 0.01 * rng.standard_t(2.0, (1024, 1200))),
        ("student-t(2.5) 1024x1024", True, 0.01 * rng.standard_t(2.5, (1024, 1024))),
        ("pareto(1.5) 1024x1200", True, signed_pareto(1.5, (1024, 1200))),
        ("pareto(2.5) 1024x1024", True, signed_pareto(2.5, (1024, 1024))),
        ("s~i^-1/2 1024x1024", True, power),
        ("student-t(2) 256x512", True, 0.01 * rng.standard_t(2.0, (256, 512))),
        ("gauss 5x1024", False, 0.03 * rng.standard_normal((5, 1024))),
    ]
    return [(name, heavy, W.astype(np.float32)) for name, heavy, W in out]


def ww_alpha(watcher_cls, W: np.ndarray) -> float:
    """WeightWatcher's alpha of W alone in a Linear layer (NaN when it skips the layer)."""
    layer = nn.Linear(W.shape[1], W.shape[0], bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(W))
    details = watcher_cls(model=nn.Sequential(layer)).analyze()
    return float(details["alpha"].iloc[0]) if len(details) else float("nan")


def best_time(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2, help="timed calls of each (best kept)")
    args = ap.parse_args()

    warnings.simplefilter("ignore")
    try:
        import weightwatcher as ww
    except ImportError:
        ww = None  # our side alone: timings, alphas and phases, no comparison
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    version = ww.__version__ if ww else "not installed (uv run --group bench: the comparison)"
    print(f"weightwatcher {version}, numpy {np.__version__}, BLAS threads {os.environ['OPENBLAS_NUM_THREADS']}")
    header = (
        f"{'matrix':26s} {'ours ms':>8s} {'WW ms':>8s} {'ratio':>6s} {'gram':>6s} "
        f"{'eig':>6s} {'fit':>5s} {'svd ms':>7s} {'alpha':>7s} {'WW alpha':>8s} "
        f"{'|diff|':>8s}  phase"
    )
    print(header)
    print("-" * len(header))
    ours_total = ww_total = 0.0
    gaps = []
    for name, heavy, W in matrices():
        # Interleaved, warm-up call each first, so both see the same machine state.
        layer_spectrum(W)
        t_ours, ours = best_time(lambda W=W: layer_spectrum(W), args.repeats)
        t_ww, alpha_ww = float("nan"), float("nan")
        if ww:
            ww_alpha(ww.WeightWatcher, W)
            t_ww, alpha_ww = best_time(lambda W=W: ww_alpha(ww.WeightWatcher, W), args.repeats)
        # Where our time goes: Gram matrix, eigensolver (rest of esd), fits.
        small = W if W.shape[0] <= W.shape[1] else W.T  # Gram small @ small.T, as esd does it
        gram = (
            (lambda small=small: blas.ssyrk(1.0, small))
            if small.flags.f_contiguous
            else (lambda small=small: blas.ssyrk(1.0, small.T, trans=1))
        )
        t_gram, _ = best_time(gram, args.repeats)
        t_esd, evals = best_time(lambda W=W: esd(W), args.repeats)
        t_fit, _ = best_time(lambda W=W, evals=evals: spectrum_of_esd(evals, *W.shape), args.repeats)
        # WW's own cost floor: the SVD it runs (scipy gesdd); ours replaces it.
        t_svd, _ = best_time(lambda W=W: linalg.svd(W.astype(np.float64), compute_uv=False), 1)
        diff = abs(ours["alpha"] - alpha_ww)
        if np.isfinite(alpha_ww):  # WW skips layers too small to fit; no time to compare
            ours_total += t_ours
            ww_total += t_ww
        if heavy:
            gaps.append(diff)
        print(
            f"{name + (' *' if heavy else ''):26s} {1e3 * t_ours:8.1f} {1e3 * t_ww:8.1f} "
            f"{t_ww / t_ours:5.1f}x {1e3 * t_gram:6.1f} {1e3 * (t_esd - t_gram):6.1f} "
            f"{1e3 * t_fit:5.1f} {1e3 * t_svd:7.1f} {ours['alpha']:7.3f} {alpha_ww:8.3f} "
            f"{diff:8.1e}  {ours['phase']}"
        )
    print("-" * len(header))
    print(
        "* heavy-tailed; gram / eig / fit: our float32 Gram matrix / eigensolver / fits (ms);"
        " svd ms: scipy's SVD of the matrix alone, the bulk of WW's time"
    )
    if ww is None:
        return
    ratio = ww_total / ours_total
    worst = max(gaps)
    verdict = "met" if ratio >= SPEED_FLOOR else "NOT met"
    print(
        f"total over layers WW fits: ours {1e3 * ours_total:.0f} ms, WW {1e3 * ww_total:.0f} ms,"
        f" ratio {ratio:.1f}x (floor {SPEED_FLOOR:.0f}x): {verdict}"
    )
    print(
        f"max |alpha - alpha_WW| on heavy-tailed: {worst:.4f} (floor {ALPHA_TOL}): "
        f"{'met' if worst <= ALPHA_TOL else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
