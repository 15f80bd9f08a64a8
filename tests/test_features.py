"""Array helpers of the run analysis, on inputs whose answer is known."""

import numpy as np
import pytest

from dsc.core.analysis_helpers import (
    cka_by_distance,
    leading_feature,
    near_layers_summary,
    pick_esd_epochs,
    series_at,
    stratified_subset,
)
from dsc.errors import ConfigError


def test_series_at_reads_the_epochs_and_nan_where_missing():
    out = series_at(np.array([0, 2, 4]), np.array([0.1, 0.2, 0.3]), [4, 0, 3])
    np.testing.assert_array_equal(out, [0.3, 0.1, np.nan])


def test_leading_feature_picks_the_planted_unit():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 30)
    acts = rng.standard_normal((90, 8))
    acts[labels == 2, 5] += 3
    assert leading_feature(acts, labels, 2)[0] == 5
    assert leading_feature(np.zeros((90, 8)), labels, 2)[0] is None


def test_cka_by_distance_and_near_layers():
    cka = np.array([[1, 0.9, 0.6, 0.3], [0.9, 1, 0.8, 0.5], [0.6, 0.8, 1, 0.7], [0.3, 0.5, 0.7, 1]])
    d, mean = cka_by_distance(cka)
    np.testing.assert_allclose(mean, [0.8, 0.55, 0.3])
    assert d.tolist() == [1, 2, 3]
    assert near_layers_summary(cka)["near_more_alike"] is True
    far_alike = 1.3 - cka + np.eye(4) * 0.6  # similarity that grows with distance
    assert near_layers_summary(far_alike)["near_more_alike"] is False


def test_pick_esd_epochs():
    epochs = list(range(0, 61, 2))
    assert pick_esd_epochs(epochs, (), 23) == [0, 22, 60]  # nearest snapshot, the earlier on a tie
    assert pick_esd_epochs(epochs, (60, 0, 60), None) == [60, 0]
    assert pick_esd_epochs(epochs, (), None) == [0, 60]
    with pytest.raises(ConfigError, match="no snapshot at epoch"):
        pick_esd_epochs(epochs, (3,), None)


def test_stratified_subset_keeps_class_shares():
    labels = np.repeat([0, 1, 2, 3], 100)
    idx = stratified_subset(np.arange(400), labels, 40, seed=0)
    assert len(idx) == 40 and np.bincount(labels[idx]).tolist() == [10, 10, 10, 10]
    assert len(stratified_subset(np.arange(10), labels, 40, seed=0)) == 10
