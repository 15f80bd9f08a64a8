"""The order the data predicts: planted input-output modes learned by a deep linear network."""

import numpy as np
import pytest

from dsc.core import saxe

STRENGTHS = np.array([3.0, 2.4, 1.8, 1.4])


def _planted(n=400, d=10, seed=0):
    """Whitened inputs (n, d) and targets (n, C) whose correlation has the modes STRENGTHS."""
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((n, d))
    x = np.linalg.qr(g - g.mean(axis=0))[0] * np.sqrt(n)  # centred, Sigma_xx = I
    u = np.linalg.qr(rng.standard_normal((len(STRENGTHS), len(STRENGTHS))))[0]
    v = np.linalg.qr(rng.standard_normal((d, len(STRENGTHS))))[0]
    return x, x @ v @ np.diag(STRENGTHS) @ u.T


def _train_deep_linear(x, y, hidden=16, steps=700, lr=0.01, scale=1e-3, every=5, seed=1):
    """Full-batch gradient descent on 1/2 ||Y - X W1^T W2^T||^2 / n from small weights; outputs (E, n, C)."""
    rng = np.random.default_rng(seed)
    w1 = scale * rng.standard_normal((hidden, x.shape[1]))
    w2 = scale * rng.standard_normal((y.shape[1], hidden))
    sigma = y.T @ x / len(x)  # Sigma_xx = I
    outputs = []
    for step in range(steps):
        if step % every == 0:
            outputs.append(x @ (w2 @ w1).T)
        err = sigma - w2 @ w1
        w1, w2 = w1 + lr * w2.T @ err, w2 + lr * err @ w1.T
    return np.arange(0, steps, every, dtype=float), np.stack(outputs)


def test_planted_modes_are_recovered():
    x, y = _planted()
    modes = saxe.io_modes(x, y)
    assert modes.strengths == pytest.approx(STRENGTHS, rel=1e-9)
    assert modes.u.shape == (4, 4) and modes.v.shape == (10, 4)


def test_deep_linear_network_learns_stronger_modes_first_at_times_1_over_s():
    x, y = _planted()
    modes = saxe.io_modes(x, y)
    t, outputs = _train_deep_linear(x, y)
    a = saxe.network_strengths(outputs, x, modes)
    assert a[-1] == pytest.approx(STRENGTHS, rel=0.02)  # every mode learned to its strength
    times = saxe.mode_times(t, a)
    assert np.isfinite(times).all()
    assert saxe.spearman(times, 1 / modes.strengths) == pytest.approx(1.0)
    products = times * modes.strengths
    assert products.max() / products.min() < 1.25  # t_k s_k nearly constant


def test_predicted_times_weight_each_mode_by_the_strength_it_carries():
    modes = saxe.Modes(np.array([4.0, 1.0]), np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]), np.eye(3, 2))
    times = saxe.predicted_times(modes)
    assert times[:2] == pytest.approx([0.25, 1.0])
    w = (0.6 * 4) ** 2 / ((0.6 * 4) ** 2 + 0.8**2)
    assert times[2] == pytest.approx(w / 4 + (1 - w) / 1)


def test_separability_ranks_the_class_that_stands_apart_first():
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1, 2], 60)
    x = rng.standard_normal((180, 50))
    x[:, 0] += np.array([6.0, 0.6, 0.0])[labels]  # class 0 far apart, 1 and 2 overlap
    score = saxe.separability(x, labels, 3, n_components=10)
    assert score[0] > score[1] and score[0] > score[2]


def test_one_hot_modes_have_rank_below_the_class_count():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 4, 200)
    x = rng.standard_normal((200, 30)) + labels[:, None]
    for dtype in (np.float64, np.float32):  # images come as float32: rounding must not add a mode
        assert len(saxe.io_modes(x.astype(dtype), saxe.one_hot(labels, 4)).strengths) == 3


def test_spearman_needs_three_finite_pairs():
    assert np.isnan(saxe.spearman([1.0, 2.0, np.nan], [3.0, 4.0, 5.0]))
    assert saxe.spearman([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
