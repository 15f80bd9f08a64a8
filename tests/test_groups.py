"""Grouping statistics and trend tests (dsc.core.groups) against values computed by hand."""

import math

import numpy as np
import pytest

from dsc.core import groups
from dsc.core.lld.batch import fit_curve


def test_summary_of_four_values_by_hand():
    # mean 2.5; sd sqrt(5/3) = 1.290994; t(0.975, 3) = 3.182446; half-width 3.182446 * 1.290994 / 2
    s = groups.summarise([1.0, 2.0, 3.0, 4.0, math.nan])
    assert (s.n, s.mean) == (4, 2.5)
    assert s.sd == pytest.approx(1.290994, abs=1e-6)
    assert (s.low, s.high) == pytest.approx((2.5 - 2.054260, 2.5 + 2.054260), abs=1e-6)
    assert s.note == ""


def test_summary_of_two_values_by_hand():
    # sd of (3, 5) = sqrt(2); t(0.975, 1) = 12.706205; half-width 12.706205 * sqrt(2) / sqrt(2)
    s = groups.summarise([3.0, 5.0])
    assert s.sd == pytest.approx(math.sqrt(2))
    assert (s.low, s.high) == pytest.approx((4 - 12.706205, 4 + 12.706205), abs=1e-6)


@pytest.mark.parametrize(
    "values, n, note",
    [([7.0], 1, groups.ONE_RUN), ([], 0, "no run has a value"), ([math.nan], 0, "no run has a value")],
)
def test_too_few_values_have_no_interval_and_say_so(values, n, note):
    s = groups.summarise(values)
    assert s.n == n and s.note == note
    assert math.isnan(s.low) and math.isnan(s.high)


def test_group_orders_numerically_and_fills_a_missing_param():
    params = [{"k": "10", "s": "0"}, {"k": "2", "s": "0"}, {"k": "10", "s": "1"}, {"s": "2"}]
    assert groups.group(params, ["k"]) == {("2",): [1], ("10",): [0, 2], ("",): [3]}
    assert list(groups.group(params, ["k", "s"])) == [("2", "0"), ("10", "0"), ("10", "1"), ("", "2")]


def test_planted_trend_is_detected_and_planted_absence_is_not():
    x = [str(k) for k in (2, 3, 5, 8) for _ in range(3)]
    rising = [1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 4, 3]
    flat = [2, 1, 3, 3, 2, 1, 1, 3, 2, 2, 3, 1]
    up = groups.trend(x, rising, "identities")
    assert up.rho > 0.8 and up.p < 0.05 and up.n == 12
    none = groups.trend(x, flat, "identities")
    assert none.p > 0.05


def test_rho_matches_the_ranks_by_hand():
    # ranks of y (1, 3, 2, 4) against x (1, 2, 3, 4): 1 - 6 * (0 + 1 + 1 + 0) / (4 * 15) = 0.8
    assert groups.trend(["1", "2", "3", "4"], [10, 30, 20, 40], "k").rho == pytest.approx(0.8)


@pytest.mark.parametrize(
    "x, y, words",
    [
        (["adam", "sgd", "adam"], [1, 2, 3], "not numeric ('adam'): no trend test"),
        (["1", "2"], [1, 2], "2 run(s) with a value"),
        (["1", "1", "1"], [1, 2, 3], "param 'k' does not vary over the 3 runs"),
        (["1", "2", "3"], [2, 2, 2], "the quantity does not vary"),
    ],
)
def test_no_trend_test_says_why(x, y, words):
    t = groups.trend(x, y, "k")
    assert math.isnan(t.rho) and math.isnan(t.p) and words in t.note


def test_mean_curve_and_band_by_hand():
    t = np.arange(3.0)
    out = groups.mean_curve([(t, np.array([0.0, 1.0, 2.0])), (t, np.array([2.0, 3.0, 4.0]))])
    assert out["mean"].tolist() == [1.0, 2.0, 3.0]
    half = 12.706205 * math.sqrt(2) / math.sqrt(2)
    assert out["high"] - out["mean"] == pytest.approx(np.full(3, half), abs=1e-5)
    single = groups.mean_curve([(t, np.array([0.0, 1.0, np.nan]))])
    assert single["t"].tolist() == [0.0, 1.0] and np.isnan(single["low"]).all()


def test_run_quantities_of_a_planted_logistic():
    t = np.arange(40.0)
    y = 0.2 + 0.7 / (1 + np.exp(-(t - 15.0) / 1.5)) + np.random.default_rng(0).normal(0, 0.004, t.size)
    q = groups.run_quantities(fit_curve(t, y, 2), t, y, 2)
    assert q["n_components"] == 1 and q["center_1"] == pytest.approx(15.0, abs=0.3)
    assert math.isnan(q["center_2"]) and q["r2_1"] > 0.99
    assert q["change_point"] == pytest.approx(15.0 - 2.5 * 1.5, abs=1.5)
    assert q["final"] == y[-1]


def test_first_class():
    assert groups.first_class({"a": 9.0, "b": 4.0, "c": math.nan}) == "b"
    assert groups.first_class({"a": math.nan}) == ""
