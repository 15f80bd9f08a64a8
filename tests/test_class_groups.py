"""Predictors of N from per-class fits: planted groups of classes give known answers."""

import math

import numpy as np
import pytest
from scipy import stats

from dsc.core import class_groups
from dsc.core.lld import batch as lld_batch
from dsc.core.power import detectable_rho

T = np.arange(0, 51, dtype=float)
WIDTH = 1.5


def planted_fits(centres, width=WIDTH, noise=0.004, seed=0):
    """Each class's curve 1/C -> 1 rising at its centre, with a little noise, fitted by the real LLD."""
    rng = np.random.default_rng(seed)
    chance = 1 / len(centres)
    fits = {}
    for k, c in enumerate(centres):
        y = chance + (1 - chance) / (1 + np.exp(-(T - c) / width)) + rng.normal(0, noise, T.size)
        fits[f"class{k}"] = lld_batch.fit_curve(T, y, 3)
    return fits


def predictors(fits, noise_sd=0.004):
    rises = {name: class_groups.main_rise(f) for name, f in fits.items()}
    best = {name: f["fits"][f["n"] - 1] for name, f in fits.items()}
    summed = class_groups.summed_curve(
        T,
        {n: b["components"] for n, b in best.items()},
        {n: b["constant"] for n, b in best.items()},
        dict.fromkeys(fits, 1.0),
    )
    return (len(class_groups.class_clusters(rises)), class_groups.n_from_classes(T, summed, noise_sd, max_components=3))


@pytest.mark.parametrize(
    "centres,groups",
    [
        ([12, 12.5, 13, 12, 13.5, 12.5], 1),
        ([10, 10.5, 11, 30, 30.5, 31], 2),
        ([8, 8.5, 22, 22.5, 38, 38.5], 3),
    ],
    ids=["one group", "two groups", "three groups"],
)
def test_planted_groups_of_classes_give_their_count_from_both_predictors(centres, groups):
    assert predictors(planted_fits(centres)) == (groups, groups)


def test_one_group_spread_within_one_width_is_one():
    centres = [20 + i * WIDTH / 5 for i in range(6)]  # 0..1 width apart in all
    fits = planted_fits(centres)
    rises = {n: class_groups.main_rise(f) for n, f in fits.items()}
    assert class_groups.class_clusters(rises) == [sorted(fits, key=lambda n: rises[n]["center"])]
    assert predictors(fits) == (1, 1)


def test_clusters_link_by_the_larger_width_and_chain():
    rises = {
        "a": {"center": 0.0, "width": 1.0},
        "b": {"center": 3.0, "width": 1.0},
        "c": {"center": 5.0, "width": 1.0},
        "d": {"center": 30.0, "width": 7.0},
        "e": None,
    }
    assert class_groups.class_clusters(rises) == [["a"], ["b", "c"], ["d"]]
    assert class_groups.class_clusters(rises, factor=3.0) == [["a", "b", "c"], ["d"]]
    rises["c"] = {"center": 5.0, "width": 12.5}  # its width reaches d (gap 25 <= 2 x 12.5) and a
    assert class_groups.class_clusters(rises) == [["a", "b", "c", "d"]]
    with pytest.raises(ValueError, match="factor must be > 0"):
        class_groups.class_clusters(rises, factor=0)


def test_a_class_that_never_rises_has_no_main_rise():
    flat = lld_batch.fit_curve(T, 0.2 + np.random.default_rng(1).normal(0, 0.002, T.size), 2)
    assert flat["n"] == 0 and class_groups.main_rise(flat) is None


def test_summed_curve_weights_classes_by_their_share():
    comps = {"a": [{"amplitude": 1.0, "center": 10.0, "width": 1.0}], "b": []}
    out = class_groups.summed_curve(np.array([0.0, 100.0]), comps, {"a": 0.0, "b": 0.5}, {"a": 3, "b": 1})
    np.testing.assert_allclose(out, [0.75 * 1 / (1 + math.exp(10)) + 0.125, 0.75 + 0.125])


def test_n_from_classes_is_reproducible_and_checks_the_noise():
    y = 0.2 + 0.8 / (1 + np.exp(-(T - 20) / 2))
    assert class_groups.n_from_classes(T, y, 0.01) == class_groups.n_from_classes(T, y, 0.01) == 1
    with pytest.raises(ValueError, match="noise_sd"):
        class_groups.n_from_classes(T, y, -1.0)


def test_agreement_shares_and_ranks():
    a = class_groups.agreement([1, 2, 3, 3, np.nan], [1, 2, 3, 2, 1])
    assert a.n == 4 and a.share_equal == 0.75
    assert a.rho == pytest.approx(stats.spearmanr([1, 2, 3, 3], [1, 2, 3, 2]).statistic)
    flat = class_groups.agreement([2, 2, 2], [1, 2, 3])
    assert math.isnan(flat.rho) and "predictor is constant" in flat.note and flat.share_equal == pytest.approx(1 / 3)


def test_detectable_rho_has_the_stated_power_in_simulation():
    n, rho_s = 30, detectable_rho(30)
    r = 2 * math.sin(math.pi * rho_s / 6)  # the normal correlation whose Spearman rho is rho_s
    rng = np.random.default_rng(0)
    cov = [[1, r], [r, 1]]
    hits = [stats.spearmanr(*rng.multivariate_normal([0, 0], cov, n).T).pvalue < 0.05 for _ in range(1500)]
    assert 0.75 < np.mean(hits) < 0.85
    assert math.isnan(detectable_rho(3)) and detectable_rho(80) < detectable_rho(20) < 1
