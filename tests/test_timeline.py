"""Known answers for the PCA timeline, class emergence and change-point detection."""

import numpy as np
import pytest
from sklearn.metrics import silhouette_samples

from dsc.core.timeline import change_point, class_emergence, pca_timeline


def planted(rng, n=400, p=30, sd=(5.0, 2.0), noise=0.1):
    """Activations with two planted orthogonal directions of known sd, plus small noise."""
    q, _ = np.linalg.qr(rng.normal(size=(p, len(sd))))
    z = rng.normal(size=(n, len(sd))) * sd
    z = (z - z.mean(0)) / z.std(0, ddof=1) * sd  # exact sample sd, for an exact variance
    return z @ q.T + noise * rng.normal(size=(n, p)), z


def test_pca_timeline_planted_variance():
    rng = np.random.default_rng(0)
    acts = [planted(rng)[0] for _ in range(3)]
    tl = pca_timeline(acts, n_components=4)
    assert tl.explained_variance.shape == (3, 4) and tl.projections.shape == (3, 400, 2)
    np.testing.assert_allclose(tl.explained_variance[:, :2], [[25.0, 4.0]] * 3, rtol=0.02)
    np.testing.assert_allclose(tl.total_variance, 25 + 4 + 30 * 0.01, rtol=0.03)
    np.testing.assert_allclose(tl.explained_variance_ratio[:, 0], 25 / (29.3), rtol=0.03)


def test_pca_timeline_undoes_sign_flips():
    rng = np.random.default_rng(1)
    x, _ = planted(rng)
    # The same representation, mirrored on alternate epochs: the scores must not mirror.
    tl = pca_timeline([x, -x, x, -x])
    for e in range(1, 4):
        np.testing.assert_allclose(tl.projections[e], tl.projections[0], atol=1e-8)


def test_pca_timeline_constant_layer_and_narrow_layer():
    rng = np.random.default_rng(2)
    dead = np.zeros((50, 8), dtype=np.float16)  # all ReLUs dead at epoch 0
    narrow = rng.normal(size=(50, 3))  # p = 3 < k = 10
    tl = pca_timeline([dead, narrow, dead])
    assert tl.total_variance[0] == 0 and np.isnan(tl.explained_variance_ratio[0]).all()
    assert np.all(tl.projections[0] == 0) and np.all(tl.explained_variance[0] == 0)
    np.testing.assert_allclose(tl.explained_variance_ratio[1, :3].sum(), 1.0)
    assert np.all(tl.explained_variance[1, 3:] == 0)


def emerging(onsets, n_epochs=30, per_class=40, p=64, shift=12.0, seed=0):
    """Class c's mean jumps away from the rest from epoch onsets[c] on (None: never)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(onsets)), per_class)
    directions = np.linalg.qr(rng.normal(size=(p, len(onsets))))[0].T * shift  # (C, p)
    acts = []
    for e in range(n_epochs):
        x = rng.normal(size=(len(labels), p))
        for c, onset in enumerate(onsets):
            if onset is not None and e >= onset:
                x[labels == c] += directions[c]
        acts.append(np.maximum(x, 0).astype(np.float16))  # ReLU, stored like snapshots
    return acts, labels


@pytest.mark.slow
def test_class_emergence_known_onsets():
    acts, labels = emerging([8, 15, None, None])
    em = class_emergence(acts, labels)
    assert em.scores.shape == (30, 4)
    assert abs(em.epochs[0] - 8) <= 1 and abs(em.epochs[1] - 15) <= 1
    assert em.epochs[2] is None and em.epochs[3] is None
    assert em.order[:2] == [0, 1]


def test_class_emergence_in_snapshot_epoch_units_and_from_timeline():
    acts, labels = emerging([8, 15, None, None], n_epochs=30)
    every2 = dict(epochs=range(0, 30, 2), patience=2)
    em = class_emergence(acts[::2], labels, **every2)
    assert em.epochs == {0: 8, 1: 16, 2: None, 3: None} and em.order == [0, 1, 2, 3]
    reused = class_emergence(pca_timeline(acts[::2]), labels, **every2)
    np.testing.assert_allclose(reused.scores, em.scores, atol=1e-6)


def test_class_emergence_score_is_per_class_silhouette():
    acts, labels = emerging([0, None, None], n_epochs=1, p=8)
    em = class_emergence(acts, labels, n_components=8, patience=1)
    s = silhouette_samples(acts[0].astype(np.float64) - acts[0].mean(0, dtype=np.float64), labels)
    np.testing.assert_allclose(em.scores[0], [s[labels == c].mean() for c in range(3)], atol=1e-3)


@pytest.mark.parametrize("bad", [dict(threshold=1.5), dict(patience=0)])
def test_class_emergence_rejects_bad_criterion(bad):
    acts, labels = emerging([None, None], n_epochs=2, p=4)
    with pytest.raises(ValueError, match=r"threshold|patience"):
        class_emergence(acts, labels, **bad)


T = np.arange(60.0)
RISES = {
    "ramp": np.where(T <= 20, 0.2, np.minimum(0.2 + (T - 20) * 0.77 / 15, 0.97)),
    "saturating": np.where(T <= 20, 0.2, 0.97 - 0.77 * np.exp(-(T - 20) / 4)),
    "jump": np.where(T <= 20, 0.2, 0.97),
}


@pytest.mark.parametrize("shape", list(RISES))
@pytest.mark.parametrize("noise", [0.0, 0.02])
def test_change_point_flat_then_rise(shape, noise):
    y = RISES[shape] + np.random.default_rng(3).normal(0, noise, len(T))
    cp = change_point(y)
    assert abs(cp.epoch - 20) <= 2, cp


def test_change_point_falling_loss_and_epoch_units():
    loss = np.where(T <= 20, 1.6, 0.1 + 1.5 * np.exp(-(T - 20) / 5))[::2]
    assert abs(change_point(loss, epochs=T[::2].astype(int), decreasing=True).epoch - 20) <= 2
    assert change_point(loss).epoch is None  # read as an accuracy, it never rises


@pytest.mark.parametrize("noise", [0.0, 0.02])
def test_change_point_flat_curve_is_none(noise):
    y = 0.2 + np.random.default_rng(4).normal(0, noise, 60)
    assert change_point(y).epoch is None


@pytest.mark.parametrize("method", ["knee", "pelt"])
def test_change_point_rejects_unknown_method(method):
    with pytest.raises(ValueError, match="unknown method"):
        change_point(RISES["ramp"], method=method)


@pytest.mark.parametrize("sd", [0.01, 0.05])
def test_change_point_noise_is_the_epoch_noise_sd(sd):
    y = RISES["jump"] + np.random.default_rng(6).normal(0, sd, len(T))
    assert change_point(y).noise == pytest.approx(sd, rel=0.3)
