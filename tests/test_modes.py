"""Known answers for the mode decomposition (Eckart-Young) and the two-segment power-law fit."""

import numpy as np
import pytest

from dsc.core.modes import ModeDecomposition, fit_two_segment_power_law, k_grid


@pytest.fixture
def weight():
    return np.random.default_rng(0).normal(size=(40, 25)).astype(np.float32)


def kept(dec, index):
    """The weight matrix (m, n) made of the decomposition's modes in index."""
    return (dec.u_[:, index] * dec.s_[index]) @ dec.vt_[index]


def test_all_modes_reproduce_weight_and_none_give_zeros(weight):
    dec = ModeDecomposition(weight)
    assert dec.n_modes == 25 and dec.u_.shape == (40, 25) and dec.vt_.shape == (25, 25)
    np.testing.assert_allclose(kept(dec, dec.modes(25)), weight, atol=1e-5)
    assert dec.modes(0).size == 0 and np.all(kept(dec, dec.modes(0)) == 0)


def test_leading_modes_of_low_rank_matrix_reproduce_it():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(30, 3)) @ rng.normal(size=(3, 20))
    dec = ModeDecomposition(w)
    assert dec.n_modes == 20 and np.all(dec.s_[3:] < 1e-10 * dec.s_[0])
    np.testing.assert_allclose(kept(dec, dec.modes(3)), w, atol=1e-10)


@pytest.mark.parametrize("k", [1, 5, 24])
def test_leading_modes_are_eckart_young(weight, k):
    dec = ModeDecomposition(weight)
    s = np.linalg.svd(weight.astype(np.float64), compute_uv=False)
    np.testing.assert_allclose(dec.s_, s, rtol=1e-10)
    expected = np.sqrt(np.sum(s[k:] ** 2))
    error = np.linalg.norm(weight - kept(dec, dec.modes(k, "leading")))
    np.testing.assert_allclose(error, expected, rtol=1e-5)


def test_random_modes_reproducible_and_worse_than_leading(weight):
    dec = ModeDecomposition(weight)
    a, b = dec.modes(8, "random", rng=7), dec.modes(8, "random", rng=7)
    np.testing.assert_array_equal(a, b)
    assert a.size == 8 and np.unique(a).size == 8 and np.all(np.diff(a) > 0)
    rng = np.random.default_rng(3)
    errs = [np.linalg.norm(weight - kept(dec, dec.modes(8, "random", rng))) for _ in range(20)]
    s = np.linalg.svd(weight.astype(np.float64), compute_uv=False)
    assert np.mean(errs) > np.sqrt(np.sum(s[8:] ** 2))


def test_conv_kernel_is_read_as_out_by_in_times_kernel():
    w = np.random.default_rng(2).normal(size=(16, 3, 3, 3))  # (out, in, kh, kw): matrix 16 x 27
    dec = ModeDecomposition(w)
    assert dec.n_modes == 16 and dec.vt_.shape == (16, 27)
    flat = w.reshape(16, 27)
    np.testing.assert_allclose(kept(dec, dec.modes(16)), flat, atol=1e-10)
    u, s, vt = np.linalg.svd(flat, full_matrices=False)
    np.testing.assert_allclose(kept(dec, dec.modes(4)), (u[:, :4] * s[:4]) @ vt[:4], atol=1e-10)


@pytest.mark.parametrize(
    ("k", "modes", "match"),
    [
        (26, "leading", "k must be"),
        (-1, "leading", "k must be"),
        (2.5, "leading", "k must be"),
        (3, "trailing", "unknown modes"),
    ],
)
def test_modes_rejects_bad_arguments(weight, k, modes, match):
    with pytest.raises(ValueError, match=match):
        ModeDecomposition(weight).modes(k, modes)


def test_decomposition_rejects_3d_weight():
    with pytest.raises(ValueError, match="2-D"):
        ModeDecomposition(np.zeros((2, 3, 4)))


@pytest.mark.parametrize("rank", [1, 2, 7, 27, 1024])
def test_k_grid_is_distinct_ints_from_one_to_rank(rank):
    grid = k_grid(rank, n=20)
    assert grid[0] == 1 and grid[-1] == rank and len(grid) == min(20, rank)
    assert np.all(np.diff(grid) > 0) and grid.dtype.kind == "i"
    if rank >= 1000:  # log-spaced: the ratio of neighbours is about constant
        assert np.ptp(np.log(grid[5:] / grid[4:-1])) < 0.1


def broken_power_law(k, kb=30.0, s1=-0.5, s2=-2.0):
    return np.where(k < kb, k**s1, kb**s1 * (k / kb) ** s2)


def test_two_segment_fit_recovers_planted_break():
    k = k_grid(512, n=30)
    fit = fit_two_segment_power_law(k, broken_power_law(k))
    assert fit.success and fit.n_points == len(k) and fit.n_dropped == 0
    assert abs(fit.breakpoint / 30 - 1) < 0.15
    assert abs(fit.slope_1 + 0.5) < 0.1 and abs(fit.slope_2 + 2.0) < 0.1
    assert abs(fit.intercept) < 0.1 and fit.r2 > 0.999 and fit.r2 > fit.single_r2


def test_two_segment_fit_with_noise_and_dropped_points():
    k = k_grid(512, n=30)
    err = broken_power_law(k) * np.exp(np.random.default_rng(5).normal(0, 0.05, len(k)))
    err[-1], err[3] = 0.0, np.nan  # full model: error(k) - error(full) = 0
    fit = fit_two_segment_power_law(k, err)
    assert fit.n_dropped == 2 and "dropped 2" in fit.message
    assert abs(fit.breakpoint / 30 - 1) < 0.15 and abs(fit.slope_2 + 2.0) < 0.1


def test_single_power_law_gives_equal_slopes():
    k = k_grid(256, n=20)
    fit = fit_two_segment_power_law(k, 3.0 * k**-0.8)
    assert fit.success and abs(fit.slope_1 - fit.slope_2) < 0.01
    assert abs(fit.single_slope + 0.8) < 1e-9


def test_two_segment_fit_too_few_points_fails_softly():
    fit = fit_two_segment_power_law([1, 2, 4, 8, 16], [1.0, 0.5, -0.1, 0.0, np.nan])
    assert not fit.success and fit.n_points == 2 and fit.n_dropped == 3
    assert np.isnan(fit.breakpoint)
