"""Known answers for the weight spectra: MP edges, power-law exponents, spikes and phases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate

from dsc.core import mp, spectra
from dsc.core.spectra import esd

KEYS = {
    "alpha",
    "xmin",
    "ks_distance",
    "lambda_max",
    "stable_rank",
    "log_norm",
    "lambda_plus",
    "num_spikes",
    "phase",
}


def _orthonormal(rng, n, k):
    q, r = np.linalg.qr(rng.standard_normal((n, k)))
    return q * np.sign(np.diag(r))


def _with_singular_values(rng, n, m, s):
    """An n x m matrix U diag(s) V^T with random orthonormal U, V."""
    return (_orthonormal(rng, n, m) * s) @ _orthonormal(rng, m, m).T


def _planted(rng, n=1000, m=500, strengths=(3.0, 4.0, 5.0)):
    """Gaussian noise plus a rank-k signal; strength 1 is the detection threshold (BBP)."""
    k = len(strengths)
    signal = _orthonormal(rng, n, k) * (np.array(strengths) * (n * m) ** 0.25)
    return rng.standard_normal((n, m)) + signal @ _orthonormal(rng, m, k).T


@pytest.fixture(scope="module")
def gauss():
    return spectra.layer_spectrum(np.random.default_rng(0).standard_normal((1000, 500)))


def test_keys_and_types(gauss):
    assert set(gauss) == KEYS
    assert isinstance(gauss["num_spikes"], int)
    assert gauss["phase"] in spectra.PHASES
    assert len(spectra.PHASES) == 6


def test_gaussian_edge_and_phase(gauss):
    edge = (np.sqrt(1000) + np.sqrt(500)) ** 2
    assert gauss["lambda_max"] == pytest.approx(edge, rel=0.04)
    assert gauss["lambda_plus"] == pytest.approx(edge, rel=0.02)
    assert gauss["num_spikes"] == 0
    assert gauss["phase"] == "random-like"


def test_norms(gauss):
    W = np.random.default_rng(0).standard_normal((1000, 500))
    evals = spectra.esd(W)
    exact = np.sort(np.linalg.svd(W, compute_uv=False) ** 2)
    # float32 ESD: absolute error well under 1e-5 * lambda_max, ~1e-6 relative at the top.
    np.testing.assert_allclose(evals, exact, rtol=0, atol=2e-5 * exact[-1])
    np.testing.assert_allclose(evals[-10:], exact[-10:], rtol=2e-5)
    assert gauss["log_norm"] == pytest.approx(np.log10(np.sum(W**2)))
    assert gauss["stable_rank"] == pytest.approx(np.sum(W**2) / evals[-1])


@pytest.mark.parametrize("shape", [(120, 80), (16, 8, 3, 3)])
def test_spectrum_of_esd_matches_layer_spectrum(shape):
    W = np.random.default_rng(9).standard_t(3.0, size=shape)
    expected = spectra.layer_spectrum(W)
    got = spectra.spectrum_of_esd(spectra.esd(W)[::-1], *shape[:2])
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == (value if isinstance(value, str) else pytest.approx(value, nan_ok=True))


@pytest.mark.parametrize("shape", [(300, 200), (200, 300), (256, 256)])
def test_fit_mp_recovers_variance(shape):
    sigma = 0.05
    W = sigma * np.random.default_rng(1).standard_normal(shape)
    sigma2, lo, hi = spectra.fit_mp(spectra.esd(W), *shape)
    assert sigma2 == pytest.approx(sigma**2, rel=0.03)
    n, m = max(shape), min(shape)
    assert hi == pytest.approx(sigma2 * (np.sqrt(n) + np.sqrt(m)) ** 2)
    assert lo == pytest.approx(sigma2 * (np.sqrt(n) - np.sqrt(m)) ** 2)


@pytest.mark.parametrize("ratio", [1.0, 2.0, 8.0])
def test_mp_density_integrates_to_one(ratio):
    n, sigma2 = 800, 0.3
    lo, hi = sigma2 * n * (1 - ratio**-0.5) ** 2, sigma2 * n * (1 + ratio**-0.5) ** 2
    total, _ = integrate.quad(spectra.mp_density, lo, hi, args=(ratio, sigma2, n), limit=200)
    assert total == pytest.approx(1.0, abs=1e-3)
    assert spectra.mp_density(np.array([0.5 * lo, 1.01 * hi]), ratio, sigma2, n) == pytest.approx(0)


@pytest.mark.parametrize("ratio", [1.0, 2.0, 8.0])
def test_mp_cdf_is_the_integral_of_the_density(ratio):
    n, sigma2 = 800, 0.3
    lo, hi = sigma2 * n * (1 - ratio**-0.5) ** 2, sigma2 * n * (1 + ratio**-0.5) ** 2
    for x in np.linspace(lo, hi, 7)[1:-1]:
        part, _ = integrate.quad(mp.mp_density, lo, x, args=(ratio, sigma2, n), limit=200)
        assert mp.mp_cdf(x, ratio, sigma2, n) == pytest.approx(part, abs=1e-3)
    assert mp.mp_cdf(np.array([0.5 * lo, 1.01 * hi]), ratio, sigma2, n) == pytest.approx([0, 1])


@pytest.mark.parametrize("shape", [(1000, 500), (500, 1000)])
def test_mp_ks_distance_of_gaussian_bulk(shape):
    W = np.random.default_rng(7).standard_normal(shape)
    evals = spectra.esd(W)
    sigma2, _, _ = spectra.fit_mp(evals, *shape)
    ks = mp.mp_ks_distance(evals, sigma2, *shape)
    # The supremum over the sorted sample of the gaps to the fitted CDF, on either side.
    fitted = mp.mp_cdf(np.sort(evals), max(shape) / min(shape), sigma2, max(shape))
    k = evals.size
    direct = max(np.max(np.arange(1, k + 1) / k - fitted), np.max(fitted - np.arange(k) / k))
    assert ks == pytest.approx(direct, abs=1e-12)
    assert ks < spectra.MP_KS_MIN
    assert mp.mp_ks_distance(evals, 4 * sigma2, *shape) > 0.5  # the wrong variance is rejected


@pytest.mark.parametrize("power, alpha", [(-0.5, 2.0), (-1.0, 1.5)])
def test_alpha_of_prescribed_singular_values(power, alpha):
    rng = np.random.default_rng(2)
    s = np.arange(1, 501, dtype=float) ** power
    result = spectra.layer_spectrum(_with_singular_values(rng, 1000, 500, s))
    assert result["alpha"] == pytest.approx(alpha, abs=0.3)
    assert result["xmin"] > 0
    assert 0 <= result["ks_distance"] < 0.1


def test_fit_power_law_matches_brute_force():
    evals = spectra.esd(np.random.default_rng(3).standard_t(2.5, size=(300, 200)))
    x = np.sort(evals)
    best = (np.inf, np.nan, np.nan)
    for i in range(x.size - spectra.MIN_TAIL + 1):
        tail = x[i:]
        a = 1 + tail.size / np.sum(np.log(tail / x[i]))
        d = np.max(np.abs(1 - (tail / x[i]) ** (1 - a) - np.arange(tail.size) / tail.size))
        best = min(best, (d, a, x[i]))
    assert spectra.fit_power_law(evals) == pytest.approx((best[1], best[2], best[0]))


def test_planted_spikes():
    result = spectra.layer_spectrum(_planted(np.random.default_rng(4)))
    assert result["num_spikes"] == 3
    assert result["phase"] == "bulk+spikes"


def test_weak_spikes_bleed_out():
    result = spectra.layer_spectrum(_planted(np.random.default_rng(4), strengths=(1.2, 1.3)))
    assert result["num_spikes"] >= 1
    assert result["phase"] == "bleeding-out"


def test_heavy_tailed():
    result = spectra.layer_spectrum(np.random.default_rng(5).standard_t(2.0, size=(600, 500)))
    assert result["phase"] == "heavy-tailed"
    assert 1.5 < result["alpha"] < 4


def test_rank_collapse():
    rng = np.random.default_rng(6)
    result = spectra.layer_spectrum(rng.standard_normal((1000, 2)) @ rng.standard_normal((2, 500)))
    assert result["phase"] == "rank-collapse"
    assert result["num_spikes"] == 2


@pytest.mark.parametrize(
    "n, m, rank, heavy",
    [(600, 400, 100, False), (400, 600, 300, True), (500, 500, 490, True), (300, 200, 0, False)],
)
def test_float32_zeros_are_numerically_zero(n, m, rank, heavy):
    """Exact zeros of the float32 ESD stay far under NULL_RTOL * lambda_max, non-zeros above."""
    rng = np.random.default_rng(10)
    if rank:  # singular values in [1, 3], or i^-1/2 (a heavy tail down to rank^-1/2), then 0
        s = np.arange(1, rank + 1) ** -0.5 if heavy else np.linspace(1.0, 3.0, rank)
        W = _with_singular_values(rng, max(n, m), min(n, m), np.concatenate([s, np.zeros(min(n, m) - rank)]))
        W = W if n >= m else W.T
    else:  # dead units: 60 zero inputs null the ESD; 60 zero outputs of 300 leave 240 >= M
        W = rng.standard_normal((n, m))  # rows, so W^T W keeps rank M - 60
        W[:60] = 0
        W[:, :60] = 0
        rank = m - 60
    evals = spectra.esd(W.astype(np.float32))
    zero = evals <= spectra.NULL_RTOL * evals[-1]
    assert np.count_nonzero(zero) == min(n, m) - rank
    assert evals[zero].max(initial=0.0) < 0.1 * spectra.NULL_RTOL * evals[-1]


def test_rank_collapse_threshold():
    rng = np.random.default_rng(11)
    collapsed = rng.standard_normal((600, 290)) @ rng.standard_normal((290, 400))  # 27.5% null
    healthy = rng.standard_normal((600, 310)) @ rng.standard_normal((310, 400))  # 22.5% null
    assert spectra.layer_spectrum(collapsed)["phase"] == "rank-collapse"
    assert spectra.layer_spectrum(healthy)["phase"] != "rank-collapse"


def test_precision_and_scale():
    """float32 whatever the input dtype; exact power-of-two rescaling of extreme magnitudes."""
    W = np.random.default_rng(12).standard_t(3.0, (120, 90))
    evals = spectra.esd(W)
    assert evals.dtype == np.float64
    np.testing.assert_array_equal(spectra.esd(W.astype(np.float32)), evals)
    for exp in (-150, -60, 60, 150):  # squares under- or overflow float32 without rescaling
        np.testing.assert_array_equal(spectra.esd(np.ldexp(W, exp)), np.ldexp(evals, 2 * exp))
    assert spectra.layer_spectrum(1e30 * W)["alpha"] == pytest.approx(spectra.layer_spectrum(W)["alpha"], rel=1e-5)


@pytest.mark.parametrize(
    "W",
    [
        np.random.default_rng(7).standard_normal((5, 1024)),
        np.random.default_rng(7).standard_normal((3, 3)),
        np.random.default_rng(7).standard_normal((1, 40)),
        np.random.default_rng(7).standard_normal((3, 3, 3, 3))[..., :1, :1],
        np.zeros((20, 30)),
        np.eye(50),
    ],
    ids=["5x1024", "3x3", "1xn", "conv1x1", "zeros", "identity"],
)
def test_small_or_degenerate_never_raise(W):
    result = spectra.layer_spectrum(W)
    assert set(result) == KEYS
    assert result["phase"] in spectra.PHASES
    if min(W.shape[:2]) < spectra.MIN_TAIL or not W.any():
        assert np.isnan(result["alpha"]) and np.isnan(result["xmin"])
        assert np.isnan(result["ks_distance"])


def test_zero_matrix_is_rank_collapse():
    assert spectra.layer_spectrum(np.zeros((20, 30)))["phase"] == "rank-collapse"


# (80, 70, 2, 1): slices above _BATCH_MAX, solved one by one instead of batched.
@pytest.mark.parametrize("shape", [(3, 3, 3, 3), (16, 8, 3, 3), (8, 16, 5, 1), (80, 70, 2, 1)])
def test_conv_pools_kernel_positions(shape):
    W = np.random.default_rng(8).standard_normal(shape)
    manual = np.concatenate(
        [np.linalg.svd(W[:, :, i, j], compute_uv=False) ** 2 for i in range(shape[2]) for j in range(shape[3])]
    )
    evals = spectra.esd(W)
    assert evals.shape == (shape[2] * shape[3] * min(shape[:2]),)
    np.testing.assert_allclose(evals, np.sort(manual), rtol=2e-5, atol=2e-5 * evals[-1])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_raises(bad):
    W = np.ones((10, 10))
    W[3, 4] = bad
    with pytest.raises(ValueError, match="non-finite"):
        spectra.layer_spectrum(W)


@pytest.mark.parametrize("shape", [(10,), (2, 3, 4), (0, 5)])
def test_bad_shapes_raise(shape):
    with pytest.raises(ValueError, match="W"):
        spectra.esd(np.ones(shape))


def test_a_convolutions_esd_is_weightwatchers():
    """A Conv2d weight (out, in, kh, kw) as kh * kw matrices out x in, eigenvalues pooled: WeightWatcher's ESD."""
    import logging

    import torch

    ww = pytest.importorskip("weightwatcher")
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(64, 96, 3))
    theirs = np.sort(np.asarray(ww.WeightWatcher(model=model).get_ESD(layer=1), dtype=np.float64))
    ours = esd(model[0].weight.detach().numpy())
    assert ours.shape == theirs.shape == (9 * 64,)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6 * theirs.max())
