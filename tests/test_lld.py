"""Known answers for the logistic learning decomposition (dsc.core.lld)."""

import dataclasses
import json
import time

import numpy as np
import pytest

from dsc.core import lld
from dsc.core.lld import model as lld_model
from dsc.core.lld import search as lld_search

PLANTED = {
    1: (0.2, [(0.7, 25.0, 3.0)], 60),
    2: (0.2, [(0.4, 18.0, 1.5), (0.35, 40.0, 4.0)], 60),
    3: (0.1, [(0.3, 15.0, 1.5), (0.3, 38.0, 2.5), (0.25, 60.0, 3.0)], 80),
}


def logistic_sum(t, constant, components):
    """c + sum_i A_i / (1 + exp(-(t - t_i)/w_i)), shape of t."""
    t = np.asarray(t, dtype=float)
    return constant + sum(a / (1 + np.exp(-(t - c) / w)) for a, c, w in components)


def planted_curve(n, seed=0, noise=0.01):
    """(t, y, components) for the planted N-component curve with Gaussian noise."""
    constant, components, epochs = PLANTED[n]
    t = np.arange(float(epochs))
    noise = np.random.default_rng(seed).normal(0.0, noise, t.size)
    return t, logistic_sum(t, constant, components) + noise, components


def paper_curve(seed=0):
    """Accuracy over epochs 0..51 shaped like the paper's figure 11.

    Chance (0.22) through a latent phase, a fast first process at epoch 22 (the first face
    separates), then a slower one well after it, reaching ~0.97 by epoch 51. The second
    process must come late: when the two are a few epochs apart, one logistic already
    explains ~98% of the variance, not the paper's 94%.
    """
    t = np.arange(52.0)
    y = logistic_sum(t, 0.22, [(0.45, 22.0, 0.7), (0.31, 41.0, 3.0)])
    return t, y + np.random.default_rng(seed).normal(0.0, 0.015, t.size)


def assert_recovered(result, planted, centre_tol=1.0, width_rtol=0.3):
    assert result.success, result.message
    for got, (a, c, w) in zip(result.components, planted):
        assert abs(got["center"] - c) < centre_tol, (got, (a, c, w))
        assert abs(got["width"] - w) < width_rtol * w, (got, (a, c, w))
        assert abs(got["amplitude"] - a) < 0.15 * abs(a), (got, (a, c, w))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_planted_components_recovered(n, seed):
    t, y, planted = planted_curve(n, seed)
    result = lld.fit(t, y, n)
    assert result.n_components == n and result.direction == "rising"
    assert_recovered(result, planted)
    assert result.r2 > 0.99
    assert not result.degenerate


@pytest.mark.parametrize("n", [1, 2, 3])
def test_bic_picks_true_number(n):
    t, y, _ = planted_curve(n, seed=3)
    selection = lld.select(t, y, max_components=4)
    assert selection.n == n, selection.reason
    assert selection.best is selection.fits[n]
    assert sorted(selection.fits) == [1, 2, 3, 4]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paper_curve_one_logistic_94_two_99(seed):
    t, y = paper_curve(seed)
    one, two = lld.fit(t, y, 1), lld.fit(t, y, 2)
    assert 0.92 <= one.r2 <= 0.96
    assert two.r2 >= 0.985
    first, second = two.components
    assert abs(first["center"] - 22.0) < 1.0 and first["width"] < second["width"]
    assert second["center"] > 35.0


@pytest.mark.parametrize("direction", ["auto", "falling"])
def test_falling_curve_recovered(direction):
    t = np.arange(60.0)
    planted = [(-1.0, 15.0, 2.0), (-0.5, 40.0, 4.0)]
    loss = logistic_sum(t, 1.6, planted) + np.random.default_rng(0).normal(0, 0.02, t.size)
    result = lld.fit(t, loss, 2, direction=direction)
    assert result.direction == "falling"
    assert all(comp["amplitude"] < 0 for comp in result.components)
    assert abs(result.constant - 1.6) < 0.05
    assert_recovered(result, planted)


def test_falling_fit_mirrors_rising_fit():
    t, y, _ = planted_curve(2)
    rising, falling = lld.fit(t, y, 2), lld.fit(t, -y, 2)
    np.testing.assert_allclose(falling.curve, -rising.curve, atol=1e-6)
    for up, down in zip(rising.components, falling.components):
        assert down["amplitude"] == pytest.approx(-up["amplitude"], abs=1e-6)
        assert down["center"] == pytest.approx(up["center"], abs=1e-4)


def test_non_finite_points_dropped():
    t, y, _ = planted_curve(2)
    t_bad, y_bad = t.copy(), y.copy()
    y_bad[[3, 30]] = np.nan
    y_bad[10] = np.inf
    t_bad[50] = np.nan
    keep = np.isfinite(t_bad) & np.isfinite(y_bad)
    dirty, clean = lld.fit(t_bad, y_bad, 2), lld.fit(t[keep], y[keep], 2)
    assert dirty.t.size == keep.sum() == t.size - 4
    np.testing.assert_allclose(dirty.curve, clean.curve)
    assert dirty.components == clean.components


def test_unsorted_input_is_sorted():
    t, y, _ = planted_curve(1)
    order = np.random.default_rng(0).permutation(t.size)
    shuffled = lld.fit(t[order], y[order], 1)
    np.testing.assert_array_equal(shuffled.t, t)
    np.testing.assert_allclose(shuffled.curve, lld.fit(t, y, 1).curve)


def assert_failed(result, words):
    assert not result.success and words in result.message
    assert np.isnan([result.r2, result.aic, result.bic, result.constant]).all()
    assert result.components == [] and result.component_curves.shape == (0, result.t.size)
    assert np.isnan(result.curve).all()


@pytest.mark.parametrize("value", [0.5, -3.0])
def test_flat_curve_fails_softly(value):
    t = np.arange(30.0)
    assert_failed(lld.fit(t, np.full(30, value), 2), "flat")
    selection = lld.select(t, np.full(30, value), max_components=3)
    assert selection.n == 0 and selection.no_process and selection.best.components == []
    assert selection.best.success and selection.best.constant == value and selection.best.r2 == 1.0
    assert not selection.fits[1].success and "constant" in selection.reason


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flat_noisy_curve_selects_no_process(seed):
    """Accuracy at chance with the binomial noise of 576 validation images: N = 0 wins by BIC."""
    t = np.arange(61.0)
    y = np.random.default_rng(seed).binomial(576, 0.2, t.size) / 576
    selection = lld.select(t, y, max_components=3)
    assert selection.n == 0 and selection.no_process, selection.reason
    assert selection.best is selection.baseline and selection.best.components == []
    assert selection.best.success and selection.best.n_components == 0
    assert selection.best.constant == pytest.approx(y.mean(), abs=1e-9)
    assert selection.best.component_curves.shape == (0, t.size)
    np.testing.assert_allclose(selection.best.evaluate([0.0, 100.0]), y.mean())
    assert sorted(selection.fits) == [1, 2, 3] and "no learning process" in selection.reason
    assert json.loads(json.dumps(selection.to_dict(), allow_nan=False))["baseline"]["n_components"] == 0


def test_one_clear_rise_in_the_same_noise_still_selects_one():
    t = np.arange(61.0)
    noise = np.random.default_rng(0).binomial(576, 0.2, t.size) / 576 - 0.2
    selection = lld.select(t, logistic_sum(t, 0.2, [(0.7, 25.0, 3.0)]) + noise, max_components=3)
    assert selection.n == 1 and not selection.no_process
    assert selection.baseline.bic > selection.best.bic


def test_baseline_bic_is_lmfits_constant_model():
    t, y, _ = planted_curve(1)
    base = lld.select(t, y, 1).baseline
    n = t.size
    chi2 = float(np.sum((y - y.mean()) ** 2))
    assert base.bic == pytest.approx(n * np.log(chi2 / n) + np.log(n), rel=1e-9)


@pytest.mark.parametrize(("n_points", "n"), [(0, 1), (4, 1), (7, 2), (10, 3)])
def test_too_few_points_fail_softly(n_points, n):
    t, y, _ = planted_curve(1)
    assert_failed(lld.fit(t[:n_points], y[:n_points], n), "too few")


def test_select_skips_sizes_without_enough_points():
    t, y, _ = planted_curve(1)
    t, y = t[20:31], y[20:31]  # 11 points around the rise: enough for N <= 3 (3N + 2)
    selection = lld.select(t, y, max_components=4)
    assert not selection.fits[4].success and selection.fits[3].success
    assert selection.n == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_components": 0}, "n_components must be an integer >= 1, got 0"),
        ({"n_components": -2}, "got -2"),
        ({"n_components": 1.5}, "got 1.5"),
        ({"n_components": True}, "got True"),
        ({"n_components": "2"}, "got '2'"),
        ({"direction": "up"}, "direction must be one of"),
        ({"t": np.arange(5.0)}, "one length, got 5 and 60"),
        ({"t": np.zeros((60, 1))}, r"t must be 1-D, got shape \(60, 1\)"),
        ({"y": 3.0}, r"y must be 1-D, got shape \(\)"),
        ({"y": ["a"] * 60}, "y must be a 1-D array of real numbers"),
    ],
)
def test_invalid_arguments_raise(kwargs, match):
    t, y, _ = planted_curve(1)
    args = {"t": t, "y": y, "n_components": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        lld.fit(**args)


@pytest.mark.parametrize("bad", [0, -1, 2.0])
def test_invalid_max_components_raises(bad):
    t, y, _ = planted_curve(1)
    with pytest.raises(ValueError, match=f"max_components must be an integer >= 1, got {bad}"):
        lld.select(t, y, max_components=bad)


def test_components_ordered_and_curves_consistent():
    t, y, _ = planted_curve(3)
    result = lld.fit(t, y, 3)
    centres = [comp["center"] for comp in result.components]
    assert centres == sorted(centres)
    assert result.component_curves.shape == (3, t.size)
    np.testing.assert_allclose(result.curve, result.constant + result.component_curves.sum(0))
    for comp in result.components:
        for key in ("amplitude", "center", "width"):
            assert 0 < comp[f"{key}_stderr"] < np.inf


def test_evaluate_reproduces_curve_and_extends_it():
    t, y, planted = planted_curve(2, noise=0.0)
    result = lld.fit(t, y, 2)
    np.testing.assert_allclose(result.evaluate(t), result.curve, atol=1e-12)
    dense = np.linspace(-20.0, 100.0, 500)  # beyond the data: exp must not overflow to NaN
    np.testing.assert_allclose(result.evaluate(dense), logistic_sum(dense, 0.2, planted), atol=1e-5)
    assert np.isnan(lld.fit(t[:3], y[:3], 1).evaluate(t)).all()


def test_results_are_read_only():
    result = lld.fit(*planted_curve(1)[:2], 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.r2 = 0.0
    with pytest.raises(ValueError):
        result.curve[0] = 0.0


def test_degenerate_fit_never_wins():
    t, y, _ = planted_curve(1)
    selection = lld.select(t, y, max_components=2)
    # Pretend the 2-component fit is far better by BIC but has a noise-sized component.
    fits = dict(selection.fits)
    fits[2] = dataclasses.replace(fits[2], bic=-1e9, degenerate=("component 2: amplitude",))
    assert lld.decompose._choose(fits)[0] == 1
    fits[2] = dataclasses.replace(fits[2], degenerate=())
    assert lld.decompose._choose(fits)[0] == 2


def test_tiny_component_flagged_degenerate():
    t = np.arange(60.0)
    y = logistic_sum(t, 0.2, [(0.7, 25.0, 3.0), (0.005, 45.0, 2.0)])
    result = lld.fit(t, y, 2)
    assert any("amplitude" in reason for reason in result.degenerate)
    assert "degenerate" in result.message


@pytest.mark.parametrize("n_points", [60, 3])  # a fitted result, and a failed one (NaNs)
def test_to_dict_is_strict_json(n_points):
    t, y, _ = planted_curve(2)
    payload = lld.fit(t[:n_points], y[:n_points], 2).to_dict()
    decoded = json.loads(json.dumps(payload, allow_nan=False))
    assert set(decoded) >= {"n_components", "r2", "aic", "bic", "components", "curve", "message"}


def test_selection_to_dict_is_strict_json():
    t, y, _ = planted_curve(2)
    decoded = json.loads(json.dumps(lld.select(t, y, 3).to_dict(), allow_nan=False))
    assert decoded["n"] == 2 and set(decoded["fits"]) == {"1", "2", "3"}


def lmfit_reference_cases():
    """(t, y, N): clean planted curves, a falling one and the paper's, for the lmfit checks."""
    cases = [(*planted_curve(n, seed)[:2], n) for n in (1, 2, 3) for seed in (0, 1)]
    t = np.arange(60.0)
    loss = logistic_sum(t, 1.6, [(-1.0, 15.0, 2.0), (-0.5, 40.0, 4.0)])
    cases.append((t, loss + np.random.default_rng(0).normal(0, 0.02, t.size), 2))
    cases.append((*paper_curve(0), 2))
    return cases


@pytest.mark.parametrize(("t", "y", "n"), lmfit_reference_cases())
def test_statistics_match_plain_lmfit_fit(t, y, n):
    """Values, standard errors (centres 2..N through lmfit's expressions), AIC, BIC and R^2
    agree with a plain lmfit fit of the composite model started at the search optimum:
    default leastsq, numerical derivatives, lmfit's default tolerances and evaluation budget."""
    frame = lld_search.Frame.build(t, y, "auto")
    theta = lld_search.search(frame, n)[n]
    plain = lld_model.model(n).fit(frame.y, lld_model.params(frame, n, theta), x=frame.t)
    assert plain.success and plain.errorbars
    names = ["c_c"] + [f"l{i}_{k}" for k in ("amplitude", "center", "sigma") for i in range(1, n + 1)]
    lm_values = np.array([plain.params[name].value for name in names])
    lm_stderr = np.array([plain.params[name].stderr for name in names])

    result = lld.fit(t, y, n)
    keys = ("amplitude", "center", "width")
    values = np.array([result.constant] + [c[k] for k in keys for c in result.components])
    stderr = np.array([result.constant_stderr] + [c[f"{k}_stderr"] for k in keys for c in result.components])
    np.testing.assert_allclose(stderr, lm_stderr, rtol=2e-3)
    assert np.all(np.abs(values - lm_values) < 1e-2 * lm_stderr)
    assert result.aic == pytest.approx(plain.aic, abs=1e-6)
    assert result.bic == pytest.approx(plain.bic, abs=1e-6)
    assert result.r2 == pytest.approx(plain.rsquared, abs=1e-9)


@pytest.mark.parametrize("direction", ["rising", "falling"])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_lmfit_jacobian_matches_finite_differences(n, direction):
    """The Jacobian handed to lmfit is that of lmfit's residual, data - model, one row per
    free parameter in the order of the Parameters (centres 2..N follow by expression)."""
    t, y, _ = planted_curve(n)
    y = y if direction == "rising" else -y
    frame = lld_search.Frame.build(t, y, direction)
    params = lld_model.params(frame, n, lld_search.search(frame, n)[n])
    model = lld_model.model(n)
    jac = lld_model.jacobian(params, y, None, t)
    assert jac.shape == (3 * n + 1, t.size)
    eps, numeric = 1e-6, []
    for name in lld_model.free_names(n):
        up, down = params.copy(), params.copy()
        up[name].value += eps
        down[name].value -= eps
        numeric.append((model.eval(down, x=t) - model.eval(up, x=t)) / (2 * eps))
    numeric = np.array(numeric)
    np.testing.assert_allclose(jac, numeric, atol=1e-6 * np.abs(numeric).max())


@pytest.mark.parametrize("n", [1, 2, 3])
def test_search_jacobian_matches_finite_differences(n):
    t, y, _ = planted_curve(n)
    frame = lld_search.Frame.build(t, y, "auto")
    problem = lld_search.Problem(frame, n)
    u = problem.internal(lld_search.search(frame, n)[n]) + 0.05
    jac = problem.jacobian(u)
    assert jac.shape == (3 * n + 1, t.size)
    eps = 1e-6
    numeric = np.array(
        [(problem.residual(u + eps * e) - problem.residual(u - eps * e)) / (2 * eps) for e in np.eye(u.size)]
    )
    np.testing.assert_allclose(jac, numeric, atol=1e-6 * np.abs(numeric).max())
    # The cached sigmoids of another point must not leak into the Jacobian at u.
    problem.residual(u + 0.1)
    np.testing.assert_array_equal(problem.jacobian(u), jac)


def test_timing_report():
    """Not a benchmark: prints the cost of select(K=3) on a 60-point curve (see with -s)."""
    t, y, _ = planted_curve(2)
    lld.select(t, y, 3)  # warm up
    runs = 5
    start = time.perf_counter()
    for _ in range(runs):
        lld.select(t, y, 3)
    elapsed = (time.perf_counter() - start) / runs
    print(f"\nlld.select(K=3) on 60 points: {elapsed * 1e3:.1f} ms per call")
