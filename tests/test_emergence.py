"""Known answers for class emergence by behaviour and by representation (dsc.core.emergence)."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from dsc.core import emergence

CLASSES = ["a", "b", "c", "d"]
STARTS = {0: 6, 1: 10}  # class a separates from epoch 6 on, b from 10; c and d stay mixed
EPOCHS = np.arange(21)


def planted_acts(seed=0, per_class=40, width=64):
    """(E, n, width) activations in which class c moves away along its own unit from STARTS[c] on."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(CLASSES)), per_class)
    acts = rng.standard_normal((EPOCHS.size, labels.size, width))
    for c, start in STARTS.items():
        acts[start:, labels == c, c] += 6.0
    return acts.astype(np.float16), labels


def planted_recall(seed=0):
    """Validation recall per class: chance (1/4) until the class separates, then 0.97."""
    rng = np.random.default_rng(seed)
    out = {}
    for c, name in enumerate(CLASSES):
        start = STARTS.get(c)
        y = np.full(EPOCHS.size, 0.25) if start is None else np.where(start <= EPOCHS, 0.97, 0.25)
        out[name] = (EPOCHS, y + rng.normal(0, 0.02, EPOCHS.size))
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_a_class_separating_from_epoch_k_is_found_at_k_by_both_criteria(seed):
    beh = emergence.behavioural_emergence(planted_recall(seed), CLASSES)
    acts, labels = planted_acts(seed)
    scores = emergence.probe_scores(acts, labels, len(CLASSES), n_components=16)
    rep = emergence.representational_emergence("fc", EPOCHS, scores, CLASSES)
    for c, start in STARTS.items():
        assert beh.epochs[CLASSES[c]] == start
        assert rep.emergence[CLASSES[c]] == start
    # c and d are never learned, and never apart from each other in the layer
    assert beh.epochs["c"] is None and "never learned" in beh.notes["c"]
    assert rep.emergence["c"] is None and rep.emergence["d"] is None
    assert scores[-1, 0] > 0.99 and abs(scores[-1, 2] - 0.5) < 0.15


def test_behavioural_level_is_halfway_from_chance_to_the_final_value():
    t = np.arange(10)
    y = np.array([0.5, 0.5, 0.6, 0.8, 0.9, 0.7, 0.9, 0.9, 0.95, 0.9])
    beh = emergence.behavioural_emergence({"a": (t, y)}, ["a", "b"], patience=3)
    assert beh.chance == 0.5 and beh.level["a"] == pytest.approx(0.7)
    assert beh.epochs["a"] == 6  # 0.8, 0.9 then 0.7 (not above): the run of three starts at 6
    assert beh.epochs["b"] is None and beh.notes["b"] == "no validation recall curve"
    assert emergence.behavioural_emergence({"a": (t, y)}, ["a", "b"], patience=1).epochs["a"] == 3


def test_a_class_learned_only_at_the_end_still_gets_an_epoch():
    t = np.arange(12)
    y = np.r_[np.full(10, 0.2), 0.95, 0.97]  # above the level for two epochs, then the run ends
    assert emergence.behavioural_emergence({"a": (t, y)}, list("abcde")).epochs["a"] == 10


def test_first_sustained_counts_a_window_cut_by_the_end():
    above = np.array([[1, 0, 0], [0, 0, 0], [1, 0, 1], [1, 1, 1]], dtype=bool)
    np.testing.assert_array_equal(emergence.first_sustained(above, 2), [2, 3, 2])
    np.testing.assert_array_equal(emergence.first_sustained(above[:2], 5), [-1, -1, -1])


def test_pairwise_auc_agrees_with_scikit_learn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 90)
    decision = rng.standard_normal((90, 3)) + 0.8 * np.eye(3)[labels]
    decision[:5] = 0.0  # ties count one half
    got = emergence.pairwise_auc(decision, labels, 3)
    for c in range(3):
        ref = min(
            roc_auc_score(labels[np.isin(labels, [c, d])] == c, decision[np.isin(labels, [c, d]), c])
            for d in range(3)
            if d != c
        )
        assert got[c] == pytest.approx(ref)


def test_a_probe_missing_a_class_gives_nan_for_it_only():
    acts, labels = planted_acts()
    keep = labels != 1
    scores = emergence.probe_scores(acts[:, keep], labels[keep], len(CLASSES), n_components=16)
    assert np.isnan(scores[:, 1]).all() and np.isfinite(scores[:, [0, 2, 3]]).all()
    rep = emergence.representational_emergence("fc", EPOCHS, scores, CLASSES)
    assert rep.emergence["b"] is None and rep.emergence["a"] == STARTS[0]


def test_one_class_and_constant_layers():
    acts, labels = planted_acts()
    one = labels == 0
    assert np.isnan(emergence.probe_scores(acts[:, one], labels[one], 1)).all()
    with pytest.raises(ValueError, match="at least 2 classes"):
        emergence.behavioural_emergence({"a": (EPOCHS, EPOCHS * 0.0)}, ["a"])
    flat = emergence.probe_scores(np.zeros((2, labels.size, 8)), labels, len(CLASSES))
    assert (flat == 0.5).all()


@pytest.mark.parametrize(("kwargs", "match"), [({"gain": 0.0}, "gain must be in"), ({"gain": 1.5}, "gain")])
def test_bad_rule_settings_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        emergence.representational_emergence("fc", EPOCHS, np.zeros((EPOCHS.size, 2)), ["a", "b"], **kwargs)
    with pytest.raises(ValueError, match="patience must be an int >= 1"):
        emergence.behavioural_emergence({}, ["a", "b"], patience=0)
