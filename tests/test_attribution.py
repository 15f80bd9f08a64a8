"""Known answers for the per-class decomposition and its attribution (dsc.core.attribution)."""

import numpy as np
import pytest

from dsc.core import attribution, lld

T = np.arange(60.0)
STAGED = {"early": 10.0, "middle": 25.0, "late": 42.0}  # each class's rise, width 1.5


def recall(centre, seed, width=1.5):
    rng = np.random.default_rng(seed)
    return 0.25 + 0.7 / (1 + np.exp(-(T - centre) / width)) + rng.normal(0, 0.01, T.size)


def staged_run(extra=None):
    curves = {name: (T, recall(c, seed)) for seed, (name, c) in enumerate(STAGED.items())} | (extra or {})
    overall = np.mean([y for _, y in curves.values() if y.size == T.size], axis=0)  # equal class shares
    weights = dict.fromkeys(curves, 1.0)
    return curves, weights, lld.select(T, overall, max_components=3)


def test_three_classes_learned_at_staged_epochs_each_make_their_component():
    curves, weights, overall = staged_run()
    assert overall.n == 3
    a = attribution.attribute(overall, curves, weights, max_components=3)
    assert a.members == [["early"], ["middle"], ["late"]]
    for name, centre in STAGED.items():
        assert a.selections[name].n >= 1
        assert a.main[name]["center"] == pytest.approx(centre, abs=0.5)
    assert a.unattributed == [] and a.r2 > 0.99 and a.identity_r2 == pytest.approx(1.0)


def test_a_class_never_learned_has_no_process_and_makes_none():
    flat = (T, np.random.default_rng(9).binomial(100, 0.25, T.size) / 100)
    curves, weights, overall = staged_run({"never": flat})
    a = attribution.attribute(overall, curves, weights, max_components=3)
    assert a.selections["never"].n == 0 and a.main["never"] is None
    assert a.component_of("never") is None and "never" not in a.unattributed
    assert a.r2 > 0.98


def test_assign_takes_the_nearest_component_within_two_widths():
    comps = [{"center": 10.0, "width": 1.0}, {"center": 14.0, "width": 3.0}]
    assert attribution.assign({"center": 11.5, "width": 0.5}, comps) == 0
    assert attribution.assign({"center": 12.5, "width": 0.5}, comps) == 1
    assert attribution.assign({"center": 30.0, "width": 2.0}, comps) is None
    assert attribution.assign({"center": 16.0, "width": 4.0}, comps[:1]) == 0  # the class's own width counts


def test_a_failed_class_fit_gives_a_nan_r2():
    curves, weights, overall = staged_run({"short": (T[:3], recall(10.0, 5)[:3])})
    a = attribution.attribute(overall, curves, weights)
    assert not a.selections["short"].best.success and np.isnan(a.r2)
    with pytest.raises(ValueError, match="positive weights"):
        attribution.attribute(overall, curves, dict.fromkeys(curves, 0.0))
